// The assistant panel: a question about the open file, the answer streamed in, and proposed
// edits shown as diffs to accept (applied to the room as this person's edits) or reject.

import type { Shell } from "./shell";
import { type AiEvent, isDesktopError, type Proposal } from "./types";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from index.html`);
  return el as T;
};

const message = (e: unknown) => (isDesktopError(e) ? e.message : String(e));

/** A unified diff as lines, each with the class its first character calls for. */
export function diffLines(diff: string): { text: string; kind: "add" | "del" | "hunk" | "head" | "same" }[] {
  return diff
    .split("\n")
    .filter((line, i, all) => !(line === "" && i === all.length - 1))
    .map((text) => {
      if (text.startsWith("+++") || text.startsWith("---")) return { text, kind: "head" as const };
      if (text.startsWith("@@")) return { text, kind: "hunk" as const };
      if (text.startsWith("+")) return { text, kind: "add" as const };
      if (text.startsWith("-")) return { text, kind: "del" as const };
      return { text, kind: "same" as const };
    });
}

export function bindAssistant(shell: Shell, activeFile: () => string | null): void {
  const form = $<HTMLFormElement>("ai-form");
  const prompt = $<HTMLTextAreaElement>("ai-prompt");
  const answer = $("ai-answer");
  const proposals = $("ai-proposals");
  const ask = $<HTMLButtonElement>("ai-ask");
  const stop = $<HTMLButtonElement>("ai-stop");
  const error = $("ai-error");
  let running: number | null = null;

  const showError = (e: unknown | null) => {
    error.hidden = e === null;
    error.textContent = e === null ? "" : message(e);
  };
  const busy = (on: boolean) => {
    ask.disabled = on;
    stop.hidden = !on;
    document.documentElement.dataset.aiBusy = String(on);
  };

  const renderProposal = (p: Proposal) => {
    const box = document.createElement("section");
    box.className = "ai-proposal";
    box.dataset.proposal = String(p.id);
    for (const file of p.files) {
      const title = document.createElement("h3");
      title.textContent = `${file.created ? "New file" : "Change"} ${file.path}`;
      const pre = document.createElement("pre");
      pre.className = "ai-diff";
      for (const line of diffLines(file.diff)) {
        const span = document.createElement("span");
        span.className = `diff-${line.kind}`;
        span.textContent = `${line.text}\n`;
        pre.append(span);
      }
      box.append(title, pre);
    }
    const actions = document.createElement("div");
    actions.className = "ai-actions";
    const accept = document.createElement("button");
    accept.type = "button";
    accept.className = "ai-accept";
    accept.textContent = "Accept";
    const reject = document.createElement("button");
    reject.type = "button";
    reject.className = "ai-reject";
    reject.textContent = "Reject";
    const state = document.createElement("span");
    state.className = "ai-state";
    accept.addEventListener("click", async () => {
      try {
        const files = await shell.aiApply(p.id);
        state.textContent = `Applied to ${files.join(", ")}`;
        accept.disabled = reject.disabled = true;
        box.dataset.state = "applied";
      } catch (e) {
        state.textContent = message(e);
        box.dataset.state = "failed";
      }
    });
    reject.addEventListener("click", async () => {
      await shell.aiReject(p.id).catch(() => false);
      state.textContent = "Rejected";
      accept.disabled = reject.disabled = true;
      box.dataset.state = "rejected";
    });
    actions.append(accept, reject, state);
    box.append(actions);
    proposals.append(box);
  };

  const onEvent = (e: AiEvent) => {
    switch (e.type) {
      case "text":
        answer.textContent += e.delta;
        break;
      case "reading": {
        const note = document.createElement("div");
        note.className = "ai-reading";
        note.textContent = `read ${e.path}`;
        proposals.append(note);
        break;
      }
      case "proposal":
        renderProposal(e.proposal);
        break;
      case "done":
        running = null;
        busy(false);
        answer.dataset.stop = e.stop;
        break;
      case "error":
        running = null;
        busy(false);
        showError(e.message);
        break;
    }
  };

  const submit = async () => {
    const question = prompt.value.trim();
    if (!question || running !== null) return;
    showError(null);
    answer.textContent = "";
    delete answer.dataset.stop;
    proposals.replaceChildren();
    busy(true);
    try {
      running = await shell.aiAsk(question, activeFile(), onEvent);
    } catch (e) {
      busy(false);
      showError(e);
    }
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void submit();
  });
  prompt.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      void submit();
    }
  });
  stop.addEventListener("click", () => {
    if (running !== null) void shell.aiStop(running);
  });
}
