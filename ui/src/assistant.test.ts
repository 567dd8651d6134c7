import { describe, expect, it } from "vitest";

import { diffLines } from "./assistant";

describe("diffLines", () => {
  it("classifies a unified diff's lines by their first character", () => {
    const diff = "--- a/App.tsx\n+++ b/App.tsx\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n";
    expect(diffLines(diff)).toEqual([
      { text: "--- a/App.tsx", kind: "head" },
      { text: "+++ b/App.tsx", kind: "head" },
      { text: "@@ -1,2 +1,2 @@", kind: "hunk" },
      { text: " a", kind: "same" },
      { text: "-b", kind: "del" },
      { text: "+c", kind: "add" },
    ]);
  });
});
