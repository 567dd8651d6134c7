//! Text differences as CRDT edits: what a format, a file saved on disk or any other whole-text
//! change becomes in a room, so that a collaborator's concurrent edits elsewhere in the file and
//! everyone's cursors survive it (a replace-all would delete and reinsert every character).
//!
//! A character-level Myers diff from `similar` (with a deadline, after which it settles for a
//! larger but still correct script), converted to the UTF-16 offsets [`crate::RoomDoc::edit`]
//! takes.

use std::time::{Duration, Instant};

use similar::{Algorithm, DiffOp, TextDiff};

use crate::{CollabError, RoomDoc, TextEdit};

/// How long the diff may search for a minimal script before settling for a larger (still
/// correct) one.
const DIFF_DEADLINE: Duration = Duration::from_millis(500);

/// Edits that turn `old` into `new`, as [`crate::RoomDoc::edit`] takes them: offsets in UTF-16 code
/// units, each relative to the text as the previous edits left it. Empty when equal.
pub fn minimal_edits(old: &str, new: &str) -> Vec<TextEdit> {
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .deadline(Instant::now() + DIFF_DEADLINE)
        .diff_chars(old, new);
    let new_chars: Vec<char> = new.chars().collect();
    let mut utf16_at = Vec::with_capacity(old.len() + 1);
    let mut acc = 0u32;
    for c in old.chars() {
        utf16_at.push(acc);
        acc += c.len_utf16() as u32;
    }
    utf16_at.push(acc);

    let mut edits: Vec<TextEdit> = Vec::new();
    // Positions are tracked from the ops' lengths alone: similar reports an `Insert`'s
    // `old_index` at the start of the preceding equal run in some cases ("= 91" → "= 101"
    // gives Insert { old_index: 3 } after Equal { old_index: 3, len: 1 }), so it cannot be
    // trusted as a position.
    let (mut old_pos, mut new_pos) = (0usize, 0usize);
    // Where the text as edited so far stands, in UTF-16 code units.
    let mut at: u32 = 0;
    for op in diff.ops() {
        let (old_len, new_len, equal) = match *op {
            DiffOp::Equal { len, .. } => (len, len, true),
            DiffOp::Delete { old_len, .. } => (old_len, 0, false),
            DiffOp::Insert { new_len, .. } => (0, new_len, false),
            DiffOp::Replace {
                old_len, new_len, ..
            } => (old_len, new_len, false),
        };
        let old_units = utf16_at[old_pos + old_len] - utf16_at[old_pos];
        old_pos += old_len;
        let insert: String = new_chars[new_pos..new_pos + new_len].iter().collect();
        new_pos += new_len;
        if equal {
            at += old_units;
            continue;
        }
        let inserted = insert.encode_utf16().count() as u32;
        match edits.last_mut() {
            // Merge with the previous edit when they touch, to keep the list short.
            Some(last) if last.offset + last.insert.encode_utf16().count() as u32 == at => {
                last.delete += old_units;
                last.insert.push_str(&insert);
            }
            _ => edits.push(TextEdit {
                offset: at,
                delete: old_units,
                insert,
            }),
        }
        at += inserted;
    }
    edits
}

impl RoomDoc {
    /// Replaces the text of `path`, which the caller read as `expected_old`, with `new`, as the
    /// [`minimal_edits`] between the two (so concurrent edits elsewhere in the file and cursors
    /// survive), but only if the file still holds exactly `expected_old`. Returns the update
    /// (lib0 v1) to send, or `None` when `new == expected_old`.
    ///
    /// The check and the edits are separate transactions: a caller sharing the document with
    /// other writers must hold them off meanwhile ([`crate::Session::replace_text`] does, under
    /// its replica lock).
    ///
    /// Errors: [`CollabError::NoSuchFile`]; [`CollabError::TextChanged`] when the text is not
    /// `expected_old` (nothing applied: re-read, recompute and retry).
    pub fn replace_text(
        &self,
        path: &str,
        expected_old: &str,
        new: &str,
    ) -> Result<Option<Vec<u8>>, CollabError> {
        apply_if_unchanged(self, path, expected_old, &minimal_edits(expected_old, new))
    }
}

