//! The reporter: the shared queue, the sender task, and the handle that steers them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use tokio::sync::{watch, Notify};

use crate::queue::{DropReason, Queue, QueueLimits};
use crate::report::{cap, os, MAX_VERSION_BYTES};
use crate::{Report, ReportError, ReportLayer, RoomHasher};

/// Where reports go: a room server and the token to show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The server's HTTP base URL, e.g. `http://127.0.0.1:8080` (reports go to
    /// `<base>/v1/reports`).
    pub base: Url,
    /// A room token of that server, sent as `Authorization: Bearer`, when it needs one.
    pub token: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Target {
    /// The server behind a room server's WebSocket base URL, as [`spike_collab::http_base`]
    /// maps it: `ws://host:port/rooms` → `http://host:port/`, `wss://…` → `https://…`; a path
    /// before the final `/rooms` (a reverse proxy's prefix) is kept.
    ///
    /// Errors: [`ReportError::InvalidServer`] unless `rooms_url` is an absolute `ws`, `wss`,
    /// `http` or `https` URL with a host.
    pub fn from_rooms_url(rooms_url: &str, token: Option<String>) -> Result<Self, ReportError> {
        let base = spike_collab::http_base(rooms_url).map_err(|e| ReportError::InvalidServer {
            url: rooms_url.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self { base, token })
    }

    /// `<base>/v1/reports`.
    pub fn endpoint(&self) -> Result<Url, ReportError> {
        self.base
            .join("v1/reports")
            .map_err(|e| ReportError::InvalidServer {
                url: self.base.to_string(),
                message: e.to_string(),
            })
    }
}

/// How the sender behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderOptions {
    /// First wait after a failed send. Default 500 ms.
    pub min_backoff: Duration,
    /// Longest wait between attempts (exponential with jitter in between). Default 60 s.
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; a longer one is capped to this. Default 10 min.
    pub max_retry_after: Duration,
    /// Connect timeout of one attempt. Default 10 s.
    pub connect_timeout: Duration,
    /// Whole-request timeout of one attempt. Default 30 s.
    pub request_timeout: Duration,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything a [`Reporter`] needs.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// The queue file, e.g. `<data>/reports.sqlite`; the salt is kept beside it in
    /// `<file>.salt`.
    pub queue_path: PathBuf,
    /// The app's version, sent with every report (at most 64 bytes).
    pub version: String,
    /// Where to send; `None` queues until [`ReportHandle::set_target`] gives one.
    pub target: Option<Target>,
    /// The queue's bounds.
    pub limits: QueueLimits,
    /// Retry and timeout settings.
    pub sender: SenderOptions,
}

impl ReporterConfig {
    /// Defaults for everything but the file and the version.
    pub fn new(queue_path: impl Into<PathBuf>, version: impl Into<String>) -> Self {
        Self {
            queue_path: queue_path.into(),
            version: version.into(),
            target: None,
            limits: QueueLimits::default(),
            sender: SenderOptions::default(),
        }
    }
}

/// What the layer and the sender share.
pub(crate) struct Shared {
    pub queue: Mutex<Queue>,
    pub hasher: RoomHasher,
    pub version: String,
    pub os: String,
    room: RwLock<Option<String>>,
    queued: Notify,
}

impl Shared {
    pub(crate) fn room(&self) -> Option<String> {
        self.room.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Queues a report; never fails the caller (a queue error is logged as a warning).
    pub(crate) fn enqueue(&self, report: &Report) {
        let pushed = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(report);
        match pushed {
            Ok(dropped) => {
                metrics::counter!("spike_report_queued_total").increment(1);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "the error report queue is full; dropped the oldest reports"
                    );
                }
                self.queued.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "could not queue an error report"),
        }
    }

    fn with_queue<T>(&self, f: impl FnOnce(&mut Queue) -> Result<T, ReportError>) -> Option<T> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        match f(&mut queue) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "the error report queue failed");
                None
            }
        }
    }
}

/// Starts error reporting: see [`Reporter::start`].
#[derive(Debug)]
pub struct Reporter;

