//! The accept loop: which TCP connections are admitted, HTTP/1.1 on each with every request head
//! timed, WebSocket upgrades, and graceful shutdown.
//!
//! Admission keeps the server inside its file descriptors. At start the soft `RLIMIT_NOFILE` is
//! raised to the hard one; the admission of each listener then caps
//! - every open TCP connection, HTTP or WebSocket, at [`Limits::max_connections`] (default: the
//!   descriptor limit less [`FD_HEADROOM`], kept for room files, the store and logs);
//! - connections that have not (yet) become WebSockets ("plain" HTTP) at three quarters of
//!   that, so a quarter always stays for room members: a flood of idle HTTP connections can
//!   hold at most the plain share, and WebSockets already open keep theirs;
//! - plain connections per client address (an IPv6 address counts by its /64, see
//!   [`peer_key`]) at [`Limits::max_http_connections_per_peer`] (default: a quarter of the plain
//!   share).
//!
//! A connection over a cap is closed at once and counted (`connections`,
//! `http_connections_per_peer`). Every request head, the first and every later one on a
//! kept-alive connection, must arrive whole within [`Limits::handshake_timeout`] of the server
//! starting to wait for it (hyper's `header_read_timeout`): an idle kept-alive connection is
//! closed after that long, and so is one that dribbles a head (counted as
//! `handshake_timeout`).

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower_service::Service as _;

use crate::limits::{refused, LimitKind};
use crate::{Inner, Limits};

/// File descriptors kept out of the connection cap for everything else the server opens.
pub const FD_HEADROOM: usize = 64;

/// The key per-address limits count by: an IPv4 address as it is, an IPv6 address by its /64
/// (one host usually holds a whole /64, so counting each address alone would let it multiply
/// its limits by 2⁶⁴), and an IPv4-mapped IPv6 address as its IPv4 address.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

/// Raises the soft open-file limit to the hard one and returns it (on Unix; elsewhere, and
/// when it cannot be read, `None`).
fn raise_nofile_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => return Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(e) => tracing::warn!(error = %e, "could not read or raise the open-file limit"),
        }
    }
    None
}

/// The connection caps of one serving listener (see the module docs).
#[derive(Debug)]
pub(crate) struct Admission {
    total: Arc<Semaphore>,
    plain: Arc<Semaphore>,
    per_peer: Arc<Mutex<std::collections::HashMap<IpAddr, usize>>>,
    max_total: usize,
    max_plain: usize,
    max_per_peer: usize,
}

/// What an admitted connection holds until it closes.
#[derive(Debug)]
pub(crate) struct Slot {
    _total: OwnedSemaphorePermit,
    /// Released when the connection becomes a WebSocket.
    plain: Arc<Mutex<Option<PlainSlot>>>,
}

/// A plain connection's share: its permit and its count for its peer.
#[derive(Debug)]
pub(crate) struct PlainSlot {
    _permit: OwnedSemaphorePermit,
    peer: IpAddr,
    per_peer: Arc<Mutex<std::collections::HashMap<IpAddr, usize>>>,
}

impl Drop for PlainSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.per_peer.lock() {
            if let Some(n) = counts.get_mut(&self.peer) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&self.peer);
                }
            }
        }
    }
}

impl Admission {
    /// Caps from `limits` and the process's descriptor limit (raised to its hard limit here).
    pub(crate) fn new(limits: &Limits) -> Self {
        let max_total = limits
            .max_connections
            .or_else(|| raise_nofile_limit().map(|n| n.saturating_sub(FD_HEADROOM)))
            .unwrap_or(8192)
            .max(16);
        let max_plain = max_total - max_total / 4;
        let max_per_peer = limits
            .max_http_connections_per_peer
            .unwrap_or(max_plain / 4)
            .max(4);
        tracing::info!(
            connections = max_total,
            http = max_plain,
            http_per_peer = max_per_peer,
            "connection limits"
        );
        Self {
            total: Arc::new(Semaphore::new(max_total)),
            plain: Arc::new(Semaphore::new(max_plain)),
            per_peer: Arc::default(),
            max_total,
            max_plain,
            max_per_peer,
        }
    }

    /// A slot for a new connection from `ip`, or the refusal's kind and reason.
    fn admit(&self, ip: IpAddr) -> Result<Slot, (LimitKind, String)> {
        let full = |what: &str, n: usize| {
            (
                LimitKind::Connections,
                format!("the server holds its limit of {n} {what}"),
            )
        };
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| full("connections", self.max_total))?;
        let permit = self
            .plain
            .clone()
            .try_acquire_owned()
            .map_err(|_| full("HTTP connections", self.max_plain))?;
        let peer = peer_key(ip);
        {
            let mut counts = self.per_peer.lock().map_err(|_| full("connections", 0))?;
            let n = counts.entry(peer).or_insert(0);
            if *n >= self.max_per_peer {
                return Err((
                    LimitKind::PeerHttpConnections,
                    format!(
                        "at most {} open HTTP connections per client address",
                        self.max_per_peer
                    ),
                ));
            }
            *n += 1;
        }
        Ok(Slot {
            _total: total,
            plain: Arc::new(Mutex::new(Some(PlainSlot {
                _permit: permit,
                peer,
                per_peer: self.per_peer.clone(),
            }))),
        })
    }
}

