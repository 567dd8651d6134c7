//! One WebSocket connection: admission, the reader (client → room) and the writer
//! (room → client, plus keep-alive pings).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::auth::Role;
use crate::limits::{self, LimitKind, Subject, TokenSlot};
use crate::room::{self, ConnId, Outbox, Outgoing, RoomHandle, RoomMsg};
use crate::{Access, Inner};

/// Releases a peer's connection slot when dropped.
struct PeerSlot {
    inner: Arc<Inner>,
    ip: IpAddr,
    /// The token's slot, released with this one.
    _token: Option<TokenSlot>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.inner.peers();
        if let Some(n) = peers.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

pub(crate) async fn upgrade(
    ws: WebSocketUpgrade,
    Path(room): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = spike_collab::validate_room(&room) {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    // The address's connection rate comes first: it is the cheapest filter, and it also bounds
    // how fast one address can try tokens.
    // Per-address limits count an IPv6 client by its /64.
    let peer = crate::listen::peer_key(addr.ip());
    let mut who = Subject {
        ip: peer,
        token: None,
    };
    if let Err(refusal) = inner.guards.connect(who) {
        return *refusal;
    }
    // A token for a prefix of rooms (`team-*`) can name rooms that do not exist yet.
    let mut prefix_token = false;
    let role = match &inner.config.access {
        Access::Open => Role::Edit,
        Access::Tokens(key) => {
            let token = params
                .get("token")
                .map(String::as_str)
                .or_else(|| bearer(&headers));
            match key.verify(token, &room) {
                Ok(claims) => {
                    tracing::debug!(room, peer = %addr.ip(), role = claims.role.as_str(), name = claims.name.as_deref().unwrap_or(""), "token accepted");
                    who.token = token.map(|t| inner.guards.token_key(t));
                    prefix_token = claims.room.ends_with('*');
                    claims.role
                }
                Err(refusal) => {
                    // The reason only: the token itself never reaches the logs.
                    tracing::warn!(room, peer = %addr.ip(), reason = refusal.kind(), "refused a connection: {refusal}");
                    metrics::counter!("spike_auth_refusals_total", "reason" => refusal.kind())
                        .increment(1);
                    return (refusal.status(), refusal.to_string()).into_response();
                }
            }
        }
    };
    let template = params.get("template").cloned();
    if let Some(t) = &template {
        if !inner.config.templates.iter().any(|x| &x.name == t) {
            return (StatusCode::BAD_REQUEST, format!("unknown template {t:?}")).into_response();
        }
    }
    if *inner.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if let (true, Some(token)) = (prefix_token, who.token) {
        if let Err(reason) = admit_new_room(&inner, token, &room) {
            limits::refused(LimitKind::TokenRooms, Some(who.ip), &reason);
            return (StatusCode::FORBIDDEN, reason).into_response();
        }
    }
    if who.token.is_some() {
        // Checked apart from the address's rate so that a refused token never spends it.
        if let Err(refusal) = inner.guards.connect_token(who) {
            return *refusal;
        }
    }
    let limits = &inner.config.limits;
    let token_slot = match who.token {
        Some(token) => match TokenSlot::acquire(&inner, token, limits.max_connections_per_token) {
            Some(slot) => Some(slot),
            None => {
                let reason = format!(
                    "at most {} open connections per token",
                    limits.max_connections_per_token
                );
                return limits::too_many(
                    LimitKind::TokenConnections,
                    addr.ip(),
                    Duration::from_secs(1),
                    reason,
                );
            }
        },
        None => None,
    };
    let slot = {
        let mut peers = inner.peers();
        let n = peers.entry(peer).or_insert(0);
        if *n >= limits.max_rooms_per_peer {
            let reason = format!(
                "at most {} open connections (rooms) per client address",
                limits.max_rooms_per_peer
            );
            return limits::too_many(
                LimitKind::IpConnections,
                addr.ip(),
                Duration::from_secs(1),
                reason,
            );
        }
        *n += 1;
        PeerSlot {
            inner: inner.clone(),
            ip: peer,
            _token: token_slot,
        }
    };
    // Seeding a room from a template writes to it: not for `view` connections.
    let template = template.filter(|_| role != Role::View);
    let max = limits.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!(parent: None, "conn", room = %room, conn, peer = %who.ip, role = role.as_str());
            run(inner, room, conn, who, template, role, socket, slot).instrument(span)
        })
}

