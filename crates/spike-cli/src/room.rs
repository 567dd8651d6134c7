//! `spike room token`: issues a room access token signed with the server's secret and prints it
//! with a ready-to-share `spike://` link.
//!
//! Output: the token on the first line of stdout and, for a single room, the `spike://` link on
//! the second; a human summary (role, room, expiry) goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use spike_server::auth::{Claims, Role, Secret, TokenKey};

/// Arguments of `spike room`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print a signed access token for a room (or `prefix*`) and a link to share.
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The room's name, or a prefix ending in `*` (`team-*`) for every room that starts with it.
    room: String,
    /// `edit` (read and write), `view` (watch; the server drops its writes) or `admin` (with
    /// room `*`: also writes the server's shared store, such as the npm cache).
    #[arg(long, value_parser = ["edit", "view", "admin"])]
    role: String,
    /// How long the token is valid: `7d`, `12h`, `30m`, `1w 2d`…
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Display name of the person the token is for.
    #[arg(long)]
    name: Option<String>,
    /// The room server's base URL, as in the link.
    #[arg(long, default_value = "ws://127.0.0.1:8787/rooms")]
    server: String,
    /// The server's data folder; its `secret` is used (generated if missing, as `spike serve`
    /// does). Ignored with `--secret-file` or `SPIKE_SECRET`.
    #[arg(long, default_value = "spike-data")]
    data: PathBuf,
    /// File holding the secret the server was given with `--secret-file`.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Token(args) => token(args),
    }
}

fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let role: Role = args.role.parse().map_err(anyhow::Error::msg)?;
    if args.ttl.is_zero() {
        anyhow::bail!("--ttl must be longer than zero");
    }
    // A single room gets a link; check it (and the server URL) before signing anything.
    let link = match args.room.strip_suffix('*') {
        Some(_) => None,
        None => Some(
            spike_collab::RoomLink::new(&args.server, &args.room)
                .with_context(|| format!("room {:?} on {:?}", args.room, args.server))?,
        ),
    };
    let env_secret = std::env::var("SPIKE_SECRET")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let secret = if let Some(path) = &args.secret_file {
        Secret::from_file(path)?
    } else if let Some(value) = env_secret {
        Secret::new(value.trim().as_bytes()).context("SPIKE_SECRET")?
    } else {
        let (secret, generated) = Secret::load_or_generate(&args.data)?;
        if generated {
            eprintln!(
                "generated a new secret in {}; serve with `spike serve --data {}`",
                args.data.join(spike_server::auth::SECRET_FILE).display(),
                args.data.display()
            );
        }
        secret
    };
    let mut claims = Claims::new(args.room.clone(), role, args.ttl);
    claims.name = args.name.clone();
    let token = TokenKey::new(&secret).issue(&claims)?;
    println!("{token}");
    let expires = UNIX_EPOCH + Duration::from_secs(claims.exp);
    match link {
        Some(mut link) => {
            link.token = Some(token);
            println!("{}", link.to_link());
        }
        None => eprintln!(
            "{} names several rooms: share the token with a link to one of them",
            args.room
        ),
    }
    eprintln!(
        "{} token for room {}{}, expires {} (in {})",
        role.as_str(),
        args.room,
        args.name
            .as_deref()
            .map(|n| format!(" for {n}"))
            .unwrap_or_default(),
        humantime::format_rfc3339_seconds(expires),
        humantime::format_duration(args.ttl),
    );
    Ok(ExitCode::SUCCESS)
}
