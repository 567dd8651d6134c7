// The editor's colours: a dark highlight style matching style.css (CodeMirror's default one is
// made for light backgrounds and leaves names dark blue on dark blue).

import { HighlightStyle } from "@codemirror/language";
import { tags as t } from "@lezer/highlight";

export const spikeHighlight = HighlightStyle.define([
  { tag: [t.keyword, t.controlKeyword, t.moduleKeyword, t.operatorKeyword], color: "#c792ea" },
  { tag: [t.definitionKeyword, t.modifier], color: "#c792ea" },
  { tag: [t.string, t.special(t.string), t.regexp], color: "#c3e88d" },
  { tag: [t.number, t.bool, t.null, t.atom], color: "#f78c6c" },
  { tag: [t.comment, t.lineComment, t.blockComment], color: "#64748b", fontStyle: "italic" },
  { tag: [t.typeName, t.className, t.namespace], color: "#ffcb6b" },
  { tag: [t.function(t.variableName), t.function(t.propertyName)], color: "#82aaff" },
  { tag: [t.definition(t.variableName), t.definition(t.propertyName)], color: "#e2e8f0" },
  { tag: [t.variableName, t.propertyName], color: "#e2e8f0" },
  { tag: [t.tagName], color: "#f07178" },
  { tag: [t.attributeName], color: "#ffcb6b" },
  { tag: [t.angleBracket, t.bracket, t.punctuation, t.separator], color: "#94a3b8" },
  { tag: [t.operator], color: "#89ddff" },
  { tag: t.invalid, color: "#f87171" },
]);
