//! What the diagnostics panel shows, and the app's error reporting.
//!
//! - **Error reports**: `error`-level events go through spike-report's layer into a local queue
//!   (`<data>/reports.sqlite`) and on to the open room's server (`POST /v1/reports`) when it is
//!   reachable: message, error chain, version, OS and an anonymised room id, never document
//!   content or keys (see spike-report for exactly what is sent). The layer is installed into the
//!   app's subscriber once the data folder is known ([`install_report_layer`]).
//! - **Recent problems**: the last warnings and errors, kept in memory by [`RecentProblems`].
//! - **Figures**: the process' own metrics (the embedded server installs the Prometheus
//!   recorder): store tiers, AI requests, reports, connections.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;
use tracing_subscriber::{reload, Layer, Registry};

/// How many recent warnings and errors the panel lists.
const RECENT: usize = 30;

/// Where [`run`](crate::run) left the report layer's slot in the app's subscriber.
static REPORT_SLOT: OnceLock<reload::Handle<Option<spike_report::ReportLayer>, Registry>> =
    OnceLock::new();

/// The empty slot the report layer goes into later, for the app's subscriber (the innermost
/// layer over the registry); [`install_report_layer`] fills it.
pub(crate) fn report_slot() -> reload::Layer<Option<spike_report::ReportLayer>, Registry> {
    let (layer, handle) = reload::Layer::new(None);
    let _ = REPORT_SLOT.set(handle);
    layer
}

/// Puts `layer` into the app's subscriber; `false` when there is no slot (tests, which keep
/// their own subscriber).
pub(crate) fn install_report_layer(layer: spike_report::ReportLayer) -> bool {
    match REPORT_SLOT.get() {
        Some(slot) => slot.modify(|l| *l = Some(layer)).is_ok(),
        None => false,
    }
}

/// The last warnings and errors, newest last, as `HH:MM:SS LEVEL target: message`.
#[derive(Clone, Default)]
pub(crate) struct RecentProblems(Arc<Mutex<VecDeque<String>>>);

/// The app's [`RecentProblems`], shared by its subscriber layer and the panel.
pub(crate) fn recent_problems() -> &'static RecentProblems {
    static RECENT_PROBLEMS: OnceLock<RecentProblems> = OnceLock::new();
    RECENT_PROBLEMS.get_or_init(RecentProblems::default)
}

impl RecentProblems {
    /// The lines, oldest first.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else if matches!(field.name(), "error" | "reason") {
            self.0.push_str(&format!(" ({}: {value})", field.name()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        } else if matches!(field.name(), "error" | "reason") {
            self.0.push_str(&format!(" ({}: {value:?})", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for RecentProblems {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let now = time_of_day();
        let line = format!("{now} {level} {}: {}", event.metadata().target(), message.0);
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == RECENT {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }
}

/// `HH:MM:SS` (UTC) now.
fn time_of_day() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// One figure of the process' metrics.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct Figure {
    /// The metric's name (`spike_store_hits_total`).
    pub name: String,
    /// Its labels as Prometheus prints them (`tier="sqlite"`), or empty.
    pub labels: String,
    /// Its value.
    pub value: f64,
}

/// What the diagnostics panel shows.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    /// The app's version.
    pub version: String,
    /// `offline`, `connecting`, `syncing` or `synced`.
    pub state: String,
    /// The room server.
    pub server: String,
    /// The room.
    pub room: String,
    /// Whether some local change is not confirmed by the server yet.
    pub unconfirmed: bool,
    /// Why the server refused this room, if it did.
    pub denied: Option<String>,
    /// Error reports waiting to be sent.
    #[ts(type = "number")]
    pub reports_queued: u64,
    /// The last warnings and errors, oldest first.
    pub recent: Vec<String>,
    /// Store, AI, report and connection figures.
    pub figures: Vec<Figure>,
}

/// The metric families the panel shows.
const SHOWN: &[&str] = &[
    "spike_store_",
    "spike_ai_",
    "spike_report_",
    "spike_connections",
    "spike_rooms_open",
];

/// The figures of a Prometheus text rendering (exposition format 0.0.4) that the panel shows:
/// counters and gauges of [`SHOWN`] families, and histograms' `_count`s (no buckets).
pub(crate) fn figures(rendered: &str) -> Vec<Figure> {
    rendered
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let shown = SHOWN.iter().any(|p| name.starts_with(p))
                && !name.ends_with("_bucket")
                && !name.ends_with("_sum")
                && !labels.contains("quantile=");
            shown.then(|| Figure {
                name: name.to_owned(),
                labels: labels.to_owned(),
                value: value.parse().unwrap_or(f64::NAN),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn figures_keep_the_panels_families_without_buckets() {
        let text = "# TYPE spike_store_hits_total counter\n\
                    spike_store_hits_total{tier=\"sqlite\"} 3\n\
                    spike_rooms_open 1\n\
                    spike_updates_in_total 9\n\
                    spike_ai_proxy_seconds_bucket{le=\"0.1\"} 2\n\
                    spike_ai_proxy_seconds_count 2\n";
        assert_eq!(
            figures(text),
            vec![
                Figure {
                    name: "spike_store_hits_total".into(),
                    labels: "tier=\"sqlite\"".into(),
                    value: 3.0
                },
                Figure {
                    name: "spike_rooms_open".into(),
                    labels: String::new(),
                    value: 1.0
                },
                Figure {
                    name: "spike_ai_proxy_seconds_count".into(),
                    labels: String::new(),
                    value: 2.0
                },
            ]
        );
    }

    #[test]
    fn recent_problems_keep_warnings_and_errors_only_and_the_last_thirty() {
        let recent = RecentProblems::default();
        let subscriber = tracing_subscriber::registry().with(recent.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(target: "spike_desktop::npm", "cache slow");
            for n in 0..40 {
                tracing::error!(error = "refused", "sending failed {n}");
            }
        });
        let lines = recent.lines();
        assert_eq!(lines.len(), RECENT);
        assert!(
            lines[RECENT - 1].ends_with(
                " ERROR spike_desktop::diagnostics::tests: sending failed 39 (error: refused)"
            ),
            "{lines:?}"
        );
        assert!(lines
            .iter()
            .all(|l| !l.contains("not kept") && !l.contains("cache slow")));
    }
}
