//! A synthetic editing trace replayed through a Spike room document.
//!
//! No real trace (such as the B4 "automerge-paper" trace) ships in an installed package, so the
//! bench makes one: seeded, single-character operations at a cursor that mostly moves with the
//! typing (type forward, backspace) and now and then jumps elsewhere in the file, as a person
//! editing does.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use spike_collab::{RoomDoc, TextEdit};
use yrs::{GetString as _, Options, Text as _, Transact as _};

/// One operation: at `offset` (UTF-16 units), delete one unit or insert one character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Insert `char` at the offset.
    Insert(u32, char),
    /// Delete the unit at the offset.
    Delete(u32),
}

/// `ops` operations from `seed`: ~85 % inserts at the cursor, ~12 % backspaces, and a jump to a
/// random offset on ~2 % of operations. Every character is in the Basic Multilingual Plane
/// (one UTF-16 unit), a few outside ASCII.
pub fn synthetic(ops: usize, seed: u64) -> Vec<Op> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz      \n\n(){};=.,";
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::with_capacity(ops);
    let mut len = 0u32;
    let mut cursor = 0u32;
    for _ in 0..ops {
        if rng.f64() < 0.02 {
            cursor = rng.u32(0..=len);
        }
        if cursor > 0 && rng.f64() < 0.12 {
            cursor -= 1;
            len -= 1;
            out.push(Op::Delete(cursor));
        } else {
            let ch = if rng.f64() < 0.01 {
                'é'
            } else {
                char::from(ALPHABET[rng.usize(0..ALPHABET.len())])
            };
            out.push(Op::Insert(cursor, ch));
            cursor += 1;
            len += 1;
        }
    }
    out
}

/// What a replay measured.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Operations replayed.
    pub ops: usize,
    /// Final text length, UTF-16 units.
    pub final_len: usize,
    /// One transaction per operation through [`RoomDoc::edit`] (the path a Spike client's edits take).
    pub local: Duration,
    /// The same operations straight on a yrs `Y.Text` (UTF-16 offsets), one transaction each.
    pub plain_yrs: Duration,
    /// Applying the per-operation updates to a fresh [`RoomDoc`] (what a room server does).
    pub remote: Duration,
    /// Loading the final state (one update) into a fresh [`RoomDoc`].
    pub load: Duration,
    /// Sum of the per-operation update sizes, bytes.
    pub updates_bytes: usize,
    /// The whole document as one update (`encode_state`), bytes.
    pub state_bytes: usize,
}

/// Replays `ops` and checks that the three documents end with the same text.
pub fn replay(ops: &[Op]) -> anyhow::Result<Replay> {
    const PATH: &str = "trace.txt";
    let doc = RoomDoc::with_client_id(1);
    let mut updates = Vec::with_capacity(ops.len() + 1);
    updates.extend(doc.create_file(PATH, "")?);
    let t = Instant::now();
    for op in ops {
        let edit = match *op {
            Op::Insert(at, ch) => TextEdit::insert(at, ch.to_string()),
            Op::Delete(at) => TextEdit::delete(at, 1),
        };
        if let Some(u) = doc.edit(PATH, &[edit])? {
            updates.push(u);
        }
    }
    let local = t.elapsed();
    let text = doc.read(PATH).context("trace file vanished")?;

    let mut options = Options::with_client_id(yrs::ClientID::new(2));
    options.offset_kind = yrs::OffsetKind::Utf16;
    let plain = yrs::Doc::with_options(options);
    let y = plain.get_or_insert_text("trace");
    let t = Instant::now();
    for op in ops {
        let mut txn = plain.transact_mut();
        match *op {
            Op::Insert(at, ch) => y.insert(&mut txn, at, ch.encode_utf8(&mut [0; 4])),
            Op::Delete(at) => y.remove_range(&mut txn, at, 1),
        }
    }
    let plain_yrs = t.elapsed();
    anyhow::ensure!(
        y.get_string(&plain.transact()) == text,
        "plain yrs replay diverged from the room document"
    );

    let replica = RoomDoc::with_client_id(3);
    let t = Instant::now();
    for u in &updates {
        replica.apply_update(u)?;
    }
    let remote = t.elapsed();
    let state = doc.encode_state();
    let loaded = RoomDoc::with_client_id(4);
    let t = Instant::now();
    loaded.apply_update(&state)?;
    let load = t.elapsed();
    anyhow::ensure!(
        replica.read(PATH).as_deref() == Some(text.as_str())
            && loaded.read(PATH).as_deref() == Some(text.as_str()),
        "replicas diverged from the room document"
    );
    Ok(Replay {
        ops: ops.len(),
        final_len: text.encode_utf16().count(),
        local,
        plain_yrs,
        remote,
        updates_bytes: updates.iter().map(Vec::len).sum(),
        state_bytes: state.len(),
        load,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_is_deterministic_and_replays() -> anyhow::Result<()> {
        let a = synthetic(2_000, 7);
        assert_eq!(a, synthetic(2_000, 7));
        let r = replay(&a)?;
        assert_eq!(r.ops, 2_000);
        assert!(r.final_len > 1_000);
        assert!(r.state_bytes > 0 && r.updates_bytes > r.state_bytes);
        Ok(())
    }
}
