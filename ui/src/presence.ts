// Collaborators' cursors and selections in the editor: a state field of decorations set from the
// shell's `peers` events, mapped through local edits until the next event corrects them.

import { type Extension, RangeSetBuilder, StateEffect, StateField } from "@codemirror/state";
import { Decoration, type DecorationSet, EditorView, WidgetType } from "@codemirror/view";

/** One remote cursor in this file: UTF-16 offsets. */
export interface RemoteCursor {
  id: number;
  name: string;
  color: string;
  anchor: number;
  head: number;
}

/** Replaces the remote cursors shown in a view. */
export const setRemoteCursors = StateEffect.define<RemoteCursor[]>();

class CaretWidget extends WidgetType {
  constructor(
    readonly name: string,
    readonly color: string,
  ) {
    super();
  }
  override eq(other: CaretWidget): boolean {
    return other.name === this.name && other.color === this.color;
  }
  toDOM(): HTMLElement {
    const caret = document.createElement("span");
    caret.className = "cm-remote-caret";
    caret.style.borderLeftColor = this.color;
    const label = document.createElement("span");
    label.className = "cm-remote-name";
    label.style.background = this.color;
    label.textContent = this.name;
    caret.append(label);
    return caret;
  }
  override ignoreEvent(): boolean {
    return true;
  }
}

function build(cursors: RemoteCursor[], length: number): DecorationSet {
  const items: { from: number; to: number; deco: Decoration }[] = [];
  for (const c of cursors) {
    const head = Math.min(Math.max(0, c.head), length);
    const anchor = Math.min(Math.max(0, c.anchor), length);
    const [from, to] = anchor < head ? [anchor, head] : [head, anchor];
    if (from < to) {
      items.push({
        from,
        to,
        deco: Decoration.mark({ class: "cm-remote-selection", attributes: { style: `background: ${c.color}33` } }),
      });
    }
    items.push({ from: head, to: head, deco: Decoration.widget({ widget: new CaretWidget(c.name, c.color), side: 1 }) });
  }
  items.sort((a, b) => a.from - b.from || a.to - b.to);
  const builder = new RangeSetBuilder<Decoration>();
  for (const i of items) builder.add(i.from, i.to, i.deco);
  return builder.finish();
}

/** The extension: remote carets with name labels and tinted selections. */
export function remoteCursors(): Extension {
  return StateField.define<DecorationSet>({
    create: () => Decoration.none,
    update(value, tr) {
      let next = value.map(tr.changes);
      for (const e of tr.effects) {
        if (e.is(setRemoteCursors)) next = build(e.value, tr.state.doc.length);
      }
      return next;
    },
    provide: (f) => EditorView.decorations.from(f),
  });
}
