//! The three-way merge through the CRDT (text differences become edits through
//! [`RoomDoc::replace_text`], i.e. [`spike_collab::minimal_edits`]).

use spike_collab::{CollabError, RoomDoc};

/// Merges two descendants of `base` through the CRDT: two scratch replicas start from `base`,
/// one applies the `base → ours` edits, the other the `base → theirs` edits, and they exchange
/// updates. Every insertion of both sides survives; text both sides deleted stays deleted;
/// insertions at the same place are ordered by replica id, deterministically.
pub fn merge3(base: &str, ours: &str, theirs: &str) -> Result<String, CollabError> {
    const F: &str = "f";
    let a = RoomDoc::with_client_id(1);
    let b = RoomDoc::with_client_id(2);
    a.create_file(F, base)?;
    b.apply_update(&a.encode_state())?;
    a.replace_text(F, base, ours)?;
    b.replace_text(F, base, theirs)?;
    a.apply_update(&b.encode_diff(&a.state_vector()))?;
    Ok(a.read(F).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_both_sides() -> Result<(), CollabError> {
        let base = "one\ntwo\nthree\n";
        let merged = merge3(base, "ONE\ntwo\nthree\n", "one\ntwo\nthree!\n")?;
        assert_eq!(merged, "ONE\ntwo\nthree!\n");
        // Same insertion point: both kept, in a fixed order.
        let merged = merge3("x", "xa", "xb")?;
        assert!(merged == "xab" || merged == "xba", "{merged}");
        assert_eq!(merge3("x", "xa", "xb")?, merged);
        Ok(())
    }
}
