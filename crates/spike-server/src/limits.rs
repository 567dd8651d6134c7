//! Abuse limits: rates (governor's GCRA, keyed per client address and per token), concurrent
//! connections, request body size and the HTTP handshake deadline, and how a refusal is told,
//! logged and counted.
//!
//! Every refusal is counted in `spike_limit_refusals_total{kind=…}` ([`LimitKind::as_str`]) and
//! logged at `warn` with the limit and the client address (never a token). An upgrade that is
//! refused gets HTTP 429 with `Retry-After` (rates and concurrency) or 413 (body size) and the
//! reason as its body; an open connection is closed with 1008 (policy violation) for a rate,
//! 1009 for a frame over the size limit, 1007 for repeated malformed messages, 1013 (try again
//! later) for a full room or a client too slow to read, and 1000 for idleness, each with a
//! reason naming the limit.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::Inner;

/// A sustained rate with a burst allowance: `per_second` cells a second on average, at most
/// `burst` at once (GCRA, as governor implements it). A zero is treated as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained cells (connections, messages or bytes) per second.
    pub per_second: u32,
    /// Cells allowed at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// `per_second` a second, bursts of `burst`.
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    fn quota(self) -> Quota {
        let nz = |n: u32| std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
        Quota::per_second(nz(self.per_second)).allow_burst(nz(self.burst))
    }
}

/// Which limit refused something: the `kind` label of `spike_limit_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// New connections from one client address per second (`ip_connection_rate`, HTTP 429).
    IpConnectionRate,
    /// New connections with one token per second (`token_connection_rate`, HTTP 429).
    TokenConnectionRate,
    /// Open connections from one client address (`ip_connections`, HTTP 429).
    IpConnections,
    /// Open connections with one token (`token_connections`, HTTP 429).
    TokenConnections,
    /// Connections in one room (`room_connections`, close 1013).
    RoomConnections,
    /// WebSocket messages per second from one client address (`ip_message_rate`, close 1008).
    IpMessageRate,
    /// WebSocket messages per second with one token (`token_message_rate`, close 1008).
    TokenMessageRate,
    /// WebSocket payload bytes per second from one client address (`ip_byte_rate`, close 1008).
    IpByteRate,
    /// WebSocket payload bytes per second with one token (`token_byte_rate`, close 1008).
    TokenByteRate,
    /// A WebSocket message or frame over the size limit (`frame_size`, close 1009).
    FrameSize,
    /// An HTTP request body over the size limit (`body_size`, HTTP 413).
    BodySize,
    /// A TCP connection that did not send an HTTP request head in time, the first or a later
    /// one on a kept-alive connection (`handshake_timeout`, dropped).
    HandshakeTimeout,
    /// A TCP connection over the server's connection caps (`max_connections` and its HTTP
    /// share, see [`crate::listen`]; closed at once).
    Connections,
    /// A TCP connection over `max_http_connections_per_peer` (closed at once).
    PeerHttpConnections,
    /// An update to a room over `max_room_bytes` (permission denied, the connection stays).
    RoomSize,
    /// An update that would take a room's updates waiting for a missing dependency over
    /// `max_pending_bytes` (dropped, the connection stays).
    PendingUpdates,
    /// A prefix token (`team-*`) creating more than `max_rooms_per_token` rooms (HTTP 403).
    TokenRooms,
    /// A connection that sent nothing for too long (`idle_timeout`, close 1000).
    IdleTimeout,
    /// Too many malformed messages on one connection (`bad_messages`, close 1007).
    BadMessages,
    /// A client that did not read its frames fast enough (`slow_client`, close 1013).
    SlowClient,
    /// Error reports per second from one client address (`report_rate`, HTTP 429).
    ReportRate,
}

impl LimitKind {
    /// Every kind, for publishing each series from the first scrape.
    pub const ALL: [LimitKind; 21] = [
        LimitKind::IpConnectionRate,
        LimitKind::TokenConnectionRate,
        LimitKind::IpConnections,
        LimitKind::TokenConnections,
        LimitKind::RoomConnections,
        LimitKind::IpMessageRate,
        LimitKind::TokenMessageRate,
        LimitKind::IpByteRate,
        LimitKind::TokenByteRate,
        LimitKind::FrameSize,
        LimitKind::BodySize,
        LimitKind::HandshakeTimeout,
        LimitKind::Connections,
        LimitKind::PeerHttpConnections,
        LimitKind::RoomSize,
        LimitKind::PendingUpdates,
        LimitKind::TokenRooms,
        LimitKind::IdleTimeout,
        LimitKind::BadMessages,
        LimitKind::SlowClient,
        LimitKind::ReportRate,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::IpConnectionRate => "ip_connection_rate",
            LimitKind::TokenConnectionRate => "token_connection_rate",
            LimitKind::IpConnections => "ip_connections",
            LimitKind::TokenConnections => "token_connections",
            LimitKind::RoomConnections => "room_connections",
            LimitKind::IpMessageRate => "ip_message_rate",
            LimitKind::TokenMessageRate => "token_message_rate",
            LimitKind::IpByteRate => "ip_byte_rate",
            LimitKind::TokenByteRate => "token_byte_rate",
            LimitKind::FrameSize => "frame_size",
            LimitKind::BodySize => "body_size",
            LimitKind::HandshakeTimeout => "handshake_timeout",
            LimitKind::Connections => "connections",
            LimitKind::PeerHttpConnections => "http_connections_per_peer",
            LimitKind::RoomSize => "room_size",
            LimitKind::PendingUpdates => "pending_updates",
            LimitKind::TokenRooms => "token_rooms",
            LimitKind::IdleTimeout => "idle_timeout",
            LimitKind::BadMessages => "bad_messages",
            LimitKind::SlowClient => "slow_client",
            LimitKind::ReportRate => "report_rate",
        }
    }
}