impl Reporter {
    /// Opens the queue (moving a corrupt one aside), loads or creates the salt, and spawns the
    /// sender on the current tokio runtime. Returns the layer to add to the app's subscriber
    /// and the handle that switches servers and rooms.
    ///
    /// Errors: [`ReportError::Queue`], [`ReportError::Salt`], and [`ReportError::NoRuntime`]
    /// outside a tokio runtime.
    pub fn start(config: ReporterConfig) -> Result<(ReportLayer, ReportHandle), ReportError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ReportError::NoRuntime)?;
        Self::start_on(config, &runtime)
    }

    /// [`Reporter::start`] with the sender spawned on `runtime` (e.g. the desktop shell's
    /// `tauri::async_runtime`), callable from any thread.
    ///
    /// Errors: [`ReportError::Queue`], [`ReportError::Salt`].
    pub fn start_on(
        config: ReporterConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(ReportLayer, ReportHandle), ReportError> {
        let queue = Queue::open(&config.queue_path, config.limits)?;
        let hasher = RoomHasher::load_or_create(&salt_path(&config.queue_path))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            hasher,
            version: cap(&config.version, MAX_VERSION_BYTES),
            os: cap(&os(), MAX_VERSION_BYTES),
            room: RwLock::new(None),
            queued: Notify::new(),
        });
        let (target_tx, target_rx) = watch::channel(config.target);
        let task = runtime.spawn(send_loop(shared.clone(), target_rx, config.sender));
        Ok((
            ReportLayer {
                shared: shared.clone(),
            },
            ReportHandle {
                shared,
                target: target_tx,
                task,
            },
        ))
    }
}

/// `<queue file>.salt`.
pub fn salt_path(queue_path: &Path) -> PathBuf {
    let mut path = queue_path.as_os_str().to_owned();
    path.push(".salt");
    PathBuf::from(path)
}

/// Steers a running reporter. Dropping it stops the sender (queued reports stay in the file
/// for the next start).
#[derive(Debug)]
pub struct ReportHandle {
    shared: Arc<Shared>,
    target: watch::Sender<Option<Target>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl ReportHandle {
    /// Sends queued and future reports to `target` (`None`: keep queueing). An attempt in
    /// flight to the previous target is abandoned and its report sent again to the new one.
    pub fn set_target(&self, target: Option<Target>) {
        self.target.send_replace(target);
    }

    /// The room whose anonymised id goes with reports of events that name none (`None`: no
    /// room).
    pub fn set_room(&self, room: Option<&str>) {
        *self.shared.room.write().unwrap_or_else(|p| p.into_inner()) = room.map(str::to_owned);
    }

    /// The anonymised id reports carry for `room`.
    pub fn room_id(&self, room: &str) -> String {
        self.shared.hasher.room_id(room)
    }

    /// Queues a report directly (for errors that are not `tracing` events, e.g. a panic hook).
    pub fn report(&self, report: &Report) {
        self.shared.enqueue(report);
    }

    /// How many reports wait in the queue (0 also when the queue cannot be read).
    pub fn queued(&self) -> u64 {
        self.shared.with_queue(|q| q.len()).unwrap_or(0)
    }

    /// How many reports were dropped for `reason` over the queue file's life.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.shared.with_queue(|q| q.dropped(reason)).unwrap_or(0)
    }

    /// Waits until the queue is empty or `timeout` passes; true when it emptied.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.queued() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the sender now; queued reports stay in the file.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for ReportHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one attempt ended, when it is final.
enum Delivered {
    /// 2xx: the server has it.
    Stored,
    /// A 4xx that no retry can fix.
    Refused(StatusCode, String),
    /// 401/403: the token is missing, expired or wrong; wait for a new target.
    Unauthorized(StatusCode, String),
}

/// A failed attempt worth retrying.
#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error("{0}")]
    Network(String),
    #[error("HTTP {status}")]
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
}

impl Transient {
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Transient::Status { retry_after, .. } => *retry_after,
            Transient::Network(_) => None,
        }
    }
}

