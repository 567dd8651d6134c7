import { describe, expect, it } from "vitest";

import { buildTree, languageOf, offsetOf, rangeOf } from "./model";

describe("offsetOf", () => {
  it("maps 1-based line and character column to a UTF-16 offset", () => {
    const text = "const a = 1;\nconst b = <div>;\n";
    expect(offsetOf(text, 1, 1)).toBe(0);
    expect(offsetOf(text, 2, 11)).toBe(23);
    expect(text.slice(23, 28)).toBe("<div>");
  });

  it("counts an astral character as one column but two units", () => {
    const text = 'x("👋", y)';
    // Columns: x=1 (=2 "=3 👋=4 "=5 ,=6 space=7 y=8
    expect(offsetOf(text, 1, 8)).toBe(8);
    expect(text[8]).toBe("y");
  });

  it("clamps past the end of a line or the text", () => {
    expect(offsetOf("ab\ncd", 1, 99)).toBe(2);
    expect(offsetOf("ab\ncd", 9, 1)).toBe(5);
  });
});

describe("rangeOf", () => {
  it("underlines the word at the position, or one character", () => {
    const d = { severity: "error", message: "m", file: "a.ts", line: 1, column: 7, source_line: "" } as const;
    expect(rangeOf("const value = 1", d)).toEqual({ from: 6, to: 11 });
    expect(rangeOf("a = ;", { ...d, column: 5 })).toEqual({ from: 4, to: 5 });
  });
});

describe("buildTree", () => {
  it("puts folders first and sorts by name", () => {
    const tree = buildTree(["main.tsx", "components/TodoList.tsx", "App.tsx", "components/Counter.tsx", "lib/format.ts"]);
    expect(tree.map((n) => n.name)).toEqual(["components", "lib", "App.tsx", "main.tsx"]);
    const components = tree[0];
    expect(components?.kind).toBe("folder");
    if (components?.kind === "folder") {
      expect(components.children.map((n) => n.path)).toEqual(["components/Counter.tsx", "components/TodoList.tsx"]);
    }
  });
});

describe("languageOf", () => {
  it("picks TSX, TS, JSX and JS", () => {
    expect(languageOf("App.tsx")).toEqual({ jsx: true, typescript: true });
    expect(languageOf("lib/format.ts")).toEqual({ jsx: false, typescript: true });
    expect(languageOf("a.jsx")).toEqual({ jsx: true, typescript: false });
    expect(languageOf("a.mjs")).toEqual({ jsx: false, typescript: false });
    expect(languageOf("style.css")).toBeNull();
  });
});
