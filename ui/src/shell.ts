// The connection to the Tauri shell: the only module that calls IPC.
//
// The shell holds the authoritative room document; this replica exchanges binary Yjs updates
// with it like a network peer: raw bytes both ways (a raw invoke body up, a Channel of
// ArrayBuffers down), never JSON arrays of numbers.

import { Channel, invoke } from "@tauri-apps/api/core";
import * as Y from "yjs";

import type { AiEvent, Diagnostics, KeyStatus, MirrorInfo, RelativePositionJSON, RoomLink, Settings, ShareInfo, ShellEvent } from "./types";

/** Transaction origin of updates that came from the shell (not echoed back, not undoable). */
export const SHELL_ORIGIN = Symbol("shell");

/** Runs IPC calls one after another, so an edit always reaches the shell before a format. */
class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const next = this.tail.then(task, task);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

function bytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (data instanceof Uint8Array) return data;
  if (Array.isArray(data)) return Uint8Array.from(data as number[]);
  throw new Error(`expected binary data from the shell, got ${typeof data}`);
}

export class Shell {
  private queue = new SerialQueue();

  private constructor(readonly doc: Y.Doc) {}

  /** Opens the room: applies the shell's state to `doc` and keeps the two in sync. */
  static async connect(doc: Y.Doc, onEvent: (e: ShellEvent) => void): Promise<Shell> {
    const shell = new Shell(doc);
    const updates = new Channel<ArrayBuffer>((data) => {
      Y.applyUpdate(doc, bytes(data), SHELL_ORIGIN);
    });
    const events = new Channel<ShellEvent>(onEvent);
    const state = await invoke<ArrayBuffer>("open_room", { updates, events });
    Y.applyUpdate(doc, bytes(state), SHELL_ORIGIN);
    doc.on("update", (update: Uint8Array, origin: unknown) => {
      if (origin === SHELL_ORIGIN) return;
      shell.queue
        .run(() => invoke("push_update", update))
        .catch((e) => console.error("the shell refused an update", e));
    });
    return shell;
  }

  createFile(path: string, text = ""): Promise<void> {
    return this.queue.run(() => invoke("create_file", { path, text }));
  }

  renameFile(from: string, to: string): Promise<void> {
    return this.queue.run(() => invoke("rename_file", { from, to }));
  }

  deleteFile(path: string): Promise<void> {
    return this.queue.run(() => invoke("delete_file", { path }));
  }

  /** Formats `path` in the shell; the result arrives as an ordinary update. */
  formatFile(path: string): Promise<boolean> {
    return this.queue.run(() => invoke<boolean>("format_file", { path }));
  }

  /**
   * Publishes this user's cursor as Yjs relative positions (not queued behind edits: it is only
   * a hint). `selection` null: no cursor in any file.
   */
  setCursor(file: string | null, selection: { anchor: RelativePositionJSON; head: RelativePositionJSON } | null): Promise<void> {
    return invoke("set_cursor", { file, selection });
  }

  /** The open room's link, its WebSocket URL, and the server's addresses. */
  shareRoom(): Promise<ShareInfo> {
    return invoke<ShareInfo>("share_room");
  }

  /** Switches to the room a `spike://` link or `ws://` URL names; the page reloads after. */
  joinRoom(link: string): Promise<RoomLink> {
    return this.queue.run(() => invoke<RoomLink>("join_room", { link }));
  }

  /** Creates a room (seeded with the example project) and switches to it. */
  newRoom(): Promise<RoomLink> {
    return this.queue.run(() => invoke<RoomLink>("new_room"));
  }

  getSettings(): Promise<Settings> {
    return invoke<Settings>("get_settings");
  }

  /** Validates, saves and applies settings (name and colour at once). */
  saveSettings(settings: Settings): Promise<Settings> {
    return invoke<Settings>("save_settings", { settings });
  }

  /** Keeps the open room and the folder `dir` in sync both ways (replacing a running mirror). */
  mirrorFolder(dir: string): Promise<MirrorInfo> {
    return this.queue.run(() => invoke<MirrorInfo>("mirror_folder", { dir }));
  }

  /** A new empty room that takes the folder's files and stays mirrored; the page reloads after. */
  openFolder(dir: string): Promise<RoomLink> {
    return this.queue.run(() => invoke<RoomLink>("open_folder", { dir }));
  }

  /** Stops the folder mirror; whether one was running. */
  stopMirror(): Promise<boolean> {
    return invoke<boolean>("stop_mirror");
  }

  /** The running folder mirror, if any. */
  mirrorStatus(): Promise<MirrorInfo | null> {
    return invoke<MirrorInfo | null>("mirror_status");
  }

  /** Asks the assistant; its answer streams to `onEvent`. Resolves to the request id. */
  aiAsk(prompt: string, file: string | null, onEvent: (e: AiEvent) => void): Promise<number> {
    const events = new Channel<AiEvent>(onEvent);
    return invoke<number>("ai_ask", { prompt, file, events });
  }

  aiStop(id: number): Promise<boolean> {
    return invoke<boolean>("ai_stop", { id });
  }

  /** Applies an assistant proposal to the room (queued after this replica's edits). */
  aiApply(id: number): Promise<string[]> {
    return this.queue.run(() => invoke<string[]>("ai_apply", { id }));
  }

  aiReject(id: number): Promise<boolean> {
    return invoke<boolean>("ai_reject", { id });
  }

  aiKeyStatus(): Promise<KeyStatus[]> {
    return invoke<KeyStatus[]>("ai_key_status");
  }

  /** Saves (or, with "", deletes) a provider's API key in the system keychain. */
  aiSetKey(provider: string, key: string): Promise<KeyStatus> {
    return invoke<KeyStatus>("ai_set_key", { provider, key });
  }

  /** The diagnostics panel's contents. */
  diagnostics(): Promise<Diagnostics> {
    return invoke<Diagnostics>("diagnostics");
  }

  reloadPreview(): Promise<number> {
    return this.queue.run(() => invoke<number>("preview_reload"));
  }
}
