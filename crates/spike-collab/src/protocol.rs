//! The y-websocket wire protocol (y-protocols 1.x), over [`yrs::sync`].
//!
//! Each binary WebSocket frame carries one or more messages, each a varuint tag followed by its
//! body (lib0 encoding, as y-protocols' `sync.js`, `awareness.js` and `auth.js` write them):
//!
//! | tag | message | body |
//! |---|---|---|
//! | 0 | sync | varuint sub-tag: 0 step 1 (varbuf state vector), 1 step 2 (varbuf update), 2 update (varbuf update) |
//! | 1 | awareness | varbuf awareness update: varuint count, then (varuint client, varuint clock, varstring JSON) |
//! | 2 | auth | varuint 0 = permission denied + varstring reason (1 = granted) |
//! | 3 | query awareness | nothing |
//!
//! Stock clients send one message per frame; [`decode_frame`] accepts several and rejects a
//! frame whose last message is cut short (a truncated varint or buffer), which yrs' own
//! `MessageReader` would silently take for the end of the frame.
//!
//! Awareness updates are decoded strictly by [`decode_awareness_update`]: every state must be
//! valid JSON text (stock peers `JSON.parse` each one unguarded, so one bad state would throw in
//! every one of them), the entries must be complete, and nothing may follow them.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::panic::catch_unwind;
use std::sync::Arc;

use yrs::encoding::read::{Cursor, Read};
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::{Awareness, AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, StateVector};

use crate::bounds;
use crate::doc::panic_message;
use crate::{AwarenessError, CollabError};

/// At most this many messages are read from one frame.
pub const MAX_MESSAGES_PER_FRAME: usize = 64;

/// Splits a frame into messages. Errors ([`CollabError::MalformedMessage`], or
/// [`CollabError::InvalidAwareness`] for an awareness message that
/// [`decode_awareness_update`] rejects) name the first message that fails; no message of a bad
/// frame is returned.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Message>, CollabError> {
    let mut cursor = Cursor::new(frame);
    let mut messages = Vec::new();
    while cursor.has_content() {
        if messages.len() == MAX_MESSAGES_PER_FRAME {
            return Err(CollabError::MalformedMessage(format!(
                "more than {MAX_MESSAGES_PER_FRAME} messages in one frame"
            )));
        }
        let start = cursor.next;
        let payload = skip_message(&mut cursor).map_err(|e| {
            CollabError::MalformedMessage(format!(
                "message {} at byte {start}: {e}",
                messages.len()
            ))
        })?;
        // Payloads yrs would decode are checked against the decoding bounds first: yrs
        // reserves memory from declared counts and recurses into nested values.
        let bounded = match &payload {
            Payload::Other => Ok(()),
            Payload::StateVector(range) => bounds::check_state_vector_v1(&frame[range.clone()]),
            Payload::Update(range) => bounds::check_update_v1(&frame[range.clone()]).map(|_| ()),
            Payload::Awareness(range) => {
                let update = decode_awareness_update(&frame[range.clone()]).map_err(|source| {
                    CollabError::InvalidAwareness {
                        message: messages.len(),
                        source,
                    }
                })?;
                messages.push(Message::Awareness(update));
                continue;
            }
        };
        if let Err(e) = bounded {
            return Err(CollabError::MalformedMessage(format!(
                "message {} at byte {start}: {e}",
                messages.len()
            )));
        }
        let slice = &frame[start..cursor.next];
        let message = match catch_unwind(|| Message::decode_v1(slice)) {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                return Err(CollabError::MalformedMessage(format!(
                    "message {} at byte {start}: {e}",
                    messages.len()
                )))
            }
            Err(p) => return Err(CollabError::MalformedMessage(panic_message(&p))),
        };
        messages.push(message);
    }
    if messages.is_empty() {
        return Err(CollabError::MalformedMessage("empty frame".into()));
    }
    Ok(messages)
}

