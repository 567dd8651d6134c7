// The IPC shapes of src-tauri (serde). Written by hand for now; see the report's "missing" list
// (generated types with ts-rs or specta are planned).

/** spike_transpile::Diagnostic: 1-based line, 1-based column counted in characters. */
export interface Diagnostic {
  severity: "error" | "warning";
  message: string;
  file: string;
  line: number;
  column: number;
  source_line: string;
}

/** spike_desktop::preview::PreviewReport. */
export type PreviewReport =
  | { type: "console"; level: string; args: string[] }
  | { type: "error"; message: string; location: string | null }
  | { type: "rendered"; generation: number; ok: boolean };

/** spike_desktop::ShellEvent. */
export type ShellEvent =
  | { type: "diagnostics"; path: string; diagnostics: Diagnostic[] }
  | { type: "preview"; report: PreviewReport }
  | { type: "peers"; peers: Peer[] }
  | {
      type: "status";
      state: "offline" | "connecting" | "syncing" | "synced";
      unconfirmed: boolean;
      server: string;
      room: string;
      user: User;
    };

/** spike_collab::User. */
export interface User {
  name: string;
  color: string;
}

/** spike_desktop::Peer: another person in the room. */
export interface Peer {
  id: number;
  user: User;
  cursors: Record<string, { anchor: number; head: number }>;
}

/** spike_desktop::DesktopError as serialized. */
export interface DesktopError {
  kind: "transpile" | "format" | "collab" | "tauri" | "io" | "bad-request";
  message: string;
  diagnostics: Diagnostic[];
}

export function isDesktopError(e: unknown): e is DesktopError {
  return typeof e === "object" && e !== null && "kind" in e && "message" in e;
}
