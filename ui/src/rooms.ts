// Room controls (share, join, new room) and the settings dialog.

import type { Shell } from "./shell";
import { isDesktopError, type MirrorInfo, type Settings, type ShareInfo } from "./types";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from index.html`);
  return el as T;
};

const message = (e: unknown) => (isDesktopError(e) ? e.message : String(e));

function showError(id: string, e: unknown | null): void {
  const el = $(id);
  el.hidden = e === null;
  el.textContent = e === null ? "" : message(e);
}

/** Copies the value of input `id`: the async clipboard API where allowed, else a selection copy. */
async function copyInput(id: string, button: HTMLButtonElement): Promise<void> {
  const input = $<HTMLInputElement>(id);
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand("copy");
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = label), 1500);
}

/** What the share dialog says about who can reach the room. */
export function shareNote(info: ShareInfo): string {
  if (!info.embedded) return `The room lives on ${info.link.server}; anyone who can reach that server can join.`;
  if (info.loopbackOnly) {
    return "This room is on the server inside this app, which only this computer can reach. Start Spike with SPIKE_LISTEN=0.0.0.0 to let people on your network join.";
  }
  return "This room is on the server inside this app; people on your network can join with the link, which carries an edit token valid for 30 days.";
}

/** Wires the Share button and the room dialog. Switching rooms reloads the window. */
export function bindRoomControls(shell: Shell): void {
  const dialog = $<HTMLDialogElement>("room-dialog");
  $("room-button").addEventListener("click", async () => {
    showError("room-error", null);
    try {
      const info = await shell.shareRoom();
      $("room-name").textContent = info.link.room;
      $<HTMLInputElement>("share-link").value = info.spikeLink;
      $<HTMLInputElement>("share-ws").value = info.websocketUrl;
      $("share-note").textContent = shareNote(info);
    } catch (e) {
      showError("room-error", e);
    }
    dialog.showModal();
    $<HTMLInputElement>("share-link").select();
  });
  for (const button of dialog.querySelectorAll<HTMLButtonElement>("button[data-copy]")) {
    button.addEventListener("click", () => void copyInput(button.dataset.copy ?? "", button));
  }
  const switched = () => window.location.reload();
  const join = async () => {
    const link = $<HTMLInputElement>("join-link").value.trim();
    if (!link) return;
    try {
      await shell.joinRoom(link);
      switched();
    } catch (e) {
      showError("room-error", e);
    }
  };
  $("join-button").addEventListener("click", () => void join());
  $("join-link").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      void join();
    }
  });
  $("new-room").addEventListener("click", async () => {
    try {
      await shell.newRoom();
      switched();
    } catch (e) {
      showError("room-error", e);
    }
  });
}

/** Wires the settings dialog; `onSaved` gets what the shell stored. */
export function bindSettings(shell: Shell, current: () => Settings | null, onSaved: (s: Settings) => void): void {
  const dialog = $<HTMLDialogElement>("settings-dialog");
  const name = $<HTMLInputElement>("settings-name");
  const color = $<HTMLInputElement>("settings-color");
  const server = $<HTMLInputElement>("settings-server");
  const format = $<HTMLInputElement>("settings-format");
  const cdn = $<HTMLInputElement>("settings-cdn");
  const aiProvider = $<HTMLSelectElement>("settings-ai-provider");
  const aiBaseUrl = $<HTMLInputElement>("settings-ai-base-url");
  const aiModel = $<HTMLInputElement>("settings-ai-model");
  const aiKey = $<HTMLInputElement>("settings-ai-key");
  const keyStatus = $("settings-ai-key-status");
  const showKeyStatus = async () => {
    try {
      const all = await shell.aiKeyStatus();
      const status = all.find((k) => k.provider === aiProvider.value);
      if (!status) return;
      const where = { keychain: "a key is saved in the keychain", environment: "the key comes from the environment", none: "no key yet" }[status.source];
      keyStatus.textContent = status.keychainError && status.source !== "keychain" ? `${where}; ${status.keychainError}` : where;
    } catch (e) {
      keyStatus.textContent = message(e);
    }
  };
  aiProvider.addEventListener("change", () => void showKeyStatus());
  $("settings-ai-key-save").addEventListener("click", async () => {
    try {
      await shell.aiSetKey(aiProvider.value, aiKey.value);
      aiKey.value = "";
      await showKeyStatus();
    } catch (e) {
      keyStatus.textContent = message(e);
    }
  });
  $("settings-button").addEventListener("click", () => {
    const s = current();
    if (!s) return;
    name.value = s.name;
    color.value = s.color || "#f59e0b";
    server.value = s.server;
    format.checked = s.formatOnSave;
    cdn.value = s.cdn;
    aiProvider.value = s.aiProvider;
    aiBaseUrl.value = s.aiBaseUrl;
    aiModel.value = s.aiModel;
    aiKey.value = "";
    void showKeyStatus();
    showError("settings-error", null);
    dialog.showModal();
    name.focus();
  });
  $("settings-cancel").addEventListener("click", () => dialog.close());
  $<HTMLFormElement>("settings-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const s = current();
    if (!s) return;
    try {
      const saved = await shell.saveSettings({
        ...s,
        name: name.value.trim(),
        color: color.value,
        server: server.value.trim(),
        formatOnSave: format.checked,
        cdn: cdn.value.trim(),
        aiProvider: aiProvider.value as Settings["aiProvider"],
        aiBaseUrl: aiBaseUrl.value.trim(),
        aiModel: aiModel.value.trim(),
      });
      onSaved(saved);
      dialog.close();
    } catch (e) {
      showError("settings-error", e);
    }
  });
}

/**
 * Wires "Folder…": mirror the open room into a folder, open a folder as a new room, stop.
 * Returns a function that takes each mirror event line.
 */
export function bindMirror(shell: Shell, room: () => string): (line: string) => void {
  const dialog = $<HTMLDialogElement>("mirror-dialog");
  const dir = $<HTMLInputElement>("mirror-dir");
  const log = $<HTMLUListElement>("mirror-log");
  const state = $("mirror-state");
  const indicator = $("mirror-indicator");
  const show = (info: MirrorInfo | null) => {
    indicator.hidden = info === null;
    indicator.textContent = info ? `⇄ ${info.dir}` : "";
    indicator.title = info ? `This room is mirrored into ${info.dir}` : "";
    state.textContent = info ? `Mirroring room ${info.room} into ${info.dir}` : "Not mirrored to a folder.";
    $("mirror-stop").hidden = info === null;
    const skipped = $<HTMLUListElement>("mirror-skipped");
    skipped.replaceChildren(
      ...(info?.skipped ?? []).map((f) => {
        const li = document.createElement("li");
        li.textContent = `${f.path}: ${f.reason}`;
        return li;
      }),
    );
    if (info) {
      log.replaceChildren();
      for (const line of info.recent) addLine(line);
    }
  };
  const addLine = (line: string) => {
    const li = document.createElement("li");
    li.textContent = line;
    log.append(li);
    while (log.childElementCount > 50) log.firstElementChild?.remove();
    log.scrollTop = log.scrollHeight;
  };
  const refresh = () =>
    shell
      .mirrorStatus()
      .then(show)
      .catch((e) => showError("mirror-error", e));
  $("mirror-button").addEventListener("click", () => {
    showError("mirror-error", null);
    if (!dir.value) dir.value = `~/Spike/${room()}`;
    void refresh();
    dialog.showModal();
    dir.focus();
  });
  $("mirror-start").addEventListener("click", async () => {
    showError("mirror-error", null);
    try {
      show(await shell.mirrorFolder(dir.value));
    } catch (e) {
      showError("mirror-error", e);
    }
  });
  $("open-folder").addEventListener("click", async () => {
    showError("mirror-error", null);
    try {
      await shell.openFolder(dir.value);
      window.location.reload();
    } catch (e) {
      showError("mirror-error", e);
    }
  });
  $("mirror-stop").addEventListener("click", async () => {
    try {
      await shell.stopMirror();
      show(null);
    } catch (e) {
      showError("mirror-error", e);
    }
  });
  void refresh();
  return (line: string) => {
    addLine(line);
    // A start (also one resumed when the room opened) shows the top bar's indicator; a skipped
    // file changes what the dialog lists.
    if (line.startsWith("ready") || (dialog.open && line.startsWith("skipped"))) void refresh();
  };
}
