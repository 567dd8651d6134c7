//! Generates the Tauri context from the root `tauri.conf.json` and the app manifest.
//!
//! The app manifest lists every app command. Without it Tauri does not ACL-check app commands for
//! webviews served from a custom scheme, and the sandboxed `preview` webview could call them
//! (verified; see DESIGN.md). With it, a command is callable only from a window whose capability
//! grants its `allow-…` permission, and `preview` is in no capability.

fn main() {
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .config_path("../tauri.conf.json")
            .app_manifest(tauri_build::AppManifest::new().commands(spike_desktop_commands())),
    )
    .unwrap_or_else(|e| panic!("tauri-build failed: {e:#}"));
}

/// Every command in `src/commands.rs`; keep in sync with `tauri::generate_handler!` in `lib.rs`.
fn spike_desktop_commands() -> &'static [&'static str] {
    &[
        "open_room",
        "push_update",
        "create_file",
        "rename_file",
        "delete_file",
        "format_file",
        "preview_reload",
        "set_cursor",
        "share_room",
        "join_room",
        "new_room",
        "get_settings",
        "save_settings",
        "mirror_folder",
        "open_folder",
        "stop_mirror",
        "mirror_status",
        "ai_ask",
        "ai_stop",
        "ai_apply",
        "ai_reject",
        "ai_key_status",
        "ai_set_key",
        "diagnostics",
    ]
}
