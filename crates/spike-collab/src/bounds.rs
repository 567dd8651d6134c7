//! Bounded decoding: checks that bytes from outside the process (lib0 v1 updates, state vectors,
//! JSON texts) stay inside fixed limits *before* yrs decodes them.
//!
//! yrs, like Yjs, decodes the `Any` values embedded in an update recursively and reserves memory
//! from the counts an update declares. A 16 KB update of nested arrays then overflows the
//! decoding thread's stack, which aborts the whole process (a stack overflow is not a panic that
//! `catch_unwind` could stop), and an 8-byte message declaring 2³² entries makes yrs reserve
//! gigabytes before it reads the first one. The checks here walk the same encoding with a
//! cursor and an explicit stack: no recursion, no allocation proportional to a declared count,
//! one pass over the bytes. They refuse:
//! - a count larger than the bytes left could hold ([`BoundsErrorKind::CountTooLarge`]);
//! - `Any` values and JSON texts nested deeper than [`MAX_NESTING`] ([`BoundsErrorKind::TooDeep`]);
//! - clocks and clock ranges reaching past [`MAX_CLOCK`] (2³¹ − 1), which panic or wrap inside
//!   yrs ([`BoundsErrorKind::ClockOverflow`]);
//! - client ids over 53 bits, which Yjs peers cannot represent ([`BoundsErrorKind::ClientId`]);
//! - a client with two sections of structs, whose clocks then run backwards inside yrs
//!   ([`BoundsErrorKind::RepeatedClient`], found by the fuzz target);
//! - unknown struct, content, type or value tags, empty blocks and cut-short bytes.
//!
//! The format is lib0's v1 update encoding as yrs 0.28 reads it (`Update::decode`,
//! `ItemContent::decode`, `Any::decode`, `IdSet::decode` with `DecoderV1`; the same layout as
//! Yjs' `UpdateDecoderV1`). Where yrs departs from Yjs, the walk follows yrs, since yrs is what
//! decodes next: a `ContentJSON` of declared length `n` holds `n + 1` strings there.
//!
//! ```
//! use spike_collab::bounds::{check_update_v1, BoundsErrorKind};
//! // One client block whose single `Any` value is 5,000 arrays deep.
//! let mut update = vec![1, 1, 7, 0, 8 /* item: Any content */, 1 /* parent: named */, 1, b'm', 1];
//! for _ in 0..5_000 { update.extend([117, 1]); }
//! update.extend([126, 0]);
//! let err = check_update_v1(&update).unwrap_err();
//! assert!(matches!(err.kind, BoundsErrorKind::TooDeep { limit: 64 }));
//! ```

use yrs::encoding::read::{Cursor, Read};

/// The deepest nesting accepted in an `Any` value or a JSON text (arrays and objects).
pub const MAX_NESTING: usize = 64;
/// The largest clock accepted, and the largest `clock + length` of any struct or deleted range.
/// yrs keeps clocks in `u32` and has arithmetic that overflows near 2³¹; no real client comes
/// near it (a client id is per session).
pub const MAX_CLOCK: u32 = i32::MAX as u32;
/// The largest client id accepted: Yjs client ids are JavaScript numbers (53 bits exact).
pub const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Why bytes were refused, and where: `offset` is the byte at which the problem was found,
/// from the start of the checked buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (at byte {offset})")]
pub struct BoundsError {
    /// Byte offset in the checked buffer.
    pub offset: usize,
    /// What was wrong.
    pub kind: BoundsErrorKind,
}