/// Logs and counts one refusal. `reason` is what the client is told.
pub(crate) fn refused(kind: LimitKind, peer: Option<IpAddr>, reason: &str) {
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    tracing::warn!(kind = kind.as_str(), peer, %reason, "limit reached");
    metrics::counter!("spike_limit_refusals_total", "kind" => kind.as_str()).increment(1);
}

/// HTTP 429 with `Retry-After` (whole seconds, at least 1) and the reason as the body.
pub(crate) fn too_many(
    kind: LimitKind,
    peer: IpAddr,
    retry_after: Duration,
    reason: String,
) -> Response {
    refused(kind, Some(peer), &reason);
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, reason).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

type Keyed<K> = RateLimiter<K, HashMapStateStore<K>, DefaultClock>;

/// One rate limiter per limit, keyed by client address or by token.
struct Limiter<K: std::hash::Hash + Eq + Clone> {
    rate: Rate,
    limiter: Keyed<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    fn new(rate: Option<Rate>) -> Option<Self> {
        rate.map(|rate| Self {
            rate,
            limiter: RateLimiter::hashmap(rate.quota()),
        })
    }

    /// `Err(wait)` when `n` cells do not fit now; a request larger than the burst never fits
    /// and waits a second.
    fn check(&self, key: &K, n: u32) -> Result<(), Duration> {
        let n = std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
        match self.limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Who a connection counts against: its client address, and its token when it has one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject {
    pub(crate) ip: IpAddr,
    /// A keyed hash of the token string (the token itself is never kept).
    pub(crate) token: Option<u64>,
}

/// The server's limiters and per-token connection counts.
pub(crate) struct Guards {
    ip_connect: Option<Limiter<IpAddr>>,
    token_connect: Option<Limiter<u64>>,
    ip_messages: Option<Limiter<IpAddr>>,
    token_messages: Option<Limiter<u64>>,
    ip_bytes: Option<Limiter<IpAddr>>,
    token_bytes: Option<Limiter<u64>>,
    reports: Option<Limiter<IpAddr>>,
    token_conns: Mutex<HashMap<u64, usize>>,
    hasher: std::collections::hash_map::RandomState,
    checks: AtomicU64,
}

impl Guards {
    pub(crate) fn new(limits: &crate::Limits) -> Self {
        Self {
            ip_connect: Limiter::new(limits.ip_connection_rate),
            token_connect: Limiter::new(limits.token_connection_rate),
            ip_messages: Limiter::new(limits.ip_message_rate),
            token_messages: Limiter::new(limits.token_message_rate),
            ip_bytes: Limiter::new(limits.ip_byte_rate),
            token_bytes: Limiter::new(limits.token_byte_rate),
            reports: Limiter::new(limits.report_rate),
            token_conns: Mutex::default(),
            hasher: std::collections::hash_map::RandomState::new(),
            checks: AtomicU64::new(0),
        }
    }

    /// The key a token counts under: a hash with a per-process random key, so neither the
    /// token nor anything derived from it outside this process is kept.
    pub(crate) fn token_key(&self, token: &str) -> u64 {
        self.hasher.hash_one(token)
    }

    /// Checks the connection rates of a new upgrade; `Err` is the refusal to answer with.
    pub(crate) fn connect(&self, who: Subject) -> Result<(), Box<Response>> {
        // Keyed state grows with every address and token seen: prune what is back to a full
        // burst now and then.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.prune();
        }
        if let Some(l) = &self.ip_connect {
            if let Err(wait) = l.check(&who.ip, 1) {
                let reason = format!(
                    "connection rate limit: at most {} new connections a second per client address (burst {})",
                    l.rate.per_second, l.rate.burst
                );
                return Err(Box::new(too_many(
                    LimitKind::IpConnectionRate,
                    who.ip,
                    wait,
                    reason,
                )));
            }
        }
        Ok(())
    }

    /// Checks the connection rate of a token that was verified.
    pub(crate) fn connect_token(&self, who: Subject) -> Result<(), Box<Response>> {
        if let (Some(l), Some(token)) = (&self.token_connect, who.token) {
            if let Err(wait) = l.check(&token, 1) {
                let reason = format!(
                    "connection rate limit: at most {} new connections a second per token (burst {})",
                    l.rate.per_second, l.rate.burst
                );
                return Err(Box::new(too_many(
                    LimitKind::TokenConnectionRate,
                    who.ip,
                    wait,
                    reason,
                )));
            }
        }
        Ok(())
    }

    /// Checks one incoming WebSocket message of `bytes` bytes; `Err` is the close code and
    /// reason.
    pub(crate) fn message(&self, who: Subject, bytes: usize) -> Result<(), (u16, String)> {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let fail = |kind: LimitKind, what: &str, per: &str, rate: Rate| {
            let reason = format!(
                "{what} rate limit: over {} a second per {per}",
                rate.per_second
            );
            refused(kind, Some(who.ip), &reason);
            Err((1008, reason))
        };
        if let Some(l) = &self.ip_messages {
            if l.check(&who.ip, 1).is_err() {
                return fail(
                    LimitKind::IpMessageRate,
                    "message",
                    "client address",
                    l.rate,
                );
            }
        }
        if let (Some(l), Some(t)) = (&self.token_messages, who.token) {
            if l.check(&t, 1).is_err() {
                return fail(LimitKind::TokenMessageRate, "message", "token", l.rate);
            }
        }
        if let Some(l) = &self.ip_bytes {
            if l.check(&who.ip, n).is_err() {
                return fail(LimitKind::IpByteRate, "byte", "client address", l.rate);
            }
        }
        if let (Some(l), Some(t)) = (&self.token_bytes, who.token) {
            if l.check(&t, n).is_err() {
                return fail(LimitKind::TokenByteRate, "byte", "token", l.rate);
            }
        }
        Ok(())
    }

    /// Checks the report rate of a client address; `Err` is the refusal to answer with.
    pub(crate) fn report(&self, ip: IpAddr) -> Result<(), Box<Response>> {
        if let Some(l) = &self.reports {
            if let Err(wait) = l.check(&ip, 1) {
                let reason = format!(
                    "report rate limit: at most {} reports a second per client address (burst {})",
                    l.rate.per_second, l.rate.burst
                );
                return Err(Box::new(too_many(LimitKind::ReportRate, ip, wait, reason)));
            }
        }
        Ok(())
    }

    fn prune(&self) {
        if let Some(l) = &self.reports {
            l.prune();
        }
        if let Some(l) = &self.ip_connect {
            l.prune();
        }
        if let Some(l) = &self.token_connect {
            l.prune();
        }
        if let Some(l) = &self.ip_messages {
            l.prune();
        }
        if let Some(l) = &self.token_messages {
            l.prune();
        }
        if let Some(l) = &self.ip_bytes {
            l.prune();
        }
        if let Some(l) = &self.token_bytes {
            l.prune();
        }
    }

    fn token_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        self.token_conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A held connection slot of one token; released when dropped.
pub(crate) struct TokenSlot {
    inner: Arc<Inner>,
    token: u64,
}

impl TokenSlot {
    /// Takes a slot for `token`, or `None` when it already holds `max`.
    pub(crate) fn acquire(inner: &Arc<Inner>, token: u64, max: usize) -> Option<Self> {
        let mut conns = inner.guards.token_conns();
        let n = conns.entry(token).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            inner: inner.clone(),
            token,
        })
    }
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        let mut conns = self.inner.guards.token_conns();
        if let Some(n) = conns.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                conns.remove(&self.token);
            }
        }
    }
}

/// Refuses a request whose declared `Content-Length` is over [`crate::Limits::max_body_bytes`]
/// with 413 and the reason, before any handler runs. Bodies without a length are capped by
/// axum's `DefaultBodyLimit` (the same number) in the extractors that read them.
pub(crate) async fn body_limit(
    State(inner): State<Arc<Inner>>,
    req: Request,
    next: Next,
) -> Response {
    let max = inner.config.limits.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > max as u64) {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let reason = format!("request body of {len} bytes is over the limit of {max} bytes");
        refused(LimitKind::BodySize, peer, &reason);
        return (StatusCode::PAYLOAD_TOO_LARGE, reason).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let l = Limiter::<u8>::new(Some(Rate::new(1, 3))).expect("limiter");
        assert_eq!((0..3).filter(|_| l.check(&1, 1).is_ok()).count(), 3);
        let wait = l.check(&1, 1).expect_err("over the burst");
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another key has its own bucket; a request over the burst never fits.
        assert!(l.check(&2, 3).is_ok());
        assert_eq!(l.check(&3, 4), Err(Duration::from_secs(1)));
    }
}
