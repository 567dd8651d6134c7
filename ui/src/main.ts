// The editor window: file tree, tabs, CodeMirror views bound to the room's Yjs replica, the
// problems list and the preview's console.

import { EditorSelection } from "@codemirror/state";
import { EditorView } from "@codemirror/view";
import * as Y from "yjs";

import { createEditor, setReadOnly, showDiagnostics } from "./editor";
import { buildTree, offsetOf, relativeSelection, resolveSelection, type TreeNode } from "./model";
import { type RemoteCursor, setRemoteCursors } from "./presence";
import { bindAssistant } from "./assistant";
import { bindDiagnostics } from "./diagnostics";
import { bindMirror, bindRoomControls, bindSettings } from "./rooms";
import { Shell, SHELL_ORIGIN } from "./shell";
import { type Diagnostic, isDesktopError, type Peer, type PreviewReport, type Settings, type ShellEvent } from "./types";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from index.html`);
  return el as T;
};

const MAX_CONSOLE_LINES = 500;

class Workbench {
  readonly doc = new Y.Doc();
  readonly files = this.doc.getMap<Y.Text>("files");
  readonly meta = this.doc.getMap<string>("meta");
  shell: Shell | null = null;

  private views = new Map<string, { view: EditorView; host: HTMLElement }>();
  private tabs: string[] = [];
  private active: string | null = null;
  private diagnostics = new Map<string, Diagnostic[]>();
  private consoleCount = 0;
  private peers: Peer[] = [];
  private cursorTimer: ReturnType<typeof setTimeout> | null = null;
  private pendingOpen: string | null = null;
  /** The person whose cursor this window follows across files, if any. */
  private following: number | null = null;
  private settings: Settings | null = null;
  /** The room was opened with a view-only link. */
  private readOnly = false;
  private room = "";
  private onMirrorLine: ((line: string) => void) | null = null;

  async start(): Promise<void> {
    this.bindChrome();
    this.files.observe(() => this.onFilesChanged());
    this.meta.observe(() => this.renderTitle());
    // A peer's cursor may name text that reaches this replica just after their presence did.
    this.doc.on("update", (_u: Uint8Array, origin: unknown) => {
      if (origin === SHELL_ORIGIN && this.peers.length && this.active) this.showPeerCursors(this.active);
    });
    this.shell = await Shell.connect(this.doc, (e) => this.onShellEvent(e));
    this.settings = await this.shell.getSettings();
    bindRoomControls(this.shell);
    this.onMirrorLine = bindMirror(this.shell, () => this.room);
    bindAssistant(this.shell, () => this.active);
    bindDiagnostics(this.shell);
    bindSettings(
      this.shell,
      () => this.settings,
      (s) => (this.settings = s),
    );
    this.renderTitle();
    this.onFilesChanged();
    this.openFirst();
    document.documentElement.dataset.ready = "true";
  }

  // ---- files and tabs -------------------------------------------------------------------------

  /** Opens App.tsx (or the entry, or the first file) when no tab is open. */
  private openFirst(): void {
    if (this.tabs.length) return;
    const entry = this.meta.get("entry");
    const first = ["App.tsx", entry].find((p) => p && this.files.has(p)) ?? [...this.files.keys()].sort()[0];
    if (first) this.open(first);
  }

  open(path: string): void {
    const ytext = this.files.get(path);
    if (!ytext) {
      // Created or renamed through the shell: the update may arrive just after the reply.
      this.pendingOpen = path;
      return;
    }
    this.pendingOpen = null;
    if (!this.tabs.includes(path)) this.tabs.push(path);
    let entry = this.views.get(path);
    if (!entry) {
      const host = document.createElement("div");
      host.className = "editor-host";
      host.dataset.path = path;
      $("editors").append(host);
      const view = createEditor(path, ytext, host, {
        onSave: () => {
          if (this.settings?.formatOnSave !== false) void this.format(path);
        },
        onCursor: (anchor, head) => this.publishCursor(path, anchor, head),
        onLocalEdit: () => this.unfollow(),
        readOnly: this.readOnly,
      });
      entry = { view, host };
      this.views.set(path, entry);
      showDiagnostics(view, this.diagnostics.get(path) ?? []);
      this.showPeerCursors(path);
    }
    this.active = path;
    for (const [p, v] of this.views) v.host.hidden = p !== path;
    this.renderTabs();
    this.renderTree();
    $("empty-editor").hidden = true;
    entry.view.focus();
  }

  close(path: string): void {
    const entry = this.views.get(path);
    entry?.view.destroy();
    entry?.host.remove();
    this.views.delete(path);
    this.tabs = this.tabs.filter((p) => p !== path);
    if (this.active === path) {
      this.active = null;
      const next = this.tabs[this.tabs.length - 1];
      if (next) this.open(next);
    }
    $("empty-editor").hidden = this.tabs.length > 0;
    this.renderTabs();
    this.renderTree();
  }

  private onFilesChanged(): void {
    // A file deleted or renamed elsewhere: its view is bound to a Y.Text that left the map.
    for (const path of [...this.views.keys()]) {
      if (this.files.get(path) === undefined) this.close(path);
    }
    for (const path of [...this.diagnostics.keys()]) {
      if (!this.files.has(path)) this.diagnostics.delete(path);
    }
    this.renderTree();
    this.renderProblems();
    if (this.pendingOpen && this.files.has(this.pendingOpen)) this.open(this.pendingOpen);
    // A room that arrives from the server after start (first join) opens like a local one.
    if (this.shell) this.openFirst();
  }

  private async format(path: string): Promise<void> {
    try {
      await this.shell?.formatFile(path);
    } catch (e) {
      this.reportError(`Format ${path}`, e);
    }
  }

  private reportError(what: string, e: unknown): void {
    const message = isDesktopError(e) ? e.message : String(e);
    this.appendConsole("error", `${what}: ${message}`);
  }

  // ---- shell events -----------------------------------------------------------------------------

  private onShellEvent(e: ShellEvent): void {
    switch (e.type) {
      case "diagnostics": {
        if (e.diagnostics.length) this.diagnostics.set(e.path, e.diagnostics);
        else this.diagnostics.delete(e.path);
        const entry = this.views.get(e.path);
        if (entry) showDiagnostics(entry.view, e.diagnostics);
        this.renderProblems();
        this.renderTree();
        break;
      }
      case "preview":
        this.onPreviewReport(e.report);
        break;
      case "mirror":
        this.onMirrorLine?.(e.line);
        break;
      case "peers":
        this.peers = e.peers;
        for (const path of this.views.keys()) this.showPeerCursors(path);
        this.renderPeople();
        if (this.following !== null) this.goToFollowed();
        break;
      case "status": {
        const badge = $("status");
        if (e.denied) {
          badge.dataset.state = "denied";
          badge.textContent = "access denied";
          badge.title = `The server refused this room: ${e.denied}`;
        } else {
          badge.dataset.state = e.state;
          badge.textContent = e.unconfirmed && e.state === "synced" ? "saving…" : e.state;
          badge.title = `Room ${e.room} on ${e.server}. Edits are saved on this machine first, then synced.`;
        }
        document.documentElement.dataset.room = e.room;
        this.room = e.room;
        if (e.readOnly !== this.readOnly) {
          this.readOnly = e.readOnly;
          document.documentElement.dataset.readOnly = String(e.readOnly);
          $("view-only").hidden = !e.readOnly;
          for (const { view } of this.views.values()) setReadOnly(view, e.readOnly);
        }
        const me = $("me");
        me.textContent = e.user.name;
        me.style.borderColor = e.user.color;
        me.title = "You";
        break;
      }
    }
  }

  private onPreviewReport(r: PreviewReport): void {
    const status = $("preview-status");
    switch (r.type) {
      case "console":
        this.appendConsole(r.level, r.args.join(" "));
        break;
      case "error":
        this.appendConsole("error", r.location ? `${r.message}  (${r.location})` : r.message);
        status.textContent = "preview: runtime error";
        status.dataset.state = "error";
        break;
      case "rendered":
        recordRendered(r);
        if (r.ok) {
          status.textContent = `preview: rendered #${r.generation}`;
          status.dataset.state = "ok";
        }
        break;
    }
  }

  // ---- presence ---------------------------------------------------------------------------------

  private publishCursor(path: string, anchor: number, head: number): void {
    // At most one message per 50 ms; the last position wins. Relative positions keep pointing
    // at the same characters while anyone edits, so peers resolve them against their replica.
    if (this.cursorTimer) clearTimeout(this.cursorTimer);
    this.cursorTimer = setTimeout(() => {
      this.cursorTimer = null;
      const ytext = this.files.get(path);
      if (!ytext) return;
      this.shell?.setCursor(path, relativeSelection(ytext, anchor, head)).catch(() => undefined);
    }, 50);
  }

  /** Where a peer's selection in `path` is now in this replica (null: not resolvable here). */
  private resolve(path: string, sel: Peer["cursors"][string]): { anchor: number; head: number } | null {
    const ytext = this.files.get(path);
    return ytext && sel ? resolveSelection(ytext, sel) : null;
  }

  private showPeerCursors(path: string): void {
    const entry = this.views.get(path);
    if (!entry) return;
    const cursors: RemoteCursor[] = this.peers.flatMap((p) => {
      const at = this.resolve(path, p.cursors[path]);
      return at ? [{ id: p.id, name: p.user.name, color: p.user.color, ...at }] : [];
    });
    entry.view.dispatch({ effects: setRemoteCursors.of(cursors) });
  }

  private renderPeople(): void {
    if (this.following !== null && !this.peers.some((p) => p.id === this.following)) this.following = null;
    $("people").replaceChildren(
      ...this.peers.map((p) => {
        const chip = document.createElement("button");
        chip.type = "button";
        chip.className = "person";
        chip.style.borderColor = p.user.color;
        chip.dataset.id = String(p.id);
        chip.dataset.following = String(this.following === p.id);
        chip.textContent = p.user.name;
        const file = Object.keys(p.cursors)[0];
        chip.title =
          this.following === p.id
            ? `Following ${p.user.name}: click (or type) to stop`
            : file
              ? `${p.user.name} is in ${file}: click to follow`
              : p.user.name;
        chip.addEventListener("click", () => (this.following === p.id ? this.unfollow() : this.follow(p.id)));
        return chip;
      }),
    );
  }

  /** Follows a person: goes to their file and cursor now and whenever they move. */
  private follow(id: number): void {
    this.following = id;
    this.renderPeople();
    this.goToFollowed();
  }

  private unfollow(): void {
    if (this.following === null) return;
    this.following = null;
    this.renderPeople();
  }

  private goToFollowed(): void {
    const peer = this.peers.find((p) => p.id === this.following);
    const [file, sel] = Object.entries(peer?.cursors ?? {})[0] ?? [];
    if (!file || !sel) return;
    if (this.active !== file) this.open(file);
    const entry = this.views.get(file);
    const at = this.resolve(file, sel);
    if (!entry || !at) return;
    entry.view.dispatch({ effects: EditorView.scrollIntoView(at.head, { y: "center" }) });
  }

  // ---- rendering --------------------------------------------------------------------------------

  private renderTitle(): void {
    $("room-title").textContent = this.meta.get("title") ?? "";
  }

  private renderTabs(): void {
    const nav = $("tabs");
    nav.replaceChildren(
      ...this.tabs.map((path) => {
        const tab = document.createElement("div");
        tab.className = "tab";
        tab.setAttribute("role", "tab");
        tab.dataset.path = path;
        tab.setAttribute("aria-selected", String(path === this.active));
        const label = document.createElement("span");
        label.textContent = path.split("/").pop() ?? path;
        label.title = path;
        const close = document.createElement("button");
        close.type = "button";
        close.className = "tab-close";
        close.textContent = "×";
        close.title = `Close ${path}`;
        close.addEventListener("click", (ev) => {
          ev.stopPropagation();
          this.close(path);
        });
        tab.append(label, close);
        tab.addEventListener("click", () => this.open(path));
        return tab;
      }),
    );
  }

  private renderTree(): void {
    const render = (nodes: TreeNode[], depth: number): HTMLElement[] =>
      nodes.flatMap((node) => {
        const li = document.createElement("li");
        li.style.paddingLeft = `${8 + depth * 12}px`;
        li.dataset.path = node.path;
        if (node.kind === "folder") {
          li.className = "tree-folder";
          li.textContent = `${node.name}/`;
          return [li, ...render(node.children, depth + 1)];
        }
        li.className = "tree-file";
        li.setAttribute("role", "treeitem");
        li.setAttribute("aria-selected", String(node.path === this.active));
        const name = document.createElement("span");
        name.className = "tree-name";
        name.textContent = node.name;
        li.append(name);
        const problems = this.diagnostics.get(node.path)?.length ?? 0;
        if (problems) {
          const badge = document.createElement("span");
          badge.className = "tree-errors";
          badge.textContent = String(problems);
          li.append(badge);
        }
        const rename = treeAction("✎", `Rename ${node.path}`, () => this.startRename(li, node.path));
        const del = treeAction("🗑", `Delete ${node.path}`, () => {
          if (del.dataset.confirm === "1") {
            this.shell?.deleteFile(node.path).catch((e) => this.reportError(`Delete ${node.path}`, e));
          } else {
            del.dataset.confirm = "1";
            del.textContent = "delete?";
            setTimeout(() => {
              del.dataset.confirm = "";
              del.textContent = "🗑";
            }, 3000);
          }
        });
        li.append(rename, del);
        li.addEventListener("click", () => this.open(node.path));
        return [li];
      });
    $("file-tree").replaceChildren(...render(buildTree(this.files.keys()), 0));
  }

  private startRename(li: HTMLElement, path: string): void {
    const input = document.createElement("input");
    input.value = path;
    input.className = "rename-input";
    input.spellcheck = false;
    li.replaceChildren(input);
    input.focus();
    input.setSelectionRange(path.lastIndexOf("/") + 1, path.lastIndexOf(".") > 0 ? path.lastIndexOf(".") : path.length);
    let done = false;
    const finish = (commit: boolean) => {
      if (done) return;
      done = true;
      const to = input.value.trim();
      if (commit && to && to !== path) {
        this.shell
          ?.renameFile(path, to)
          .then(() => this.open(to))
          .catch((e) => {
            this.reportError(`Rename ${path}`, e);
            this.renderTree();
          });
      } else {
        this.renderTree();
      }
    };
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") finish(true);
      if (ev.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
  }

  private renderProblems(): void {
    const list = $("problems");
    const all = [...this.diagnostics.entries()].sort(([a], [b]) => a.localeCompare(b)).flatMap(([, d]) => d);
    $("problem-count").textContent = String(all.length);
    if (!all.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "No problems.";
      list.replaceChildren(li);
      return;
    }
    list.replaceChildren(
      ...all.map((d) => {
        const li = document.createElement("li");
        li.className = `problem ${d.severity}`;
        const where = document.createElement("span");
        where.className = "where";
        where.textContent = `${d.file}:${d.line}:${d.column}`;
        const message = document.createElement("span");
        message.className = "message";
        message.textContent = d.message;
        li.append(where, message);
        li.addEventListener("click", () => this.reveal(d));
        return li;
      }),
    );
  }

  private reveal(d: Diagnostic): void {
    this.open(d.file);
    const entry = this.views.get(d.file);
    if (!entry) return;
    const offset = offsetOf(entry.view.state.doc.toString(), d.line, d.column);
    entry.view.dispatch({ selection: EditorSelection.cursor(offset), scrollIntoView: true });
    entry.view.focus();
  }

  private appendConsole(level: string, text: string): void {
    const list = $("console");
    const li = document.createElement("li");
    li.className = `log ${level}`;
    li.textContent = text;
    list.append(li);
    while (list.childElementCount > MAX_CONSOLE_LINES) list.firstElementChild?.remove();
    list.scrollTop = list.scrollHeight;
    this.consoleCount++;
    $("console-count").textContent = String(this.consoleCount);
  }

  private bindChrome(): void {
    $("format-button").addEventListener("click", () => {
      if (this.active) void this.format(this.active);
    });
    $("reload-preview").addEventListener("click", () => {
      this.shell?.reloadPreview().catch((e) => this.reportError("Reload preview", e));
    });
    const form = $<HTMLFormElement>("new-file-form");
    const input = $<HTMLInputElement>("new-file-name");
    $("new-file").addEventListener("click", () => {
      form.hidden = !form.hidden;
      if (!form.hidden) input.focus();
    });
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const path = input.value.trim();
      if (!path) return;
      this.shell
        ?.createFile(path, "")
        .then(() => {
          input.value = "";
          form.hidden = true;
          this.open(path);
        })
        .catch((e) => this.reportError(`Create ${path}`, e));
    });
    for (const tab of document.querySelectorAll<HTMLButtonElement>(".panel-tab")) {
      tab.addEventListener("click", () => {
        for (const t of document.querySelectorAll(".panel-tab")) t.classList.toggle("active", t === tab);
        $("problems").hidden = tab.dataset.panel !== "problems";
        $("console").hidden = tab.dataset.panel !== "console";
        $("assistant").hidden = tab.dataset.panel !== "assistant";
        $("diagnostics").hidden = tab.dataset.panel !== "diagnostics";
        document.documentElement.dataset.panel = tab.dataset.panel ?? "";
        if (tab.dataset.panel === "assistant") $("ai-prompt").focus();
      });
    }
  }
}