/// What [`BoundsError`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsErrorKind {
    /// The bytes end inside a value, or a varint or string is malformed.
    #[error("cut short or undecodable {what}: {reason}")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// The reader's message.
        reason: String,
    },
    /// A declared count that the remaining bytes cannot hold.
    #[error("{what} of {count} cannot fit in the {left} bytes left")]
    CountTooLarge {
        /// The field holding the count.
        what: &'static str,
        /// The declared count.
        count: u64,
        /// Bytes left after the count.
        left: usize,
    },
    /// A value nested deeper than the limit.
    #[error("nested deeper than {limit} levels")]
    TooDeep {
        /// The limit, [`MAX_NESTING`].
        limit: usize,
    },
    /// A clock, or a clock plus a length, past [`MAX_CLOCK`].
    #[error("clock {clock} + length {len} of client {client} passes {max}", max = MAX_CLOCK)]
    ClockOverflow {
        /// The client whose clock it is.
        client: u64,
        /// Where the struct or range starts.
        clock: u64,
        /// Its length.
        len: u64,
    },
    /// A client id over 53 bits.
    #[error("client id {0} is out of range (more than 53 bits)")]
    ClientId(u64),
    /// A second section of structs for the same client.
    #[error("client {0} has more than one section of structs")]
    RepeatedClient(u64),
    /// A tag this encoding does not define (or yrs does not decode).
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which kind of tag: struct content, type ref, or `Any` value.
        what: &'static str,
        /// The tag.
        tag: u8,
    },
    /// A GC or skip struct of length 0 (yrs refuses them).
    #[error("empty {0} struct")]
    EmptyBlock(&'static str),
    /// A JSON text that is not valid or too deep.
    #[error("invalid JSON text: {0}")]
    Json(String),
}

/// What a checked update holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateShape {
    /// Client blocks.
    pub clients: u32,
    /// Each client's section of structs: `(client, first clock, clock after the last)`, in the
    /// update's order.
    pub sections: Vec<(u64, u32, u32)>,
    /// Structs over every client block.
    pub structs: u64,
    /// Deleted ranges.
    pub deleted_ranges: u64,
}

impl UpdateShape {
    /// Whether the update changes nothing (no structs, no deletions): the sync step 2 of a
    /// replica that has nothing the other lacks.
    pub fn is_empty(&self) -> bool {
        self.structs == 0 && self.deleted_ranges == 0
    }
}

/// Checks a lib0 v1 update (`Y.encodeStateAsUpdate`, `Y.mergeUpdates`, a sync step 2 or update
/// payload) against the limits in the module docs, reading it once without recursion or
/// allocation. Trailing bytes after the delete set are ignored, as yrs and Yjs ignore them.
///
/// Errors: [`BoundsError`] naming the first problem and its byte offset.
pub fn check_update_v1(update: &[u8]) -> Result<UpdateShape, BoundsError> {
    let mut r = Reader::new(update);
    let mut shape = UpdateShape::default();
    // Each client block takes at least 3 bytes: struct count, client, clock.
    let clients = r.count32("client count", 3)?;
    shape.clients = clients;
    // Grown as sections are read, never reserved from the declared count.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..clients {
        // Each struct takes at least 2 bytes: its info byte and a length or content.
        let structs = r.count32("struct count", 2)?;
        let at = r.at();
        let client = r.client()?;
        // yrs appends a repeated section to the first: clocks then go backwards, which its
        // block store does not expect (it panics mid-transaction). Yjs writes one per client.
        if !seen.insert(client) {
            return Err(r.error_at(at, BoundsErrorKind::RepeatedClient(client)));
        }
        let start = r.at();
        let first: u32 = r.var("clock")?;
        let mut clock = u64::from(first);
        for _ in 0..structs {
            let len = r.block()?;
            if clock + len > u64::from(MAX_CLOCK) {
                return Err(
                    r.error_at(start, BoundsErrorKind::ClockOverflow { client, clock, len })
                );
            }
            clock += len;
        }
        // Below MAX_CLOCK, checked above.
        shape
            .sections
            .push((client, first, u32::try_from(clock).unwrap_or(MAX_CLOCK)));
        shape.structs += u64::from(structs);
    }
    // The delete set: client count, then per client its id and ranges of (clock, length).
    let clients = r.count32("delete set client count", 2)?;
    for _ in 0..clients {
        let client = r.client()?;
        let ranges = r.count32("deleted range count", 2)?;
        for _ in 0..ranges {
            r.id_range(client)?;
        }
        shape.deleted_ranges += u64::from(ranges);
    }
    Ok(shape)
}

/// Checks a lib0 v1 state vector (the payload of sync step 1: varuint count, then per client
/// varuint id and varuint clock): the count must fit in the bytes, every entry must be complete,
/// and client ids must be within 53 bits (yrs asserts it).
///
/// Errors: [`BoundsError`].
pub fn check_state_vector_v1(sv: &[u8]) -> Result<(), BoundsError> {
    let mut r = Reader::new(sv);
    let n = r.count32("state vector length", 2)?;
    for _ in 0..n {
        r.client()?;
        r.var::<u32>("clock")?;
    }
    Ok(())
}