/// Counts a room that `token` (a prefix token, by its keyed hash) is about to create, and
/// refuses it past `Limits::max_rooms_per_token`; rooms that exist cost nothing.
fn admit_new_room(inner: &Inner, token: u64, room: &str) -> Result<(), String> {
    if room::exists(inner, room) {
        return Ok(());
    }
    let max = inner.config.limits.max_rooms_per_token;
    let mut created = inner.room_creations();
    let rooms = created.entry(token).or_default();
    if rooms.contains(room) {
        return Ok(());
    }
    if rooms.len() >= max {
        return Err(format!(
            "this token has created its limit of {max} rooms; open an existing one"
        ));
    }
    rooms.insert(room.to_owned());
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The close reason of a connection the room dropped for not reading.
const SLOW_REASON: &str = "too slow: its send queue reached the limit";

/// How long a connection may wait to join its room before it is refused (close 1013).
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Joins the room, retrying when it raced with the room unloading.
async fn join(
    inner: &Arc<Inner>,
    room: &str,
    conn: ConnId,
    template: Option<String>,
    role: Role,
    outbox: Outbox,
) -> Result<RoomHandle, String> {
    for _ in 0..50 {
        if *inner.shutdown.borrow() {
            return Err("the server is shutting down".into());
        }
        let (inner2, name) = (inner.clone(), room.to_owned());
        let handle = tokio::task::spawn_blocking(move || room::handle(&inner2, &name))
            .await
            .map_err(|e| format!("room loader failed: {e}"))?
            .map_err(|e| {
                tracing::error!(room, error = %e, "could not load the room");
                "the room could not be loaded".to_owned()
            })?;
        let (reply, answer) = oneshot::channel();
        let msg = RoomMsg::Join {
            conn,
            template: template.clone(),
            read_only: role == Role::View,
            outbox: outbox.clone(),
            reply,
        };
        if handle.tx.send(msg).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        match answer.await {
            Ok(Ok(())) => return Ok(handle),
            Ok(Err(reason)) => return Err(reason),
            // The room was unloading; its successor starts on the next look-up.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    Err("the room kept unloading".into())
}

/// Counts an open connection in `spike_connections` while alive.
struct Open;

impl Open {
    fn new() -> Self {
        metrics::gauge!("spike_connections").increment(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("spike_connections").decrement(1.0);
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    inner: Arc<Inner>,
    room: String,
    conn: ConnId,
    who: Subject,
    template: Option<String>,
    role: Role,
    socket: WebSocket,
    _slot: PeerSlot,
) {
    let limits = inner.config.limits.clone();
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(limits.max_queued_frames);
    let outbox = Outbox::new(out_tx);
    let queued = outbox.queued.clone();
    let mut dropped_w = outbox.dropped.subscribe();
    let dropped_r = outbox.dropped.subscribe();
    let (mut sink, mut stream) = socket.split();
    // The room holds the only sender of `out_tx`: when it drops this connection (a full queue,
    // unloading), the writer sees the queue end and closes the socket, even if the room's close
    // frame did not fit in the queue. The read side ends it through `close_tx`.
    let (close_tx, mut close_rx) = oneshot::channel::<(u16, String)>();
    // The client waits on this join for its first frame; a room that cannot take it in time
    // (its thread stuck on storage) is refused rather than left silent.
    let joined = tokio::time::timeout(
        JOIN_TIMEOUT,
        join(&inner, &room, conn, template, role, outbox),
    )
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "the room did not answer within {} s",
            JOIN_TIMEOUT.as_secs()
        ))
    });
    let handle = match joined {
        Ok(h) => h,
        Err(reason) => {
            tracing::warn!(%reason, "join refused");
            let _ = sink
                .send(WsMessage::Close(Some(CloseFrame {
                    code: 1013,
                    reason: reason.into(),
                })))
                .await;
            return;
        }
    };

    let _open = Open::new();
    tracing::info!("connection opened");
    let idle = limits.idle_timeout;
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(idle / 3);
        ping.tick().await;
        loop {
            tokio::select! {
                biased;
                close = &mut close_rx => {
                    // Frames already queued go out before the close frame.
                    while let Ok(Outgoing::Frame(frame)) = out_rx.try_recv() {
                        if sink.send(WsMessage::Binary(frame)).await.is_err() {
                            return;
                        }
                    }
                    if let Ok((code, reason)) = close {
                        let _ = sink.send(WsMessage::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    }
                    return;
                }
                out = out_rx.recv() => match out {
                    Some(Outgoing::Frame(frame)) => {
                        // Counted when queued to the socket, so a client that has read a frame
                        // always finds it counted.
                        let len = frame.len();
                        metrics::counter!("spike_bytes_out_total").increment(len as u64);
                        // A client that does not read blocks this send; when the room drops
                        // it for that, the send is abandoned and the socket closed.
                        let dropped = async {
                            let _ = dropped_w.wait_for(|d| *d).await;
                        };
                        let sent = tokio::select! {
                            sent = sink.send(WsMessage::Binary(frame)) => Some(sent),
                            () = dropped => None,
                        };
                        let Some(sent) = sent else {
                            // The frame stays whole in the socket's buffer; a close frame
                            // follows it if the client reads within a grace period.
                            let close = CloseFrame { code: 1013, reason: SLOW_REASON.into() };
                            let grace = idle / 3;
                            let _ = tokio::time::timeout(grace, sink.send(WsMessage::Close(Some(close)))).await;
                            return;
                        };
                        // Written to the socket (or failed): no longer held for this client.
                        queued.fetch_sub(len, Ordering::AcqRel);
                        if sent.is_err() {
                            return;
                        }
                    }
                    Some(Outgoing::Close(code, reason)) => {
                        let _ = sink.send(WsMessage::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        return;
                    }
                    None => {
                        // The room let go of this connection without a close frame reaching the
                        // queue (it was full): close it here so the client reconnects.
                        let reason = "the room dropped this connection (its send queue was full or the room stopped)";
                        let _ = sink.send(WsMessage::Close(Some(CloseFrame { code: 1013, reason: reason.into() }))).await;
                        return;
                    }
                },
                _ = ping.tick() => {
                    if sink.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }.in_current_span());

    let (code, reason) = tokio::select! {
        ended = read_loop(&inner, &handle, conn, who, &mut stream, idle, &limits) => ended,
        () = async move {
            let mut dropped = dropped_r;
            let _ = dropped.wait_for(|d| *d).await;
        } => (1013, SLOW_REASON.to_owned()),
    };
    tracing::info!(code, %reason, "connection closed");
    let _ = close_tx.send((code, reason));
    let _ = handle.tx.send(RoomMsg::Leave { conn }).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

async fn read_loop(
    inner: &Inner,
    handle: &RoomHandle,
    conn: ConnId,
    who: Subject,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    idle: Duration,
    limits: &crate::Limits,
) -> (u16, String) {
    loop {
        let next = match tokio::time::timeout(idle, stream.next()).await {
            Ok(n) => n,
            Err(_) => {
                let reason = format!("idle for {} ms (the idle timeout)", idle.as_millis());
                limits::refused(LimitKind::IdleTimeout, Some(who.ip), &reason);
                return (1000, reason);
            }
        };
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("too long") || text.contains("limit") {
                    let reason = format!(
                        "frame larger than the limit of {} bytes",
                        limits.max_frame_bytes
                    );
                    tracing::debug!(error = %text, "frame over the size limit");
                    limits::refused(LimitKind::FrameSize, Some(who.ip), &reason);
                    return (1009, reason);
                }
                return (1002, format!("receive: {text}"));
            }
            None => return (1000, "client closed the socket".into()),
        };
        let received = std::time::Instant::now();
        let size = match &msg {
            WsMessage::Binary(data) => data.len(),
            WsMessage::Text(text) => text.len(),
            _ => 0,
        };
        if size > 0 {
            metrics::counter!("spike_bytes_in_total").increment(size as u64);
            if let Err(refusal) = inner.guards.message(who, size) {
                return refusal;
            }
        }
        match msg {
            WsMessage::Binary(data) => {
                if handle
                    .tx
                    .send(RoomMsg::Frame {
                        conn,
                        data: data.to_vec(),
                        received,
                    })
                    .await
                    .is_err()
                {
                    return (1001, "room closed".into());
                }
            }
            WsMessage::Text(_) => {
                let _ = handle
                    .tx
                    .send(RoomMsg::Bad {
                        conn,
                        reason: "text frame (y-websocket sends binary frames only)".into(),
                    })
                    .await;
            }
            WsMessage::Close(_) => return (1000, "client closed".into()),
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
        }
    }
}
