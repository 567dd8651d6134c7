import { describe, expect, it } from "vitest";

import * as Y from "yjs";

import { buildTree, languageOf, offsetOf, rangeOf, relativeSelection, resolveSelection } from "./model";

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

describe("presence selections", () => {
  it("stay on the same characters while another replica edits before them", () => {
    const a = new Y.Doc();
    const b = new Y.Doc();
    a.getMap<Y.Text>("files").set("App.tsx", new Y.Text("hello world"));
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
    const textA = a.getMap<Y.Text>("files").get("App.tsx") as Y.Text;
    const textB = b.getMap<Y.Text>("files").get("App.tsx") as Y.Text;
    // A selects "world"; B types before it concurrently; then they sync.
    const sel = JSON.parse(JSON.stringify(relativeSelection(textA, 6, 11)));
    textB.insert(0, "👋 ");
    Y.applyUpdate(a, Y.encodeStateAsUpdate(b));
    expect(resolveSelection(textB, sel)).toEqual({ anchor: 9, head: 14 });
    expect(resolveSelection(textA, sel)).toEqual({ anchor: 9, head: 14 });
    expect(textB.toString().slice(9, 14)).toBe("world");
  });

  it("do not resolve in another file or before their text arrives", () => {
    const a = new Y.Doc();
    const files = a.getMap<Y.Text>("files");
    files.set("App.tsx", new Y.Text("abc"));
    files.set("Other.tsx", new Y.Text("abcdef"));
    const sel = relativeSelection(files.get("App.tsx") as Y.Text, 1, 2);
    expect(resolveSelection(files.get("Other.tsx") as Y.Text, sel)).toBeNull();
    const c = new Y.Doc();
    c.getMap<Y.Text>("files").set("App.tsx", new Y.Text("abc"));
    expect(resolveSelection(c.getMap<Y.Text>("files").get("App.tsx") as Y.Text, sel)).toBeNull();
  });
});