/// Where a message's payload lies in its frame, for the payloads that are checked before
/// they are decoded.
enum Payload {
    /// Nothing to check (auth, query awareness, unknown tags).
    Other,
    /// Sync step 1's state vector.
    StateVector(Range<usize>),
    /// Sync step 2's or an update message's update.
    Update(Range<usize>),
    /// An awareness update.
    Awareness(Range<usize>),
}

/// Advances past one message's framing without interpreting the payloads, and says where the
/// payload to check lies.
fn skip_message(c: &mut Cursor<'_>) -> Result<Payload, yrs::encoding::read::Error> {
    let tag: u32 = c.read_var()?;
    let payload = |c: &mut Cursor<'_>| {
        let len = c.read_buf()?.len();
        Ok::<_, yrs::encoding::read::Error>(c.next - len..c.next)
    };
    match tag {
        0 => {
            let sub: u32 = c.read_var()?;
            let range = payload(c)?;
            return match sub {
                0 => Ok(Payload::StateVector(range)),
                1 | 2 => Ok(Payload::Update(range)),
                _ => Err(yrs::encoding::read::Error::UnexpectedValue),
            };
        }
        1 => return Ok(Payload::Awareness(payload(c)?)),
        2 => {
            let denied: u32 = c.read_var()?;
            if denied == 0 {
                c.read_buf()?;
            }
        }
        3 => {}
        _ => {
            c.read_buf()?;
        }
    }
    Ok(Payload::Other)
}

/// The largest awareness state accepted, bytes of JSON text.
pub const MAX_AWARENESS_STATE_BYTES: usize = 64 << 10;
/// The deepest nesting of arrays and objects accepted in an awareness state ([`Presence`] is 5
/// deep; y-codemirror's cursor state 4).
pub const MAX_AWARENESS_DEPTH: usize = 16;
/// The most object members accepted in one awareness state, over all its objects (a
/// [`Presence`] takes about 8 per open file).
pub const MAX_AWARENESS_MEMBERS: usize = 1024;

/// Decodes an awareness update (the payload of an awareness message: varuint count, then per
/// client varuint id, varuint clock, varstring state) strictly, where yrs' decoder would accept
/// any string as a state and ignore trailing bytes. Errors ([`AwarenessError`]):
/// - [`AwarenessError::Truncated`]: the payload ends inside an entry (or a varint or string is
///   bad), including a count larger than the entries present;
/// - [`AwarenessError::ClientIdOutOfRange`]: a client id over 53 bits;
/// - [`AwarenessError::InvalidState`]: a state that is not valid JSON text (`null`, a client
///   leaving, is valid), or is outside [`validate_awareness_state`]'s bounds;
/// - [`AwarenessError::TrailingBytes`]: bytes after the last entry.
///
/// ```
/// use spike_collab::{protocol::decode_awareness_update, AwarenessError};
/// // count 1, client 77, clock 1, state "{not json"
/// let mut payload = vec![1, 77, 1, 9];
/// payload.extend_from_slice(b"{not json");
/// assert!(matches!(
///     decode_awareness_update(&payload),
///     Err(AwarenessError::InvalidState { client: 77, clock: 1, .. })
/// ));
/// ```
pub fn decode_awareness_update(payload: &[u8]) -> Result<AwarenessUpdate, AwarenessError> {
    let mut c = Cursor::new(payload);
    let count: u64 = c.read_var().map_err(|e| AwarenessError::Truncated {
        entry: 0,
        count: 0,
        reason: format!("count: {e}"),
    })?;
    // Each entry takes at least 3 bytes (id, clock, string length): a larger count cannot be
    // complete, and is refused before anything is allocated for it.
    let left = (payload.len() - c.next) as u64;
    if count > left / 3 {
        return Err(AwarenessError::Truncated {
            entry: left / 3,
            count,
            reason: format!("{count} entries announced, {left} bytes left"),
        });
    }
    let mut clients = HashMap::with_capacity(count as usize);
    for entry in 0..count {
        let truncated = |e: yrs::encoding::read::Error| AwarenessError::Truncated {
            entry,
            count,
            reason: e.to_string(),
        };
        let client: u64 = c.read_var().map_err(truncated)?;
        let clock: u32 = c.read_var().map_err(truncated)?;
        let json = c.read_string().map_err(truncated)?;
        if client > bounds::MAX_CLIENT_ID {
            return Err(AwarenessError::ClientIdOutOfRange(client));
        }
        validate_awareness_state(json).map_err(|reason| AwarenessError::InvalidState {
            client,
            clock,
            reason,
        })?;
        let json: Arc<str> = json.into();
        clients.insert(ClientID::new(client), AwarenessUpdateEntry { clock, json });
    }
    if c.has_content() {
        return Err(AwarenessError::TrailingBytes(payload.len() - c.next));
    }
    Ok(AwarenessUpdate { clients })
}

