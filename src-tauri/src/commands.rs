//! The app's commands: thin wrappers over [`crate::room::Room`] and [`spike_preview::Preview`].
//! Every one is listed in `build.rs` (the app manifest) and allowed for the `main` window only
//! (`capabilities/main.json`).

use tauri::ipc::{Channel, InvokeBody, InvokeResponseBody, Request, Response};
use tauri::{Manager as _, State};

use crate::settings::Settings;
use crate::{DesktopError, ShareInfo, Shell, ShellEvent};

/// Connects the editor's Yjs replica: `updates` receives every later update that does not come
/// from the UI (raw lib0 v1 bytes, an `ArrayBuffer` in JS), `events` receives diagnostics and the
/// preview's console and errors. Returns the whole room as one update (raw bytes).
#[tauri::command]
pub fn open_room<R: tauri::Runtime>(
    app: tauri::AppHandle<R>,
    shell: State<'_, Shell>,
    updates: Channel<InvokeResponseBody>,
    events: Channel<ShellEvent>,
) -> Result<Response, DesktopError> {
    let room = shell.room();
    let state = room.attach_ui(Box::new(move |update| {
        if let Err(e) = updates.send(InvokeResponseBody::Raw(update)) {
            tracing::warn!("sending an update to the UI failed: {e}");
        }
    }));
    shell.set_events(events);
    shell.changed(room.paths());
    shell.emit_status();
    shell.emit_peers();
    // The room's folder mirror, if it ran when the room was last left; its `ready` line
    // reaches the UI through the events just attached.
    tauri::async_runtime::spawn(async move {
        app.state::<Shell>().resume_mirror().await;
    });
    tracing::info!(
        room = room.name(),
        bytes = state.len(),
        "UI replica attached"
    );
    Ok(Response::new(state))
}

/// Applies an update the UI replica made. The body is the raw update (lib0 v1), not JSON.
/// Errors: `bad-request` for a JSON body or an oversized update, `collab` for one that does not
/// decode or apply.
#[tauri::command]
pub fn push_update(shell: State<'_, Shell>, request: Request<'_>) -> Result<(), DesktopError> {
    match request.body() {
        InvokeBody::Raw(bytes) => shell.room().apply_from_ui(bytes),
        InvokeBody::Json(_) => Err(DesktopError::BadRequest(
            "push_update takes the raw update bytes as the body".into(),
        )),
    }
}

/// Creates a file. Errors: invalid path, existing file.
#[tauri::command]
pub fn create_file(
    shell: State<'_, Shell>,
    path: String,
    text: String,
) -> Result<(), DesktopError> {
    shell.room().create_file(&path, &text)
}

/// Renames a file. Errors: no such file, invalid or existing target.
#[tauri::command]
pub fn rename_file(shell: State<'_, Shell>, from: String, to: String) -> Result<(), DesktopError> {
    shell.room().rename_file(&from, &to)
}

/// Deletes a file. Errors: no such file.
#[tauri::command]
pub fn delete_file(shell: State<'_, Shell>, path: String) -> Result<(), DesktopError> {
    shell.room().delete_file(&path)
}

/// Formats a file in place (as minimal CRDT edits). Returns whether it changed.
/// Errors: `format` with the syntax errors' diagnostics, `collab` for no such file.
#[tauri::command]
pub async fn format_file(shell: State<'_, Shell>, path: String) -> Result<bool, DesktopError> {
    shell.room().format_file(&path)
}

/// Re-renders the preview from scratch (a new generation of every module).
#[tauri::command]
pub fn preview_reload(shell: State<'_, Shell>) -> Result<u64, DesktopError> {
    shell.render_preview()
}

/// Publishes where this user's cursor is: `file` and its `selection` as Yjs relative positions
/// (`Y.relativePositionToJSON`), or none. Errors: `bad-request` for a path longer than the room
/// allows or a selection without its file.
#[tauri::command]
pub fn set_cursor(
    shell: State<'_, Shell>,
    file: Option<String>,
    selection: Option<spike_collab::Selection>,
) -> Result<(), DesktopError> {
    if file
        .as_deref()
        .is_some_and(|f| f.len() > spike_collab::MAX_PATH_BYTES)
    {
        return Err(DesktopError::BadRequest("file path too long".into()));
    }
    let cursor = match (file, selection) {
        (Some(file), Some(selection)) => Some((file, selection)),
        (None, None) | (Some(_), None) => None,
        (None, Some(_)) => {
            return Err(DesktopError::BadRequest(
                "a selection needs its file".into(),
            ))
        }
    };
    shell.set_cursor(cursor)
}

/// What to give a collaborator: the open room's `spike://` link and WebSocket URL (with this
/// machine's network address when the embedded server listens beyond loopback).
#[tauri::command]
pub fn share_room(shell: State<'_, Shell>) -> ShareInfo {
    shell.share_info()
}

/// Leaves the open room and opens the one `link` names (a `spike://` link or a `ws://` URL).
/// The UI reloads afterwards and attaches to it with `open_room`. Errors: `collab` for a link
/// that does not parse (with the reason) or a room whose log cannot be opened.
#[tauri::command]
pub async fn join_room(
    shell: State<'_, Shell>,
    link: String,
) -> Result<spike_collab::RoomLink, DesktopError> {
    let link = spike_collab::RoomLink::parse(&link)?;
    shell.switch_room(link).await
}