/// What [`check_json`] measured of a JSON text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonShape {
    /// The deepest nesting of arrays and objects (0 for a scalar).
    pub depth: usize,
    /// Object members, over every object in the text.
    pub members: usize,
}

/// Checks that `text` is one valid JSON text (RFC 8259, surrounding whitespace allowed, as
/// `JSON.parse` takes it) nested at most `max_depth` deep, and measures it. The nesting is
/// checked first, by a scan that keeps no stack, so a text of a million brackets costs one pass.
///
/// Errors: a message saying what is wrong (too deep, or the parser's message with its line and
/// column).
pub fn check_json(text: &str, max_depth: usize) -> Result<JsonShape, String> {
    let mut shape = JsonShape::default();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(format!("nested deeper than {max_depth} levels"));
                }
                shape.depth = shape.depth.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b':' => shape.members += 1,
            _ => {}
        }
    }
    // Brackets are balanced and within the limit here only if the text is valid, which the
    // parser decides; its own recursion is bounded by the scan above.
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| shape)
        .map_err(|e| e.to_string())
}

/// A cursor over the checked bytes that turns reader errors into [`BoundsError`]s.
struct Reader<'a> {
    c: Cursor<'a>,
    len: usize,
}

/// An `Any` level being read: values left, and whether each is preceded by a key.
struct Level {
    left: u64,
    map: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self {
            c: Cursor::new(buf),
            len: buf.len(),
        }
    }

    fn at(&self) -> usize {
        self.c.next
    }

    fn left(&self) -> usize {
        self.len.saturating_sub(self.c.next)
    }

    fn error_at(&self, offset: usize, kind: BoundsErrorKind) -> BoundsError {
        BoundsError { offset, kind }
    }

    fn truncated(&self, what: &'static str, e: yrs::encoding::read::Error) -> BoundsError {
        self.error_at(
            self.at(),
            BoundsErrorKind::Truncated {
                what,
                reason: e.to_string(),
            },
        )
    }

    fn var<T: yrs::encoding::varint::VarInt>(
        &mut self,
        what: &'static str,
    ) -> Result<T, BoundsError> {
        let at = self.at();
        self.c
            .read_var::<T>()
            .map_err(|e| self.error_at(at, truncated_kind(what, e)))
    }

    /// A `u32` count of things of at least `min_bytes` each, checked against the bytes left.
    fn count32(&mut self, what: &'static str, min_bytes: usize) -> Result<u32, BoundsError> {
        let at = self.at();
        let n: u32 = self.var(what)?;
        self.fits(at, what, u64::from(n), min_bytes)?;
        Ok(n)
    }

    fn fits(
        &self,
        at: usize,
        what: &'static str,
        n: u64,
        min_bytes: usize,
    ) -> Result<(), BoundsError> {
        let left = self.left();
        if n > (left / min_bytes.max(1)) as u64 {
            return Err(self.error_at(
                at,
                BoundsErrorKind::CountTooLarge {
                    what,
                    count: n,
                    left,
                },
            ));
        }
        Ok(())
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, BoundsError> {
        self.c.read_u8().map_err(|e| self.truncated(what, e))
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), BoundsError> {
        self.c
            .read_exact(n)
            .map(|_| ())
            .map_err(|e| self.truncated(what, e))
    }

    fn buf(&mut self, what: &'static str) -> Result<(), BoundsError> {
        self.c
            .read_buf()
            .map(|_| ())
            .map_err(|e| self.truncated(what, e))
    }

    fn string(&mut self, what: &'static str) -> Result<&str, BoundsError> {
        let at = self.at();
        match self.c.read_string() {
            Ok(s) => Ok(s),
            Err(e) => Err(BoundsError {
                offset: at,
                kind: truncated_kind(what, e),
            }),
        }
    }

    /// A lib0 signed varint (sign in the first byte's bit 6), at most 10 bytes: yrs'
    /// `read_var_i64` shifts past 64 bits on an 11th byte (a panic with overflow checks on,
    /// garbage without). Found by the fuzz target.
    fn signed_varint(&mut self, what: &'static str) -> Result<(), BoundsError> {
        let at = self.at();
        for _ in 0..10 {
            if self.u8(what)? & 0b1000_0000 == 0 {
                return Ok(());
            }
        }
        Err(self.error_at(
            at,
            BoundsErrorKind::Truncated {
                what,
                reason: "a signed varint longer than 10 bytes".into(),
            },
        ))
    }

    /// A JSON text stored as a string (embeds, formatting attributes), which yrs parses.
    fn json(&mut self, what: &'static str) -> Result<(), BoundsError> {
        let at = self.at();
        let text = self.string(what)?;
        match check_json(text, MAX_NESTING) {
            Ok(_) => Ok(()),
            Err(e) => Err(BoundsError {
                offset: at,
                kind: BoundsErrorKind::Json(format!("{what}: {e}")),
            }),
        }
    }

    fn client(&mut self) -> Result<u64, BoundsError> {
        let at = self.at();
        let client: u64 = self.var("client")?;
        if client > MAX_CLIENT_ID {
            return Err(self.error_at(at, BoundsErrorKind::ClientId(client)));
        }
        Ok(client)
    }

    /// An id (client, clock), as origins and parents carry it.
    fn id(&mut self) -> Result<(), BoundsError> {
        let client = self.client()?;
        let at = self.at();
        let clock: u32 = self.var("clock")?;
        if clock > MAX_CLOCK {
            return Err(self.error_at(
                at,
                BoundsErrorKind::ClockOverflow {
                    client,
                    clock: clock.into(),
                    len: 0,
                },
            ));
        }
        Ok(())
    }

    /// A deleted range (clock, length) of `client`.
    fn id_range(&mut self, client: u64) -> Result<(), BoundsError> {
        let at = self.at();
        let clock: u32 = self.var("deleted clock")?;
        let len: u32 = self.var("deleted length")?;
        if u64::from(clock) + u64::from(len) > u64::from(MAX_CLOCK) {
            return Err(self.error_at(
                at,
                BoundsErrorKind::ClockOverflow {
                    client,
                    clock: clock.into(),
                    len: len.into(),
                },
            ));
        }
        Ok(())
    }

    /// One struct of a client block; returns how many clocks it spans.
    fn block(&mut self) -> Result<u64, BoundsError> {
        const GC: u8 = 0;
        const SKIP: u8 = 10;
        const HAS_ORIGIN: u8 = 0b1000_0000;
        const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
        const HAS_PARENT_SUB: u8 = 0b0010_0000;
        let at = self.at();
        let info = self.u8("struct info")?;
        if info == GC || info == SKIP {
            let len: u32 = self.var("struct length")?;
            if len == 0 {
                let name = if info == GC { "GC" } else { "skip" };
                return Err(self.error_at(at, BoundsErrorKind::EmptyBlock(name)));
            }
            return Ok(len.into());
        }
        if info & HAS_ORIGIN != 0 {
            self.id()?;
        }
        if info & HAS_RIGHT_ORIGIN != 0 {
            self.id()?;
        }
        if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
            let parent_info: u32 = self.var("parent info")?;
            if parent_info == 1 {
                self.string("parent name")?;
            } else {
                self.id()?;
            }
            if info & HAS_PARENT_SUB != 0 {
                self.string("parent key")?;
            }
        }
        self.content(info & 0b1111)
    }

    /// An item's content; returns its length in clocks (UTF-16 code units for a string, the
    /// element count for JSON and `Any`, 1 otherwise; 0 makes no struct in yrs).
    fn content(&mut self, tag: u8) -> Result<u64, BoundsError> {
        let at = self.at();
        Ok(match tag {
            // Deleted
            1 => self.var::<u32>("deleted length")?.into(),
            // JSON: yrs reads the declared length plus one strings.
            2 => {
                let n = self.var::<u32>("JSON length")?;
                if n > i32::MAX as u32 {
                    return Err(self.error_at(
                        at,
                        BoundsErrorKind::CountTooLarge {
                            what: "JSON length",
                            count: n.into(),
                            left: self.left(),
                        },
                    ));
                }
                let n = u64::from(n) + 1;
                self.fits(at, "JSON length", n, 1)?;
                for _ in 0..n {
                    // `undefined` or a JSON text, parsed by yrs only when read.
                    let text = self.string("JSON value")?;
                    if text != "undefined" {
                        if let Err(e) = check_json(text, MAX_NESTING) {
                            return Err(BoundsError {
                                offset: at,
                                kind: BoundsErrorKind::Json(format!("JSON value: {e}")),
                            });
                        }
                    }
                }
                n
            }
            // Binary
            3 => {
                self.buf("binary content")?;
                1
            }
            // String
            4 => self.string("string content")?.encode_utf16().count() as u64,
            // Embed
            5 => {
                self.json("embed")?;
                1
            }
            // Format: key, value
            6 => {
                self.string("format key")?;
                self.json("format value")?;
                1
            }
            // Type: its type ref, and an XML element's name
            7 => {
                let type_ref = self.u8("type ref")?;
                match type_ref {
                    0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => {}
                    3 => {
                        self.string("XML element name")?;
                    }
                    tag => {
                        return Err(self.error_at(
                            at,
                            BoundsErrorKind::UnknownTag {
                                what: "type ref",
                                tag,
                            },
                        ))
                    }
                }
                1
            }
            // Any: a count of values
            8 => {
                let n = self.count32("Any content length", 1)?;
                for _ in 0..n {
                    self.any()?;
                }
                n.into()
            }
            // Doc: guid and options
            9 => {
                self.string("subdocument guid")?;
                self.any()?;
                1
            }
            tag => {
                return Err(self.error_at(
                    at,
                    BoundsErrorKind::UnknownTag {
                        what: "struct content",
                        tag,
                    },
                ))
            }
        })
    }

    /// One lib0 `Any` value (lib0 `encoding.js` `writeAny`), read with an explicit stack.
    fn any(&mut self) -> Result<(), BoundsError> {
        let mut stack = vec![Level {
            left: 1,
            map: false,
        }];
        while let Some(level) = stack.last_mut() {
            if level.left == 0 {
                stack.pop();
                continue;
            }
            level.left -= 1;
            if level.map {
                self.string("Any object key")?;
            }
            let at = self.at();
            let tag = self.u8("Any tag")?;
            let child = match tag {
                // undefined, null, false, true
                127 | 126 | 121 | 120 => None,
                125 => {
                    self.signed_varint("Any integer")?;
                    None
                }
                124 => {
                    self.skip(4, "Any float32")?;
                    None
                }
                123 | 122 => {
                    self.skip(8, "Any float64 or bigint")?;
                    None
                }
                119 => {
                    self.string("Any string")?;
                    None
                }
                118 => {
                    let n: u64 = self.var::<usize>("Any object length")? as u64;
                    // Each member: a key (at least 1 byte) and a value (at least 1 byte).
                    self.fits(at, "Any object length", n, 2)?;
                    Some(Level { left: n, map: true })
                }
                117 => {
                    let n: u64 = self.var::<usize>("Any array length")? as u64;
                    self.fits(at, "Any array length", n, 1)?;
                    Some(Level {
                        left: n,
                        map: false,
                    })
                }
                116 => {
                    self.buf("Any buffer")?;
                    None
                }
                tag => {
                    return Err(self.error_at(at, BoundsErrorKind::UnknownTag { what: "Any", tag }))
                }
            };
            if let Some(level) = child {
                // The root level is not a nesting level of the value.
                if stack.len() > MAX_NESTING {
                    return Err(self.error_at(at, BoundsErrorKind::TooDeep { limit: MAX_NESTING }));
                }
                stack.push(level);
            }
        }
        Ok(())
    }
}

