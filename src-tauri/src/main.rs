//! The `spike-desktop` binary: starts the app (see the `spike_desktop` library).

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> anyhow::Result<()> {
    spike_desktop::run()
}