async fn attempt(
    client: &reqwest::Client,
    endpoint: &Url,
    token: Option<&str>,
    body: &str,
) -> Result<Delivered, Transient> {
    let mut request = client
        .post(endpoint.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    metrics::counter!("spike_report_attempts_total").increment(1);
    let response = request
        .send()
        .await
        .map_err(|e| Transient::Network(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(Delivered::Stored);
    }
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        return Err(Transient::Status {
            status,
            retry_after: spike_store::retry_after(response.headers()),
        });
    }
    // The server's reason names the field; keep a bounded part of it for the log.
    let reason = cap(&response.text().await.unwrap_or_default(), 512);
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Ok(Delivered::Unauthorized(status, reason));
    }
    Ok(Delivered::Refused(status, reason))
}

async fn send_loop(
    shared: Arc<Shared>,
    mut target_rx: watch::Receiver<Option<Target>>,
    options: SenderOptions,
) {
    // reqwest is built without a default crypto provider (so aws-lc-sys is never compiled);
    // installing ours fails harmlessly when one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the HTTP client; error reports stay queued");
            return;
        }
    };
    loop {
        let target = target_rx.borrow_and_update().clone();
        let Some(target) = target else {
            if target_rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let endpoint = match target.endpoint() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "error reports stay queued");
                if target_rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(next) = shared.with_queue(|q| q.oldest()) else {
            // The queue cannot be read; try again later rather than spin.
            tokio::time::sleep(options.max_backoff).await;
            continue;
        };
        let Some(next) = next else {
            tokio::select! {
                () = shared.queued.notified() => {}
                changed = target_rx.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(options.min_backoff)
            .with_max_delay(options.max_backoff)
            .without_max_times()
            .with_jitter();
        let max_retry_after = options.max_retry_after;
        let token = target.token.as_deref();
        let send = (|| attempt(&client, &endpoint, token, &next.body))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .adjust(move |e: &Transient, delay| match (e.retry_after(), delay) {
                (Some(wait), Some(_)) => Some(wait.min(max_retry_after)),
                (None, delay) => delay,
                (Some(_), None) => None,
            })
            .notify(|e, delay| {
                tracing::debug!(error = %e, ?delay, "an error report could not be sent; retrying");
            });
        let outcome = tokio::select! {
            outcome = send => outcome,
            changed = target_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        match outcome {
            Ok(Delivered::Stored) => {
                // Counted first, so whoever sees the queue empty also sees the count.
                metrics::counter!("spike_report_sent_total").increment(1);
                shared.with_queue(|q| q.remove(next.id));
            }
            Ok(Delivered::Refused(status, reason)) => {
                tracing::warn!(%status, %reason, "the server refused an error report; dropped it");
                shared.with_queue(|q| q.drop_report(next.id, DropReason::Refused));
            }
            Ok(Delivered::Unauthorized(status, reason)) => {
                tracing::warn!(
                    %status,
                    %reason,
                    "the server refused the token for error reports; they stay queued until the \
                     server or token changes"
                );
                if target_rx.changed().await.is_err() {
                    return;
                }
            }
            // Only reachable if the backoff ever gives up; keep the report for later.
            Err(e) => {
                tracing::debug!(error = %e, "giving up on an error report for now");
                tokio::time::sleep(options.max_backoff).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_from_a_rooms_base_url() -> Result<(), ReportError> {
        let t = Target::from_rooms_url("ws://127.0.0.1:8080/rooms", None)?;
        assert_eq!(t.endpoint()?.as_str(), "http://127.0.0.1:8080/v1/reports");
        let t = Target::from_rooms_url("wss://spike.example.com/team/rooms/", None)?;
        assert_eq!(
            t.endpoint()?.as_str(),
            "https://spike.example.com/team/v1/reports"
        );
        let t = Target::from_rooms_url("http://h:1", None)?;
        assert_eq!(t.endpoint()?.as_str(), "http://h:1/v1/reports");
        assert!(matches!(
            Target::from_rooms_url("ftp://h/rooms", None),
            Err(ReportError::InvalidServer { .. })
        ));
        assert!(Target::from_rooms_url("not a url", None).is_err());
        Ok(())
    }
}
