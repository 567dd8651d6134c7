// The IPC shapes of src-tauri: generated from the Rust types (ts-rs) into bindings.ts, which is
// checked by `cargo test -p spike-desktop bindings`. Only helpers live here.

export * from "./bindings";

import type { ErrorReply } from "./bindings";

/** A command's rejection as the shell serializes `DesktopError`. */
export type DesktopError = ErrorReply;

export function isDesktopError(e: unknown): e is DesktopError {
  return typeof e === "object" && e !== null && "kind" in e && "message" in e;
}