fn truncated_kind(what: &'static str, e: yrs::encoding::read::Error) -> BoundsErrorKind {
    BoundsErrorKind::Truncated {
        what,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RoomDoc, TextEdit};
    use yrs::encoding::write::Write;
    use yrs::{Array, ArrayPrelim, Doc, Map, Transact};

    /// An update of one item under the root map `m`, key `k`, holding `content` (bytes after
    /// the content tag) with content tag `tag`, at `clock` of client 7.
    fn item(tag: u8, clock: u32, content: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.write_var(1u32); // one client
        u.write_var(1u32); // one struct
        u.write_var(7u64); // client 7
        u.write_var(clock);
        u.push(tag | 0b0010_0000); // no origins, a parent key
        u.write_var(1u32); // parent by name
        u.write_string("m");
        u.write_string("k");
        u.extend_from_slice(content);
        u.write_var(0u32); // empty delete set
        u
    }

    fn nested_any(depth: usize) -> Vec<u8> {
        let mut content = vec![1]; // one Any value
        for _ in 0..depth {
            content.extend([117, 1]);
        }
        content.push(126);
        content
    }

    #[test]
    fn real_updates_pass_and_are_measured() -> Result<(), Box<dyn std::error::Error>> {
        let doc = RoomDoc::with_client_id(1);
        let mut updates = vec![doc.create_file("App.tsx", "hello 👋")?.unwrap_or_default()];
        updates.push(
            doc.edit(
                "App.tsx",
                &[TextEdit::delete(0, 2), TextEdit::insert(1, "«»")],
            )?
            .unwrap_or_default(),
        );
        updates.push(
            doc.set_meta("packages", r#"{"react":"19"}"#)
                .unwrap_or_default(),
        );
        for u in &updates {
            check_update_v1(u)?;
        }
        let shape = check_update_v1(&doc.encode_state())?;
        assert_eq!(shape.clients, 1);
        assert!(shape.deleted_ranges >= 1);
        // A document with every kind of Any and nesting under the limit passes, and yrs
        // agrees on what it holds.
        let y = Doc::with_client_id(9);
        let map = y.get_or_insert_map("m");
        let arr = y.get_or_insert_array("a");
        {
            let mut txn = y.transact_mut();
            let mut value = yrs::Any::from(vec![yrs::Any::Null]);
            for _ in 0..MAX_NESTING - 1 {
                value = yrs::Any::from(vec![value]);
            }
            map.insert(&mut txn, "deep", value);
            map.insert(
                &mut txn,
                "mixed",
                yrs::Any::from_json(r#"{"a":[1,2.5,"x",true,null],"b":{"c":-3}}"#)?,
            );
            map.insert(&mut txn, "bytes", yrs::Any::from(vec![1u8, 2, 3]));
            arr.insert(&mut txn, 0, ArrayPrelim::default());
            arr.push_back(&mut txn, 1.5f64);
        }
        let state =
            yrs::ReadTxn::encode_state_as_update_v1(&y.transact(), &yrs::StateVector::default());
        check_update_v1(&state)?;
        assert_eq!(check_update_v1(&[0, 0])?, UpdateShape::default());
        assert_eq!(
            check_update_v1(&item(8, 5, &[1, 126, 0]))?.sections,
            vec![(7, 5, 6)]
        );
        assert!(UpdateShape::default().is_empty());
        Ok(())
    }

    #[test]
    fn deep_any_values_are_refused_without_recursion() {
        assert!(check_update_v1(&item(8, 0, &[nested_any(MAX_NESTING), vec![0]].concat())).is_ok());
        let deep = item(8, 0, &nested_any(MAX_NESTING + 1));
        assert!(matches!(
            check_update_v1(&deep).map_err(|e| e.kind),
            Err(BoundsErrorKind::TooDeep { limit: MAX_NESTING })
        ));
        // A million levels: refused in one pass (a recursive decoder would overflow the stack).
        let huge = item(8, 0, &nested_any(1_000_000));
        assert!(check_update_v1(&huge).is_err());
        // Objects nest too.
        let mut obj = vec![1];
        for _ in 0..=MAX_NESTING {
            obj.extend([118, 1, 1, b'k']);
        }
        obj.push(126);
        assert!(matches!(
            check_update_v1(&item(8, 0, &obj)).map_err(|e| e.kind),
            Err(BoundsErrorKind::TooDeep { .. })
        ));
        // JSON texts in embeds and formats are checked for depth too.
        let mut embed = Vec::new();
        embed.write_string(&format!("{}{}", "[".repeat(100), "]".repeat(100)));
        assert!(matches!(
            check_update_v1(&item(5, 0, &embed)).map_err(|e| e.kind),
            Err(BoundsErrorKind::Json(_))
        ));
    }

    #[test]
    fn declared_counts_must_fit_the_bytes() {
        for bytes in [
            // 2³²−1 clients in 8 bytes.
            &[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0][..],
            // 2²⁸ clients.
            &[0x80, 0x80, 0x80, 0x80, 0x01, 0, 0, 0],
            // One client declaring 2³²−1 structs.
            &[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 7, 0],
        ] {
            assert!(
                matches!(
                    check_update_v1(bytes).map_err(|e| e.kind),
                    Err(BoundsErrorKind::CountTooLarge { .. })
                ),
                "{bytes:?}"
            );
        }
        // A state vector declaring 2³²−1 entries, and one declaring 2²⁸.
        assert!(check_state_vector_v1(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 0]).is_err());
        assert!(check_state_vector_v1(&[0x80, 0x80, 0x80, 0x80, 0x01, 1, 1]).is_err());
        assert!(check_state_vector_v1(&[2, 1, 5, 2, 9]).is_ok());
        let mut wide = vec![1];
        wide.write_var(1u64 << 53);
        wide.push(1);
        assert!(matches!(
            check_state_vector_v1(&wide).map_err(|e| e.kind),
            Err(BoundsErrorKind::ClientId(_))
        ));
        assert!(check_state_vector_v1(&[2, 1, 5, 2]).is_err());
        // An Any array of 2³²−1 values in a few bytes.
        let content = [1, 117, 0xff, 0xff, 0xff, 0xff, 0x0f, 126];
        assert!(matches!(
            check_update_v1(&item(8, 0, &content)).map_err(|e| e.kind),
            Err(BoundsErrorKind::CountTooLarge { .. })
        ));
    }

    #[test]
    fn clocks_near_the_limit_are_refused() {
        let mut s = Vec::new();
        s.write_string("ab");
        assert!(check_update_v1(&item(4, MAX_CLOCK - 2, &s)).is_ok());
        for clock in [MAX_CLOCK - 1, MAX_CLOCK, u32::MAX - 1] {
            assert!(
                matches!(
                    check_update_v1(&item(4, clock, &s)).map_err(|e| e.kind),
                    Err(BoundsErrorKind::ClockOverflow { client: 7, .. })
                ),
                "clock {clock}"
            );
        }
        // A deleted range reaching past the limit.
        let ds = [0, 1, 7, 1, 0xfe, 0xff, 0xff, 0xff, 0x07, 5];
        assert!(matches!(
            check_update_v1(&ds).map_err(|e| e.kind),
            Err(BoundsErrorKind::ClockOverflow { .. })
        ));
        // An Any integer: 10 bytes is the longest yrs reads without overflowing a shift.
        let ten = [
            1, 125, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(check_update_v1(&item(8, 0, &ten)).is_ok());
        let eleven = [
            1, 125, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(matches!(
            check_update_v1(&item(8, 0, &eleven)).map_err(|e| e.kind),
            Err(BoundsErrorKind::Truncated {
                what: "Any integer",
                ..
            })
        ));
        // The same client twice: its second section restarts the clocks.
        let mut twice = vec![2];
        for _ in 0..2 {
            twice.extend([1, 7, 0, 0, 3]);
        }
        twice.push(0);
        assert!(matches!(
            check_update_v1(&twice).map_err(|e| e.kind),
            Err(BoundsErrorKind::RepeatedClient(7))
        ));
        // A client id past 53 bits.
        let mut big = Vec::new();
        big.write_var(1u32);
        big.write_var(0u32);
        big.write_var(1u64 << 53);
        big.write_var(0u32);
        big.write_var(0u32);
        assert!(matches!(
            check_update_v1(&big).map_err(|e| e.kind),
            Err(BoundsErrorKind::ClientId(_))
        ));
    }

    #[test]
    fn every_cut_of_a_real_update_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let y = Doc::with_client_id(3);
        let map = y.get_or_insert_map("m");
        {
            let mut txn = y.transact_mut();
            map.insert(
                &mut txn,
                "v",
                yrs::Any::from_json(r#"{"a":[1,"two",{"b":null}]}"#)?,
            );
        }
        let full =
            yrs::ReadTxn::encode_state_as_update_v1(&y.transact(), &yrs::StateVector::default());
        check_update_v1(&full)?;
        for cut in 0..full.len() {
            assert!(check_update_v1(&full[..cut]).is_err(), "cut at {cut}");
        }
        Ok(())
    }

    #[test]
    fn json_texts_are_measured_and_bounded() {
        assert_eq!(
            check_json(r#"{"user":{"name":"a"},"cursors":{}}"#, 4),
            Ok(JsonShape {
                depth: 2,
                members: 3
            })
        );
        // Brackets and colons inside strings do not count.
        assert_eq!(check_json(r#"["[[[{:", "\"]"]"#, 1).map(|s| s.depth), Ok(1));
        assert!(check_json(&"[".repeat(10_000), 16).is_err());
        assert!(check_json("[[[]]]", 2).is_err());
        assert!(check_json("[[[]]]", 3).is_ok());
        assert!(check_json("{", 3).is_err());
        assert!(check_json("null", 0).is_ok());
    }
}
