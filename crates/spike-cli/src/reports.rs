//! `spike reports`: lists the error reports a room server stored in `<data>/reports.sqlite3`
//! (`POST /v1/reports`, see `spike_server::reports`), oldest first, then a count by kind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use spike_server::reports::{now_ms, ReportStore, REPORTS_FILE};

/// Arguments of `spike reports`.
#[derive(clap::Args)]
pub struct Args {
    /// The server's data folder (as given to `spike serve --data`).
    #[arg(long, default_value = "spike-data")]
    data: PathBuf,
    /// Only reports received within this long, e.g. `30m`, `1h`, `7d`.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// One JSON object a line (`id`, `received_ms` and the report's fields) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.data.join(REPORTS_FILE);
    if !path.exists() {
        eprintln!("no reports: {} does not exist yet", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let since = args.since.map_or(0, |d| {
        now_ms().saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    });
    let reports = ReportStore::open(&args.data)?
        .since(since)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &reports {
        *kinds.entry(r.report.kind.as_str()).or_default() += 1;
        if args.json {
            println!("{}", serde_json::to_string(r)?);
            continue;
        }
        let when = UNIX_EPOCH + Duration::from_millis(r.received_ms);
        println!(
            "{}  {}  {} {}  room={}  {}",
            humantime::format_rfc3339_seconds(when),
            r.report.kind,
            r.report.version,
            r.report.os,
            r.report.room.as_deref().unwrap_or("-"),
            r.report.message
        );
        for cause in &r.report.chain {
            println!("    caused by: {cause}");
        }
    }
    if !args.json {
        let by_kind: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "{} report{}{}",
            reports.len(),
            if reports.len() == 1 { "" } else { "s" },
            if by_kind.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_kind.join(", "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
