//! Observability: the process-wide Prometheus recorder behind `GET /metrics`, and the span every
//! HTTP request runs in.
//!
//! Metrics (Prometheus text exposition format 0.0.4, as metrics-exporter-prometheus renders it):
//!
//! | name | type | what |
//! |---|---|---|
//! | `spike_connections` | gauge | open room connections (WebSockets that joined a room) |
//! | `spike_rooms_open` | gauge | rooms loaded in memory |
//! | `spike_updates_in_total` | counter | document updates received and persisted |
//! | `spike_updates_out_total` | counter | document update frames sent to connections (one per recipient; counted as the batch is queued, including to a client found too slow) |
//! | `spike_bytes_in_total` | counter | WebSocket message payload bytes received |
//! | `spike_bytes_out_total` | counter | WebSocket binary payload bytes queued to clients (pings not counted) |
//! | `spike_fanout_seconds` | histogram | from receiving an update to its broadcast being queued to every peer |
//! | `spike_persist_seconds` | histogram | one batch's SQLite commit (the fsync included) |
//! | `spike_auth_refusals_total{reason}` | counter | refused tokens, by [`crate::auth::Refusal::kind`] |
//! | `spike_limit_refusals_total{kind}` | counter | limit refusals, by [`crate::LimitKind::as_str`] |
//! | `spike_view_writes_dropped_total` | counter | document updates dropped from `view` connections |
//! | `spike_reports_total{kind}` | counter | error reports stored, by [`crate::reports::Report::metric_kind`] |
//! | `spike_awareness_refused_total{reason}` | counter | awareness updates refused: `not_owner` (a client id another connection introduced), `too_many_clients` |
//! | `spike_update_gaps_total` | counter | updates refused for skipping part of their client's own history ([`spike_collab::CollabError::UpdateGap`]) |
//! | `spike_pending_expired_total` | counter | times a room dropped updates that waited for a missing dependency past `pending_ttl` |
//! | `spike_room_reloads_total` | counter | times a room reloaded its document from its log (yrs failed part-way, or a refused pending update) |
//! | `spike_log_recoveries_total{kind}`, `spike_log_updates_recovered_total{kind}`, `spike_log_updates_lost_total{kind}` | counter | damaged room files moved aside and recovered ([`spike_collab::Recovery`]) |
//!
//! No label carries a room name, a client address or a token.
//!
//! Every series above is published from the first scrape, at zero before any traffic (each
//! label value a refusal can take included), as Prometheus exporters do, so that rates and
//! alerts see a series start at 0 rather than appear mid-incident. So are the usual process
//! series (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_threads`,
//! `process_start_time_seconds`; metrics-process, read at each scrape).
//!
//! The `metrics` facade has one global recorder per process: [`install_recorder`] installs the
//! Prometheus one once (later calls return the same handle), so every [`crate::Server`] in a
//! process reports into the same, process-wide counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument as _;

/// Histogram buckets for the `_seconds` metrics: 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as this process' global `metrics` recorder, once; later
/// calls return the same handle. `None` when another recorder was installed first (then
/// `/metrics` answers 503 saying so).
pub fn install_recorder() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "histogram buckets refused");
                    return None;
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %e, "another metrics recorder is installed; /metrics is off");
                return None;
            }
            describe();
            publish_zeros();
            process().describe();
            process().collect();
            Some(handle)
        })
        .as_ref()
}

/// The process series' collector (one per process, like the recorder).
fn process() -> &'static metrics_process::Collector {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// Registers every series of the table in the module docs at zero (adding 0 to a counter that
/// already counted changes nothing).
fn publish_zeros() {
    for name in [
        "spike_updates_in_total",
        "spike_updates_out_total",
        "spike_bytes_in_total",
        "spike_bytes_out_total",
        "spike_view_writes_dropped_total",
        "spike_update_gaps_total",
        "spike_pending_expired_total",
        "spike_room_reloads_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in ["spike_connections", "spike_rooms_open"] {
        metrics::gauge!(name).increment(0.0);
    }
    for name in ["spike_fanout_seconds", "spike_persist_seconds"] {
        // Registered: rendered with count 0 until the first sample.
        let _ = metrics::histogram!(name);
    }
    for kind in crate::LimitKind::ALL {
        metrics::counter!("spike_limit_refusals_total", "kind" => kind.as_str()).increment(0);
    }
    for reason in [
        "missing",
        "malformed",
        "forged",
        "expired",
        "wrong_room",
        "view_only",
        "shared_namespace",
        "list_blobs",
    ] {
        metrics::counter!("spike_auth_refusals_total", "reason" => reason).increment(0);
    }
    for reason in ["not_owner", "too_many_clients"] {
        metrics::counter!("spike_awareness_refused_total", "reason" => reason).increment(0);
    }
}

/// The installed handle, if [`install_recorder`] succeeded.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get().and_then(Option::as_ref)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("spike_connections", "Open room connections.");
    describe_gauge!("spike_rooms_open", "Rooms loaded in memory.");
    describe_counter!(
        "spike_updates_in_total",
        "Document updates received and persisted."
    );
    describe_counter!(
        "spike_updates_out_total",
        "Document update frames queued to connections, one per recipient."
    );
    describe_counter!(
        "spike_bytes_in_total",
        Unit::Bytes,
        "WebSocket message payload bytes received."
    );
    describe_counter!(
        "spike_bytes_out_total",
        Unit::Bytes,
        "WebSocket binary payload bytes queued to clients."
    );
    describe_histogram!(
        "spike_fanout_seconds",
        Unit::Seconds,
        "From receiving an update to its broadcast being queued."
    );
    describe_histogram!(
        "spike_persist_seconds",
        Unit::Seconds,
        "One batch's SQLite commit."
    );
    describe_counter!(
        "spike_auth_refusals_total",
        "Refused access tokens, by reason."
    );
    describe_counter!("spike_reports_total", "Error reports stored, by kind.");
    describe_counter!(
        "spike_limit_refusals_total",
        "Requests and connections refused by an abuse limit, by kind."
    );
    describe_counter!(
        "spike_awareness_refused_total",
        "Awareness updates refused, by reason."
    );
    describe_counter!(
        "spike_update_gaps_total",
        "Updates refused for skipping part of their client's own history."
    );
    describe_counter!(
        "spike_pending_expired_total",
        "Times a room dropped updates that waited too long for a missing dependency."
    );
    describe_counter!(
        "spike_room_reloads_total",
        "Times a room reloaded its document from its log."
    );
}

/// `GET /metrics`: the Prometheus text rendering, or 503 when the recorder is not ours.
pub(crate) async fn metrics() -> Response {
    process().collect();
    match handle() {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are off: another metrics recorder is installed in this process",
        )
            .into_response(),
    }
}

/// Runs each HTTP request in an `http` span with its method, path (never the query: it may
/// carry a token) and a request number, and logs its status at `debug`.
pub(crate) async fn http_span(req: Request, next: Next) -> Response {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "http",
        request = id,
        method = %req.method(),
        path = req.uri().path()
    );
    async move {
        let started = std::time::Instant::now();
        let resp = next.run(req).await;
        tracing::debug!(
            status = resp.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
        resp
    }
    .instrument(span)
    .await
}
