// One CodeMirror 6 view per open file, bound to the file's Y.Text with y-codemirror.next.

import { autocompletion, closeBrackets, closeBracketsKeymap, completionKeymap } from "@codemirror/autocomplete";
import { defaultKeymap, indentWithTab } from "@codemirror/commands";
import { javascript } from "@codemirror/lang-javascript";
import {
  bracketMatching,
  foldGutter,
  foldKeymap,
  indentOnInput,
  syntaxHighlighting,
} from "@codemirror/language";
import { type Diagnostic as CmDiagnostic, lintGutter, setDiagnostics } from "@codemirror/lint";
import { highlightSelectionMatches, search, searchKeymap } from "@codemirror/search";
import { Compartment, EditorState, type Extension, Transaction } from "@codemirror/state";
import {
  crosshairCursor,
  drawSelection,
  dropCursor,
  EditorView,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
  rectangularSelection,
} from "@codemirror/view";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";
import * as Y from "yjs";

import { languageOf, rangeOf } from "./model";
import { remoteCursors } from "./presence";
import { spikeHighlight } from "./theme";
import type { Diagnostic } from "./types";

export interface EditorOptions {
  /** Ctrl/Cmd+S. */
  onSave: () => void;
  /** The selection moved or the view gained focus: anchor and head, UTF-16 offsets. */
  onCursor: (anchor: number, head: number) => void;
  /** This user typed, deleted, pasted or undid something (not a collaborator's edit). */
  onLocalEdit?: () => void;
  /** The room is view-only: show it, let the user select and copy, but never change it. */
  readOnly?: boolean;
}

/** Holds each view's read-only setting, so a room's role can change it later. */
const readOnlyMode = new Compartment();

const readOnlyExtension = (readOnly: boolean): Extension => [
  EditorState.readOnly.of(readOnly),
  EditorView.editable.of(!readOnly),
];

/** Makes `view` read-only (a view-only room) or editable again. */
export function setReadOnly(view: EditorView, readOnly: boolean): void {
  view.dispatch({ effects: readOnlyMode.reconfigure(readOnlyExtension(readOnly)) });
}

/** A CodeMirror view showing `ytext`, with undo/redo limited to this user's own edits. */
export function createEditor(path: string, ytext: Y.Text, parent: HTMLElement, options: EditorOptions): EditorView {
  const lang = languageOf(path);
  // Tracks only the y-codemirror sync plugin's origin: edits from the shell (a format, a
  // collaborator) are never undone by this user's Ctrl+Z.
  const undoManager = new Y.UndoManager(ytext);
  const extensions: Extension[] = [
    lineNumbers(),
    highlightActiveLineGutter(),
    highlightSpecialChars(),
    foldGutter(),
    drawSelection(),
    dropCursor(),
    EditorState.allowMultipleSelections.of(true),
    indentOnInput(),
    syntaxHighlighting(spikeHighlight),
    bracketMatching(),
    closeBrackets(),
    autocompletion(),
    rectangularSelection(),
    crosshairCursor(),
    highlightActiveLine(),
    highlightSelectionMatches(),
    search({ top: true }),
    lintGutter(),
    keymap.of([
      {
        key: "Mod-s",
        preventDefault: true,
        run: () => {
          options.onSave();
          return true;
        },
      },
      ...yUndoManagerKeymap,
      ...closeBracketsKeymap,
      ...defaultKeymap,
      ...searchKeymap,
      ...foldKeymap,
      ...completionKeymap,
      indentWithTab,
    ]),
    yCollab(ytext, null, { undoManager }),
    remoteCursors(),
    EditorView.updateListener.of((u) => {
      // Presence carries relative positions, which follow edits by themselves: only a moved
      // selection needs publishing.
      if (u.selectionSet || u.focusChanged) {
        const { anchor, head } = u.state.selection.main;
        options.onCursor(anchor, head);
      }
      // Remote edits arrive through y-codemirror without a user event.
      if (u.docChanged && u.transactions.some((t) => t.annotation(Transaction.userEvent) !== undefined)) {
        options.onLocalEdit?.();
      }
    }),
    EditorView.contentAttributes.of({ "data-path": path, spellcheck: "false" }),
    readOnlyMode.of(readOnlyExtension(options.readOnly ?? false)),
  ];
  if (lang) extensions.push(javascript(lang));
  const view = new EditorView({
    state: EditorState.create({ doc: ytext.toString(), extensions }),
    parent,
  });
  return view;
}

/** Shows transpile diagnostics inline (underline + gutter marker + hover message). */
export function showDiagnostics(view: EditorView, diagnostics: Diagnostic[]): void {
  const text = view.state.doc.toString();
  const items: CmDiagnostic[] = diagnostics.map((d) => ({
    ...rangeOf(text, d),
    severity: d.severity,
    message: `${d.message} (${d.line}:${d.column})`,
    source: "spike-transpile",
  }));
  view.dispatch(setDiagnostics(view.state, items));
}
