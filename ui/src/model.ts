// Pure helpers of the editor: positions, the file tree and presence selections. No DOM, no IPC
// (unit-tested).

import * as Y from "yjs";

import type { Diagnostic, Selection } from "./types";

/**
 * The UTF-16 offset (CodeMirror's and Yjs's unit) of a 1-based line and a 1-based column
 * counted in characters (spike-transpile's unit), clamped to the text.
 */
export function offsetOf(text: string, line: number, column: number): number {
  let offset = 0;
  for (let l = 1; l < line; l++) {
    const nl = text.indexOf("\n", offset);
    if (nl < 0) return text.length;
    offset = nl + 1;
  }
  const end = text.indexOf("\n", offset);
  const lineEnd = end < 0 ? text.length : end;
  let chars = 1;
  while (chars < column && offset < lineEnd) {
    const code = text.charCodeAt(offset);
    offset += code >= 0xd800 && code <= 0xdbff && offset + 1 < lineEnd ? 2 : 1;
    chars++;
  }
  return offset;
}

/** The range a diagnostic underlines: from its position to the end of the word there (at least one unit). */
export function rangeOf(text: string, d: Diagnostic): { from: number; to: number } {
  const from = offsetOf(text, d.line, d.column);
  let to = from;
  while (to < text.length && /[\w$]/.test(text[to] ?? "")) to++;
  if (to === from) to = Math.min(text.length, from + 1);
  return { from, to: Math.max(from, to) };
}

/** A folder or a file of the tree. */
export type TreeNode =
  | { kind: "folder"; name: string; path: string; children: TreeNode[] }
  | { kind: "file"; name: string; path: string };

/** Builds the tree of `paths` (`/`-separated): folders first, then files, each sorted by name. */
export function buildTree(paths: Iterable<string>): TreeNode[] {
  const root: TreeNode[] = [];
  for (const path of paths) {
    const parts = path.split("/");
    let level = root;
    let prefix = "";
    for (const [i, name] of parts.entries()) {
      prefix = prefix ? `${prefix}/${name}` : name;
      if (i === parts.length - 1) {
        level.push({ kind: "file", name, path });
      } else {
        let folder = level.find((n) => n.kind === "folder" && n.name === name);
        if (!folder) {
          folder = { kind: "folder", name, path: prefix, children: [] };
          level.push(folder);
        }
        level = (folder as Extract<TreeNode, { kind: "folder" }>).children;
      }
    }
  }
  const sort = (nodes: TreeNode[]): TreeNode[] => {
    nodes.sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === "folder" ? -1 : 1));
    for (const n of nodes) if (n.kind === "folder") sort(n.children);
    return nodes;
  };
  return sort(root);
}

/** The CodeMirror language flavour of a file, by extension. */
export function languageOf(path: string): { jsx: boolean; typescript: boolean } | null {
  const m = /\.(tsx|ts|mts|cts|jsx|js|mjs|cjs)$/.exec(path);
  if (!m) return null;
  const ext = m[1] ?? "";
  return { jsx: ext === "tsx" || ext === "jsx", typescript: ["tsx", "ts", "mts", "cts"].includes(ext) };
}

/** A selection in `ytext` as Yjs relative positions (what presence carries). */
export function relativeSelection(ytext: Y.Text, anchor: number, head: number): Selection {
  const at = (index: number) => Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(ytext, index));
  return { anchor: at(anchor), head: at(head) };
}

/**
 * Where a peer's selection is in `ytext` now, as offsets; null when a position belongs to
 * another text or to content this replica has not received yet.
 */
export function resolveSelection(
  ytext: Y.Text,
  sel: Selection,
): { anchor: number; head: number } | null {
  const doc = ytext.doc;
  if (!doc) return null;
  const at = (json: unknown) => {
    const abs = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(json), doc);
    return abs && abs.type === ytext ? abs.index : null;
  };
  const anchor = at(sel.anchor);
  const head = at(sel.head);
  return anchor === null || head === null ? null : { anchor, head };
}