/// Checks that an awareness state is one JSON text, as `JSON.parse` requires (surrounding JSON
/// whitespace allowed), and that it is within the bounds every peer can take: at most
/// [`MAX_AWARENESS_STATE_BYTES`] bytes, [`MAX_AWARENESS_DEPTH`] levels of nesting and
/// [`MAX_AWARENESS_MEMBERS`] object members. Stock peers parse and walk states recursively,
/// so a state of thousands of nested brackets relayed to them overflows their stacks.
///
/// Errors: what is wrong, or the parser's message with its line and column.
pub fn validate_awareness_state(json: &str) -> Result<(), String> {
    if json.len() > MAX_AWARENESS_STATE_BYTES {
        return Err(format!(
            "{} bytes, more than the limit of {MAX_AWARENESS_STATE_BYTES}",
            json.len()
        ));
    }
    let shape = bounds::check_json(json, MAX_AWARENESS_DEPTH)?;
    if shape.members > MAX_AWARENESS_MEMBERS {
        return Err(format!(
            "{} object members, more than the limit of {MAX_AWARENESS_MEMBERS}",
            shape.members
        ));
    }
    Ok(())
}

/// Encodes one message as a frame.
pub fn encode(message: &Message) -> Vec<u8> {
    message.encode_v1()
}

/// Sync step 1: "here is my state vector".
pub fn sync_step1(sv: &StateVector) -> Vec<u8> {
    encode(&Message::Sync(SyncMessage::SyncStep1(sv.clone())))
}

/// Sync step 2: "here is what you lack" (an update).
pub fn sync_step2(update: Vec<u8>) -> Vec<u8> {
    encode(&Message::Sync(SyncMessage::SyncStep2(update)))
}

/// An incremental document update.
pub fn update(update: Vec<u8>) -> Vec<u8> {
    encode(&Message::Sync(SyncMessage::Update(update)))
}

/// An awareness update.
pub fn awareness(update: AwarenessUpdate) -> Vec<u8> {
    encode(&Message::Awareness(update))
}

/// "Send me everyone's awareness".
pub fn query_awareness() -> Vec<u8> {
    encode(&Message::AwarenessQuery)
}

/// Auth message: permission denied, with a reason shown to the user.
pub fn permission_denied(reason: &str) -> Vec<u8> {
    encode(&Message::Auth(Some(reason.to_owned())))
}

/// A peer's presence, the JSON value of its awareness state:
/// `{"user": {"name": …, "color": "#rrggbb"}, "cursors": {path: {"anchor": pos, "head": pos}}}`,
/// where each `pos` is a Yjs relative position in its JSON form
/// (`Y.relativePositionToJSON`: `{"item": {"client": n, "clock": n}, "assoc": 0}`, or
/// `{"tname": …}` / `{"type": …}` at the ends of a text). `user` is the field y-codemirror and other
/// Yjs UIs read. Relative positions stay on the same character while others edit, where offsets
/// would drift until the next cursor message.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Presence {
    /// Who this is.
    pub user: User,
    /// Cursor and selection per open file.
    #[serde(default)]
    pub cursors: BTreeMap<String, Selection>,
}

/// A peer's name and colour.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct User {
    /// Display name.
    pub name: String,
    /// CSS colour, `#rrggbb`.
    pub color: String,
}

