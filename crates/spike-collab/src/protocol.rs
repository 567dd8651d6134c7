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

use std::collections::BTreeMap;
use std::panic::catch_unwind;

use yrs::encoding::read::{Cursor, Read};
use yrs::sync::{Awareness, AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::StateVector;

use crate::doc::panic_message;
use crate::CollabError;

/// At most this many messages are read from one frame.
pub const MAX_MESSAGES_PER_FRAME: usize = 64;

/// Splits a frame into messages. Errors ([`CollabError::MalformedMessage`]) name the first
/// message that fails; no message of a bad frame is returned.
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
        skip_message(&mut cursor).map_err(|e| {
            CollabError::MalformedMessage(format!(
                "message {} at byte {start}: {e}",
                messages.len()
            ))
        })?;
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

/// Advances past one message's framing without interpreting the payloads.
fn skip_message(c: &mut Cursor<'_>) -> Result<(), yrs::encoding::read::Error> {
    let tag: u32 = c.read_var()?;
    match tag {
        0 => {
            let sub: u32 = c.read_var()?;
            if sub > 2 {
                return Err(yrs::encoding::read::Error::UnexpectedValue);
            }
            c.read_buf()?;
        }
        1 => {
            c.read_buf()?;
        }
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
/// `{"user": {"name": …, "color": "#rrggbb"}, "cursors": {path: {"anchor": n, "head": n}}}`,
/// offsets in UTF-16 code units. `user` is the field y-codemirror and other Yjs UIs read.
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
pub struct User {
    /// Display name.
    pub name: String,
    /// CSS colour, `#rrggbb`.
    pub color: String,
}

/// A selection in one file; `anchor == head` for a plain cursor. UTF-16 code units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// Where the selection started.
    pub anchor: u32,
    /// Where the cursor is.
    pub head: u32,
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
}
