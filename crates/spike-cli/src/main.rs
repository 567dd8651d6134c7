//! `spike`: the command-line face of the Spike engine.
//!
//! Exit codes: 0 success, 1 when any file had an error (or, for `fmt --check`, would change),
//! 2 for usage errors.

mod ai;
mod example;
mod files;
mod fmt;
mod mirror;
mod reports;
mod room;
mod serve;
mod transpile;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// swc and dprint allocate many small nodes; mimalloc is measurably faster for them (see bench/).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "spike",
    version,
    about = "Spike: a collaborative live code editor's engine, from the command line"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transpile TypeScript/TSX/JSX/JS files or folders to ES modules.
    Transpile(transpile::Args),
    /// Format files or folders in place, check them, or format stdin.
    Fmt(fmt::Args),
    /// Write the embedded example project to a folder, transpile it and check its formatting.
    Example(example::Args),
    /// Run the room server: y-websocket rooms at ws://<listen>/rooms/<room>, persisted in --data.
    Serve(serve::Args),
    /// Room access: `spike room token <ROOM> --role view|edit --ttl 7d` prints a token and link.
    Room(room::Args),
    /// Mirror a room to a folder, both ways, until Ctrl+C: edit its files with any editor.
    Mirror(mirror::Args),
    /// Ask a chat model (OpenAI, Anthropic or an OpenAI-compatible server); the answer streams.
    Ai(ai::Args),
    /// List the error reports a room server stored: `spike reports --data DIR --since 1h`.
    Reports(reports::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Transpile(args) => transpile::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Example(args) => example::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Room(args) => room::run(args),
        Command::Mirror(args) => mirror::run(args),
        Command::Ai(args) => ai::run(args),
        Command::Reports(args) => reports::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