/// A TCP stream that holds its connection's [`Slot`] for as long as it is open, through an
/// upgrade to a WebSocket too.
struct SlotIo {
    io: tokio::net::TcpStream,
    _slot: Slot,
}

impl AsyncRead for SlotIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SlotIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `signal` resolves, then stops accepting, lets every
/// HTTP connection finish its request, and returns when they are closed. (WebSockets are closed
/// by their rooms, on the server's shutdown flag.)
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    inner: Arc<Inner>,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    let admission = Admission::new(&inner.config.limits);
    let handshake = inner.config.limits.handshake_timeout;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a receiver; when all are gone, the connections are closed.
    let (open_tx, open_rx) = watch::channel(());
    let mut signal = pin!(signal);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // The peer gave up before we accepted: nothing to do.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) => continue,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let slot = match admission.admit(addr.ip()) {
            Ok(slot) => slot,
            Err((kind, reason)) => {
                refused(kind, Some(addr.ip()), &reason);
                drop(stream);
                continue;
            }
        };
        let plain = slot.plain.clone();
        let io = TokioIo::new(SlotIo {
            io: stream,
            _slot: slot,
        });
        let service = connection_service(router.clone(), addr, plain);
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake)
                .serve_connection(io, service)
                .with_upgrades();
            let mut conn = pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let served = tokio::select! {
                served = conn.as_mut() => served,
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                if e.is_timeout() {
                    let reason = format!(
                        "no complete HTTP request head within the handshake timeout of {} ms",
                        handshake.as_millis()
                    );
                    refused(LimitKind::HandshakeTimeout, Some(addr.ip()), &reason);
                } else {
                    tracing::debug!(peer = %addr.ip(), error = %e, "connection ended with an error");
                }
            }
            drop(open);
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(open_rx);
    open_tx.closed().await;
}

/// The router as one connection's hyper service: each request carries the peer's address (for
/// axum's `ConnectInfo`), and a `101 Switching Protocols` answer releases the connection's
/// plain share.
fn connection_service(
    router: axum::Router,
    addr: SocketAddr,
    plain: Arc<Mutex<Option<PlainSlot>>>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        let mut router = router.clone();
        let plain = plain.clone();
        async move {
            let response = router.call(req.map(axum::body::Body::new)).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                if let Ok(mut plain) = plain.lock() {
                    plain.take();
                }
            }
            Ok(response)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
        assert_eq!(peer_key(a), "2001:db8:1:2::".parse::<IpAddr>().expect("ip"));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(peer_key(mapped), "192.0.2.7".parse::<IpAddr>().expect("ip"));
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(peer_key(v4), v4);
    }

    #[test]
    fn admission_caps_plain_connections_per_peer_and_keeps_a_reserve() {
        let limits = Limits {
            max_connections: Some(16),
            max_http_connections_per_peer: Some(5),
            ..Limits::default()
        };
        let admission = Admission::new(&limits);
        let (one, two): (IpAddr, IpAddr) = (
            "127.0.0.2".parse().expect("ip"),
            "127.0.0.3".parse().expect("ip"),
        );
        let mut held: Vec<Slot> = (0..5).filter_map(|_| admission.admit(one).ok()).collect();
        assert_eq!(held.len(), 5);
        assert!(matches!(
            admission.admit(one),
            Err((LimitKind::PeerHttpConnections, _))
        ));
        // Another address still gets in, up to the plain share (12 of 16).
        held.extend((0..5).filter_map(|_| admission.admit(two).ok()));
        let third: IpAddr = "127.0.0.4".parse().expect("ip");
        held.extend((0..5).filter_map(|_| admission.admit(third).ok()));
        assert_eq!(held.len(), 12);
        assert!(matches!(
            admission.admit("127.0.0.5".parse().expect("ip")),
            Err((LimitKind::Connections, _))
        ));
        // Connections that become WebSockets give their plain share back: the reserve and the
        // freed shares take new connections, up to the total.
        for slot in &held[..4] {
            if let Ok(mut plain) = slot.plain.lock() {
                plain.take();
            }
        }
        let more: Vec<Slot> = (0..6)
            .filter_map(|i| {
                admission
                    .admit(format!("127.0.1.{i}").parse().expect("ip"))
                    .ok()
            })
            .collect();
        assert_eq!(more.len(), 4);
        drop(more);
        // A closed connection frees its peer's count.
        held.truncate(0);
        assert!(admission.admit(one).is_ok());
    }
}
