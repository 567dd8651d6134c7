//! Turns a whole-file rewrite (a format) into the smallest list of text edits, so that applying
//! it as CRDT operations leaves untouched characters, and so collaborators' cursors and
//! concurrent edits, where they were.

use std::time::{Duration, Instant};

use similar::{Algorithm, DiffOp, TextDiff};
use spike_collab::TextEdit;

/// How long the diff may search for a minimal script before settling for a larger (still
/// correct) one. Formatter output is close to its input, so this is rarely reached.
const DIFF_DEADLINE: Duration = Duration::from_millis(500);

/// Edits that turn `old` into `new`, in the form [`spike_collab::RoomDoc::edit`] takes: offsets in
/// UTF-16 code units, each relative to the text as the previous edits left it. Empty when the
/// texts are equal.
pub fn minimal_edits(old: &str, new: &str) -> Vec<TextEdit> {
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .deadline(Instant::now() + DIFF_DEADLINE)
        .diff_chars(old, new);
    // Character index → UTF-16 offset, for the old text (similar's char ops index chars).
    let old_chars: Vec<char> = old.chars().collect();
    let new_chars: Vec<char> = new.chars().collect();
    let mut utf16_at = Vec::with_capacity(old_chars.len() + 1);
    let mut acc = 0u32;
    for c in &old_chars {
        utf16_at.push(acc);
        acc += c.len_utf16() as u32;
    }
    utf16_at.push(acc);
    debug_assert_eq!(acc as usize, old.encode_utf16().count());

    let mut edits: Vec<TextEdit> = Vec::new();
    // How far the text as edited so far is shifted from the old text's offsets.
    let mut shift: i64 = 0;
    for op in diff.ops() {
        let (old_range, new_range) = match *op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index..old_index + old_len, 0..0),
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => (old_index..old_index, new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (
                old_index..old_index + old_len,
                new_index..new_index + new_len,
            ),
        };
        let start = utf16_at[old_range.start];
        let delete = utf16_at[old_range.end] - start;
        let insert: String = new_chars[new_range].iter().collect();
        let offset = (i64::from(start) + shift) as u32;
        shift += insert.encode_utf16().count() as i64 - i64::from(delete);
        // Merge with the previous edit when they touch, to keep the list short.
        if let Some(last) = edits.last_mut() {
            let last_end = last.offset + last.insert.encode_utf16().count() as u32;
            if last_end == offset {
                last.delete += delete;
                last.insert.push_str(&insert);
                continue;
            }
        }
        edits.push(TextEdit {
            offset,
            delete,
            insert,
        });
    }
    edits
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