/// Creates a room with a random name on the configured server (else the embedded one), seeded
/// with the example project, and switches to it.
#[tauri::command]
pub async fn new_room(shell: State<'_, Shell>) -> Result<spike_collab::RoomLink, DesktopError> {
    let link = shell.new_room_link()?;
    shell.switch_room(link).await
}

/// The current settings.
#[tauri::command]
pub fn get_settings(shell: State<'_, Shell>) -> Settings {
    shell.settings()
}

/// Validates, saves and applies `settings` (name and colour reach peers at once; the server is
/// used for the next new room). Returns what was stored. Errors: `settings` naming the field.
#[tauri::command]
pub fn save_settings(
    shell: State<'_, Shell>,
    settings: Settings,
) -> Result<Settings, DesktopError> {
    shell.save_settings(settings)
}

/// "Mirror to folder…": keeps the open room and the folder `dir` (created if missing) in sync
/// both ways until stopped or the room is left. Returns the mirror's state; its events arrive as
/// `mirror` events. Errors: `read-only` for a view-only room, `io` / `mirror` for a folder that
/// cannot be made or watched, `bad-request` for an empty path.
#[tauri::command]
pub async fn mirror_folder(
    shell: State<'_, Shell>,
    dir: String,
) -> Result<crate::MirrorInfo, DesktopError> {
    shell.start_mirror(folder_argument(&dir)?).await
}

/// "Open folder…": a new empty room that takes the folder's files and stays mirrored with it.
/// The UI reloads afterwards and attaches to it with `open_room`. Errors: as `mirror_folder`.
#[tauri::command]
pub async fn open_folder(
    shell: State<'_, Shell>,
    dir: String,
) -> Result<spike_collab::RoomLink, DesktopError> {
    shell.open_folder(folder_argument(&dir)?).await
}

/// Stops the folder mirror; whether one was running.
#[tauri::command]
pub async fn stop_mirror(shell: State<'_, Shell>) -> Result<bool, DesktopError> {
    Ok(shell.stop_mirror().await)
}

/// The open room's folder mirror, if one runs.
#[tauri::command]
pub async fn mirror_status(
    shell: State<'_, Shell>,
) -> Result<Option<crate::MirrorInfo>, DesktopError> {
    Ok(shell.mirror_info().await)
}

/// A folder path from the UI: trimmed, `~/` expanded to the home folder, and absolute.
fn folder_argument(dir: &str) -> Result<std::path::PathBuf, DesktopError> {
    let dir = dir.trim();
    if dir.is_empty() {
        return Err(DesktopError::BadRequest("no folder given".into()));
    }
    let home = || std::env::var_os("HOME").map(std::path::PathBuf::from);
    let path = match dir.strip_prefix("~/") {
        Some(rest) => home()
            .ok_or_else(|| DesktopError::BadRequest("`~` needs HOME to be set".into()))?
            .join(rest),
        None => std::path::PathBuf::from(dir),
    };
    if !path.is_absolute() {
        return Err(DesktopError::BadRequest(format!(
            "{dir:?} is not an absolute folder path (start it with / or ~/)"
        )));
    }
    Ok(path)
}

/// The diagnostics panel's contents: connection, queued error reports, recent problems, and the
/// store, AI and connection figures.
#[tauri::command]
pub fn diagnostics(shell: State<'_, Shell>) -> crate::Diagnostics {
    shell.diagnostics()
}

/// Asks the assistant `prompt` about the open room, showing it `file` (the open file). The
/// answer streams to `events` as text, files read, a proposal of edits, then done or an error.
/// Returns the request id (for `ai_stop`). Errors: `bad-request` for an empty or oversized
/// question, `ai` when no provider can be set up (no key: the message says where to put one).
#[tauri::command]
pub fn ai_ask(
    shell: State<'_, Shell>,
    prompt: String,
    file: Option<String>,
    events: Channel<crate::AiEvent>,
) -> Result<u64, DesktopError> {
    shell.ask_ai(prompt, file, events)
}

/// Stops request `id` (closing its upstream connection); whether it was running.
#[tauri::command]
pub fn ai_stop(shell: State<'_, Shell>, id: u64) -> bool {
    shell.stop_ai(id)
}

/// Applies the assistant's proposal `id` to the room as this person's edits; returns the files
/// changed. Errors: `bad-request` (no such proposal), `read-only`, `ai` (the room changed so an
/// edit no longer fits; nothing was applied).
#[tauri::command]
pub fn ai_apply(shell: State<'_, Shell>, id: u64) -> Result<Vec<String>, DesktopError> {
    shell.apply_ai(id)
}

/// Drops the assistant's proposal `id`; whether it was open.
#[tauri::command]
pub fn ai_reject(shell: State<'_, Shell>, id: u64) -> bool {
    shell.reject_ai(id)
}

/// Where each provider's API key comes from (keychain, environment or none), never the key.
#[tauri::command]
pub fn ai_key_status() -> Vec<crate::keys::KeyStatus> {
    spike_ai::ProviderKind::ALL
        .into_iter()
        .map(crate::keys::status)
        .collect()
}

/// Saves `key` for `provider` in the OS keychain (empty: deletes it). Errors: `bad-request`
/// for an unknown provider, `keychain` when no keychain service is available (the message
/// says what to do instead).
#[tauri::command]
pub fn ai_set_key(provider: String, key: String) -> Result<crate::keys::KeyStatus, DesktopError> {
    let kind: spike_ai::ProviderKind = provider
        .parse()
        .map_err(|e: spike_ai::AiError| DesktopError::BadRequest(e.to_string()))?;
    crate::keys::store(kind, &key)?;
    Ok(crate::keys::status(kind))
}