// ---- latency probe ----------------------------------------------------------------------------
// What `cargo xtask bench` (tests/e2e/bench_desktop.py) reads over WebDriver as
// `window.__spikeBench`: when the UI became ready, every keydown, and every preview render with
// when it was painted, all in epoch milliseconds (`performance.timeOrigin + performance.now()`,
// a clock the preview's webview shares). Always on and cheap: a number per key press; the last
// BENCH_KEEP of each are kept. No key values are recorded.

const BENCH_KEEP = 1000;
type RenderedSample = { generation: number; ok: boolean; paintedAt: number; receivedAt: number };
const bench = { readyAt: 0, keydowns: [] as number[], rendered: [] as RenderedSample[] };
(window as unknown as { __spikeBench: typeof bench }).__spikeBench = bench;
const epochMs = () => performance.timeOrigin + performance.now();
const keep = <T>(list: T[], item: T) => {
  list.push(item);
  if (list.length > BENCH_KEEP) list.splice(0, list.length - BENCH_KEEP);
};
// Capture phase on window: before CodeMirror's handlers run.
window.addEventListener("keydown", () => keep(bench.keydowns, epochMs()), true);
new MutationObserver((_records, observer) => {
  if (document.documentElement.dataset.ready !== "true") return;
  bench.readyAt = epochMs();
  observer.disconnect();
}).observe(document.documentElement, { attributes: true, attributeFilter: ["data-ready"] });

function recordRendered(r: Extract<PreviewReport, { type: "rendered" }>): void {
  keep(bench.rendered, { generation: r.generation, ok: r.ok, paintedAt: r.paintedAt, receivedAt: epochMs() });
}

const workbench = new Workbench();
workbench.start().catch((e) => {
  document.body.dataset.error = String(e);
  const banner = document.createElement("div");
  banner.className = "fatal";
  banner.textContent = `Spike could not open the room: ${isDesktopError(e) ? e.message : String(e)}`;
  document.body.prepend(banner);
  console.error(e);
});

/** A small button of a file-tree row; its click does not also open the file. */
function treeAction(label: string, title: string, onClick: () => void): HTMLButtonElement {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tree-action";
  button.textContent = label;
  button.title = title;
  button.addEventListener("click", (ev) => {
    ev.stopPropagation();
    onClick();
  });
  return button;
}