/// A selection in one file as two Yjs relative positions; `anchor == head` for a plain cursor.
/// Make one from offsets with [`crate::RoomDoc::selection`] and read it back with
/// [`crate::RoomDoc::resolve_selection`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Selection {
    /// Where the selection started.
    #[cfg_attr(feature = "ts", ts(type = "RelativePositionJSON"))]
    pub anchor: yrs::StickyIndex,
    /// Where the cursor is.
    #[cfg_attr(feature = "ts", ts(type = "RelativePositionJSON"))]
    pub head: yrs::StickyIndex,
}

/// Every peer's presence known to `awareness` except its own, by client id. States that are not
/// [`Presence`]-shaped (another app's awareness) are skipped.
pub fn peers(awareness: &Awareness) -> BTreeMap<u64, Presence> {
    let own = awareness.client_id();
    awareness
        .iter()
        .filter(|(id, _)| *id != own)
        .filter_map(|(id, state)| {
            let json = state.data?;
            let presence = serde_json::from_str(&json).ok()?;
            Some((id.get(), presence))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() -> Result<(), CollabError> {
        let mut sv = StateVector::default();
        sv.set_max(yrs::ClientID::new(5), 12);
        let mut frame = sync_step1(&sv);
        frame.extend(update(vec![0, 0]));
        frame.extend(query_awareness());
        frame.extend(permission_denied("read-only room"));
        let messages = decode_frame(&frame)?;
        assert_eq!(
            messages,
            vec![
                Message::Sync(SyncMessage::SyncStep1(sv)),
                Message::Sync(SyncMessage::Update(vec![0, 0])),
                Message::AwarenessQuery,
                Message::Auth(Some("read-only room".into())),
            ]
        );
        Ok(())
    }

    #[test]
    fn truncated_and_garbage_frames_are_rejected() {
        let full = update(vec![1, 2, 3, 4]);
        for cut in 1..full.len() {
            assert!(decode_frame(&full[..cut]).is_err(), "cut at {cut}");
        }
        // A varint that never ends.
        assert!(decode_frame(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80]).is_err());
        // Unknown sync sub-tag.
        assert!(decode_frame(&[0, 7, 0]).is_err());
        // A buffer length far past the frame.
        assert!(decode_frame(&[0, 2, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(decode_frame(&[]).is_err());
    }

    /// An awareness update payload: count, then (client, clock, state) entries.
    fn awareness_payload(entries: &[(u64, u32, &str)]) -> Vec<u8> {
        use yrs::encoding::write::Write;
        let mut out = Vec::new();
        out.write_var(entries.len());
        for (client, clock, state) in entries {
            out.write_var(*client);
            out.write_var(*clock);
            out.write_string(state);
        }
        out
    }

    /// A frame of one awareness message around a payload.
    fn awareness_frame(payload: &[u8]) -> Vec<u8> {
        use yrs::encoding::write::Write;
        let mut out = vec![1];
        out.write_buf(payload);
        out
    }

    #[test]
    fn awareness_states_must_be_json() -> Result<(), Box<dyn std::error::Error>> {
        // The QA report's frame: count 1, client 77, clock 1, state `{not json`.
        let payload = awareness_payload(&[(77, 1, "{not json")]);
        assert_eq!(payload[..4], [1, 77, 1, 9]);
        assert_eq!(
            decode_awareness_update(&payload).map_err(|e| match e {
                AwarenessError::InvalidState { client, clock, .. } => (client, clock),
                other => panic!("unexpected {other}"),
            }),
            Err((77, 1))
        );
        let frame = awareness_frame(&payload);
        assert_eq!(frame[..2], [1, 13]);
        assert!(matches!(
            decode_frame(&frame),
            Err(CollabError::InvalidAwareness {
                message: 0,
                source: AwarenessError::InvalidState { client: 77, .. }
            })
        ));
        // One bad entry among good ones, or a bad message after a good one, rejects it all.
        let mixed = awareness_payload(&[(1, 1, r#"{"user":{"name":"a"}}"#), (2, 1, "{")]);
        assert!(decode_awareness_update(&mixed).is_err());
        let mut two = update(vec![0, 0]);
        two.extend(awareness_frame(&payload));
        assert!(matches!(
            decode_frame(&two),
            Err(CollabError::InvalidAwareness { message: 1, .. })
        ));
        for bad in [
            "",
            " ",
            "{",
            "undefined",
            "NaN",
            "'x'",
            "{a:1}",
            "[1,]",
            "1 2",
            "\u{feff}{}",
            "\"\t\"",
        ] {
            let p = awareness_payload(&[(5, 2, bad)]);
            assert!(
                matches!(
                    decode_awareness_update(&p),
                    Err(AwarenessError::InvalidState {
                        client: 5,
                        clock: 2,
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
        }

        // Valid JSON texts pass through unchanged, `null` (a client leaving) included; stock
        // `JSON.stringify` writes a lone surrogate as an escape, which `JSON.parse` accepts.
        let good = [
            (
                1,
                3,
                r##"{"user":{"name":"Ada","color":"#ff0000"},"cursors":{}}"##,
            ),
            (2, 7, "null"),
            (3, 1, " [1, 2.5e3, true, \"\\ud800\"] \n"),
            (4, 0, "\"x\""),
        ];
        let update = decode_awareness_update(&awareness_payload(&good))?;
        assert_eq!(update.clients.len(), good.len());
        for (client, clock, state) in good {
            let entry = &update.clients[&ClientID::new(client)];
            assert_eq!((entry.clock, &*entry.json), (clock, state));
        }
        // As yrs decodes it, and it round-trips through our encoder.
        let frame = awareness_frame(&awareness_payload(&good));
        let messages = decode_frame(&frame)?;
        assert_eq!(messages, vec![Message::Awareness(update.clone())]);
        assert_eq!(decode_frame(&awareness(update.clone()))?, messages);
        assert_eq!(Message::decode_v1(&frame).ok(), Some(messages[0].clone()));
        // An empty update is a no-op, not an error.
        assert!(decode_awareness_update(&[0])?.clients.is_empty());
        Ok(())
    }

    #[test]
    fn truncated_awareness_updates_are_rejected() {
        let payload = awareness_payload(&[(77, 1, r#"{"a":1}"#), (78, 2, "null")]);
        assert!(decode_awareness_update(&payload).is_ok());
        // Every cut inside the payload: the payload itself says it is short.
        for cut in 0..payload.len() {
            assert!(
                matches!(
                    decode_awareness_update(&payload[..cut]),
                    Err(AwarenessError::Truncated { .. })
                ),
                "cut at {cut}"
            );
            // Re-framed with the shorter length, the message is rejected as invalid awareness.
            assert!(
                matches!(
                    decode_frame(&awareness_frame(&payload[..cut])),
                    Err(CollabError::InvalidAwareness { .. })
                ),
                "re-framed cut at {cut}"
            );
        }
        // Every cut of the frame (the payload's length says more than is there).
        let frame = awareness_frame(&payload);
        for cut in 1..frame.len() {
            assert!(decode_frame(&frame[..cut]).is_err(), "frame cut at {cut}");
        }
        // A count far beyond the entries present is refused up front.
        assert!(matches!(
            decode_awareness_update(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 0]),
            Err(AwarenessError::Truncated { .. })
        ));
        // Bytes after the announced entries.
        let mut long = payload.clone();
        long.push(0);
        assert_eq!(
            decode_awareness_update(&long).err(),
            Some(AwarenessError::TrailingBytes(1))
        );
        // A state that is not UTF-8.
        assert!(matches!(
            decode_awareness_update(&[1, 5, 1, 2, 0xc3, 0x28]),
            Err(AwarenessError::Truncated { .. })
        ));
        // A client id past 53 bits.
        let huge = awareness_payload(&[(1 << 53, 1, "null")]);
        assert_eq!(
            decode_awareness_update(&huge).err(),
            Some(AwarenessError::ClientIdOutOfRange(1 << 53))
        );
    }
}