/// Applies `edits` (computed against `expected_old`) to `path` if it still holds exactly
/// `expected_old`: the one place where whole-text replacements reach a document.
///
/// Errors: [`CollabError::NoSuchFile`], [`CollabError::TextChanged`] (nothing applied).
pub(crate) fn apply_if_unchanged(
    doc: &RoomDoc,
    path: &str,
    expected_old: &str,
    edits: &[TextEdit],
) -> Result<Option<Vec<u8>>, CollabError> {
    match doc.read(path) {
        None => Err(CollabError::NoSuchFile(path.to_owned())),
        Some(current) if current != expected_old => Err(CollabError::TextChanged {
            path: path.to_owned(),
        }),
        Some(_) if edits.is_empty() => Ok(None),
        Some(_) => doc.edit(path, edits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies edits the way `RoomDoc::edit` documents them, on UTF-16 code units.
    fn apply(old: &str, edits: &[TextEdit]) -> String {
        let mut units: Vec<u16> = old.encode_utf16().collect();
        for e in edits {
            let start = e.offset as usize;
            units.splice(start..start + e.delete as usize, e.insert.encode_utf16());
        }
        String::from_utf16(&units).expect("edits keep surrogate pairs whole")
    }

    #[test]
    fn edits_round_trip_with_astral_characters() {
        let old = "a 👋 b\nline two\n";
        let new = "a 👋👋 b\nline 2\nthree\n";
        let edits = minimal_edits(old, new);
        assert_eq!(apply(old, &edits), new);
        assert!(minimal_edits(new, new).is_empty());
    }

    #[test]
    fn edits_round_trip_on_burst_texts() {
        for a in 0..1000 {
            for b in [a + 10, a + 80, 999] {
                let old = format!("export const v5 = {a};\n");
                let new = format!("export const v5 = {b};\n");
                let edits = minimal_edits(&old, &new);
                assert_eq!(apply(&old, &edits), new, "{edits:?}");
            }
        }
    }

    #[test]
    fn edits_round_trip_on_random_texts() {
        // A fixed-seed LCG: no dependency, the same cases on every run.
        let mut seed: u64 = 0x5eed;
        let mut next = move |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let alphabet = ["a", "b", "1", " ", "\n", "é", "👋", "漢"];
        let text = |next: &mut dyn FnMut(usize) -> usize| {
            let len = next(24);
            (0..len)
                .map(|_| alphabet[next(alphabet.len())])
                .collect::<String>()
        };
        for _ in 0..3000 {
            let old = text(&mut next);
            let new = text(&mut next);
            let edits = minimal_edits(&old, &new);
            assert_eq!(apply(&old, &edits), new, "{old:?} → {new:?}: {edits:?}");
        }
    }

    #[test]
    fn equal_texts_need_no_edit() {
        assert_eq!(minimal_edits("const a = 1;\n", "const a = 1;\n"), vec![]);
    }

    #[test]
    fn a_format_touches_only_whitespace_and_punctuation() {
        let old = "const  a=1\nexport default function App(){return <b>hi</b>}\n";
        let new = "const a = 1;\nexport default function App() {\n  return <b>hi</b>;\n}\n";
        let edits = minimal_edits(old, new);
        assert_eq!(apply(old, &edits), new);
        let inserted: usize = edits.iter().map(|e| e.insert.len()).sum();
        let deleted: u32 = edits.iter().map(|e| e.delete).sum();
        // By hand: one of the two spaces goes; " ", " ", ";" on line 1, then " ", "\n  " and
        // ";\n" on line 2 come in: 9 characters. Every word of the old text stays in place.
        assert_eq!(deleted, 1);
        assert_eq!(inserted, 9);
    }

    #[test]
    fn offsets_count_utf16_units_after_astral_characters() {
        let old = "const s = \"👋\"  ;";
        let new = "const s = \"👋\";";
        let edits = minimal_edits(old, new);
        // "const s = \"" is 11 units, the emoji 2, the quote 1: the spaces start at 14.
        assert_eq!(edits, vec![TextEdit::delete(14, 2)]);
        assert_eq!(apply(old, &edits), new);
    }

    #[test]
    fn replace_text_applies_only_over_the_expected_text() -> Result<(), CollabError> {
        let doc = RoomDoc::new();
        doc.create_file("a.ts", "const  a=1")?;
        let err = doc.replace_text("a.ts", "const a=1", "const a = 1;");
        assert!(matches!(err, Err(CollabError::TextChanged { ref path }) if path == "a.ts"));
        assert_eq!(doc.read("a.ts").as_deref(), Some("const  a=1"));
        assert!(doc
            .replace_text("a.ts", "const  a=1", "const  a=1")?
            .is_none());
        assert!(doc
            .replace_text("a.ts", "const  a=1", "const a = 1;")?
            .is_some());
        assert_eq!(doc.read("a.ts").as_deref(), Some("const a = 1;"));
        assert!(matches!(
            doc.replace_text("b.ts", "", "x"),
            Err(CollabError::NoSuchFile(_))
        ));
        Ok(())
    }

    #[test]
    fn later_offsets_account_for_earlier_edits() {
        let old = "a b c";
        let new = "xa b cy";
        let edits = minimal_edits(old, new);
        assert_eq!(
            edits,
            vec![TextEdit::insert(0, "x"), TextEdit::insert(6, "y")]
        );
        assert_eq!(apply(old, &edits), new);
    }
}
