//! The room document: one yrs [`Doc`] per room with a `files` map and a `meta` map.
//!
//! Layout (shared with the editor's Yjs replica, so the names are part of the format):
//! - `files`: `Y.Map<Y.Text>` from a relative path (`App.tsx`, `components/Button.tsx`) to the
//!   file's text;
//! - `meta`: `Y.Map<string>` for the entry file, the title and pinned package versions.
//!
//! Every position is counted in UTF-16 code units, as JavaScript and CodeMirror count them: the doc
//! is created with [`OffsetKind::Utf16`]. yrs' default counts bytes and would disagree with Yjs as
//! soon as a file holds anything outside ASCII.
//!
//! Every mutating method runs one transaction and returns its update (lib0 v1 encoding, the format
//! of `Y.encodeStateAsUpdate`), or `None` when nothing changed, so a caller can log and send it.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use yrs::types::{Event, PathSegment, ToJson};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Assoc, BranchID, DeepObservable, Doc, GetString, IndexedSequence, Map, MapRef, OffsetKind,
    Options, Origin, Out, ReadTxn, StateVector, Text, TextPrelim, TextRef, Transact, Update,
};

use crate::{CollabError, Selection};

/// Name of the root map from path to `Y.Text`.
pub const FILES: &str = "files";
/// Name of the root map of room metadata (string values).
pub const META: &str = "meta";
/// Longest accepted file path, in bytes.
pub const MAX_PATH_BYTES: usize = 512;

/// The update encoding of a transaction that changed nothing (no structs, empty delete set).
const EMPTY_UPDATE: [u8; 2] = [0, 0];

/// One text edit: delete `delete` UTF-16 code units at `offset`, then insert `insert` there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TextEdit {
    /// Start, in UTF-16 code units from the start of the file.
    pub offset: u32,
    /// How many UTF-16 code units to delete from `offset`.
    pub delete: u32,
    /// Text inserted at `offset` after the deletion.
    pub insert: String,
}

impl TextEdit {
    /// An insertion of `text` at `offset` (UTF-16 code units).
    pub fn insert(offset: u32, text: impl Into<String>) -> Self {
        Self {
            offset,
            delete: 0,
            insert: text.into(),
        }
    }

    /// A deletion of `len` UTF-16 code units at `offset`.
    pub fn delete(offset: u32, len: u32) -> Self {
        Self {
            offset,
            delete: len,
            insert: String::new(),
        }
    }
}

/// What one transaction changed in `files`, reported to [`RoomDoc::observe_files`] observers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilesChange {
    /// Paths whose text changed.
    pub edited: Vec<String>,
    /// Paths added, replaced or removed in the `files` map.
    pub entries: Vec<String>,
    /// Whether the change came from [`RoomDoc::apply_update`] (a peer or the log) rather than
    /// from a local edit.
    pub remote: bool,
}

/// Origin tag of transactions that apply updates from elsewhere (peers, the log).
const REMOTE: &str = "spike-remote";

/// A room's document. Cheap to clone: clones share the same yrs document.
#[derive(Clone)]
pub struct RoomDoc {
    doc: Doc,
    files: MapRef,
    meta: MapRef,
}

impl std::fmt::Debug for RoomDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomDoc")
            .field("client_id", &self.client_id())
            .finish_non_exhaustive()
    }
}

impl Default for RoomDoc {
    fn default() -> Self {
        Self::new()
    }
}

impl RoomDoc {
    /// A new empty document with a random client id.
    pub fn new() -> Self {
        Self::from_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        })
    }

    /// A new empty document with the given client id. Two live replicas must never share one.
    pub fn with_client_id(client_id: u64) -> Self {
        let mut options = Options::with_client_id(yrs::ClientID::new(client_id));
        options.offset_kind = OffsetKind::Utf16;
        Self::from_options(options)
    }

    fn from_options(mut options: Options) -> Self {
        // Keep deleted items instead of garbage-collecting them: with GC on, yrs 0.28 can panic
        // ("attempt to subtract with overflow", block_store.rs) applying a sync step 2 that
        // carries GC ranges over items a replica holds in part, and that replica then never
        // converges (found by tests/random.rs). Tombstones cost memory, not correctness.
        options.skip_gc = true;
        let doc = Doc::with_options(options);
        let files = doc.get_or_insert_map(FILES);
        let meta = doc.get_or_insert_map(META);
        Self { doc, files, meta }
    }

    /// The underlying yrs document.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// This replica's client id.
    pub fn client_id(&self) -> u64 {
        self.doc.client_id().get()
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> Vec<String> {
        let txn = self.doc.transact();
        let mut paths: Vec<String> = self.files.keys(&txn).map(str::to_owned).collect();
        paths.sort();
        paths
    }

    /// The text of `path`, or `None` when there is no such file.
    pub fn read(&self, path: &str) -> Option<String> {
        let txn = self.doc.transact();
        match self.files.get(&txn, path)? {
            Out::YText(text) => Some(text.get_string(&txn)),
            _ => None,
        }
    }

    /// Every file as `path → text`, sorted by path.
    pub fn files(&self) -> BTreeMap<String, String> {
        let txn = self.doc.transact();
        self.files
            .iter(&txn)
            .filter_map(|(path, value)| match value {
                Out::YText(text) => Some((path.to_owned(), text.get_string(&txn))),
                _ => None,
            })
            .collect()
    }

    /// A metadata value, if set to a string.
    pub fn meta(&self, key: &str) -> Option<String> {
        let txn = self.doc.transact();
        match self.meta.get(&txn, key)? {
            Out::Any(Any::String(s)) => Some(s.to_string()),
            _ => None,
        }
    }

    /// The whole document as JSON: `{"files": {path: text}, "meta": {key: value}}`, the shape
    /// `ydoc.toJSON()`-based comparisons in the tests use.
    pub fn to_json(&self) -> serde_json::Value {
        let txn = self.doc.transact();
        let mut root = serde_json::Map::new();
        for (name, map) in [(FILES, &self.files), (META, &self.meta)] {
            let any = map.to_json(&txn);
            let mut text = String::new();
            any.to_json(&mut text);
            let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            root.insert(name.to_owned(), value);
        }
        serde_json::Value::Object(root)
    }

    /// Creates `path` holding `text`.
    ///
    /// Errors: [`CollabError::InvalidPath`], [`CollabError::FileExists`].
    pub fn create_file(&self, path: &str, text: &str) -> Result<Option<Vec<u8>>, CollabError> {
        validate_path(path)?;
        let mut txn = self.doc.transact_mut();
        if self.files.get(&txn, path).is_some() {
            return Err(CollabError::FileExists(path.to_owned()));
        }
        self.files.insert(&mut txn, path, TextPrelim::new(text));
        Ok(non_empty(txn.encode_update_v1()))
    }

    /// Deletes `path`. Errors: [`CollabError::NoSuchFile`].
    pub fn delete_file(&self, path: &str) -> Result<Option<Vec<u8>>, CollabError> {
        let mut txn = self.doc.transact_mut();
        if self.files.remove(&mut txn, path).is_none() {
            return Err(CollabError::NoSuchFile(path.to_owned()));
        }
        Ok(non_empty(txn.encode_update_v1()))
    }

    /// Renames `from` to `to` in one transaction (a new text with the same content; edits a peer
    /// makes to `from` concurrently stay with `from`'s old text, as in any map-of-texts model).
    ///
    /// Errors: [`CollabError::InvalidPath`], [`CollabError::NoSuchFile`],
    /// [`CollabError::FileExists`].
    pub fn rename_file(&self, from: &str, to: &str) -> Result<Option<Vec<u8>>, CollabError> {
        validate_path(to)?;
        let mut txn = self.doc.transact_mut();
        let text = match self.files.get(&txn, from) {
            Some(Out::YText(text)) => text.get_string(&txn),
            _ => return Err(CollabError::NoSuchFile(from.to_owned())),
        };
        if self.files.get(&txn, to).is_some() {
            return Err(CollabError::FileExists(to.to_owned()));
        }
        self.files.remove(&mut txn, from);
        self.files.insert(&mut txn, to, TextPrelim::new(text));
        Ok(non_empty(txn.encode_update_v1()))
    }

    /// Applies `edits` in order to `path` in one transaction; each edit's offset is relative to
    /// the text as the previous edits left it.
    ///
    /// Errors: [`CollabError::NoSuchFile`]; [`CollabError::EditOutOfRange`] when an edit reaches
    /// past the end; [`CollabError::SplitsSurrogatePair`] when a boundary falls inside an
    /// astral character (an emoji is two UTF-16 code units). Nothing is applied on error.
    pub fn edit(&self, path: &str, edits: &[TextEdit]) -> Result<Option<Vec<u8>>, CollabError> {
        let mut txn = self.doc.transact_mut();
        let text: TextRef = match self.files.get(&txn, path) {
            Some(Out::YText(text)) => text,
            _ => return Err(CollabError::NoSuchFile(path.to_owned())),
        };
        // Check every edit against a UTF-16 copy first so that a bad edit applies nothing.
        let mut units: Vec<u16> = text.get_string(&txn).encode_utf16().collect();
        for edit in edits {
            check_edit(path, &units, edit)?;
            let start = edit.offset as usize;
            let end = start + edit.delete as usize;
            units.splice(start..end, edit.insert.encode_utf16());
        }
        for edit in edits {
            if edit.delete > 0 {
                text.remove_range(&mut txn, edit.offset, edit.delete);
            }
            if !edit.insert.is_empty() {
                text.insert(&mut txn, edit.offset, &edit.insert);
            }
        }
        Ok(non_empty(txn.encode_update_v1()))
    }

    /// A selection in `path` from UTF-16 offsets, as relative positions that keep pointing at the
    /// same characters while the text changes (what [`crate::Presence`] publishes). Offsets past
    /// the end are clamped. `None` when there is no such file.
    pub fn selection(&self, path: &str, anchor: u32, head: u32) -> Option<Selection> {
        let txn = self.doc.transact();
        let text = self.text(&txn, path)?;
        let len = text.len(&txn);
        Some(Selection {
            anchor: text.sticky_index(&txn, anchor.min(len), Assoc::After)?,
            head: text.sticky_index(&txn, head.min(len), Assoc::After)?,
        })
    }

    /// Where `selection` is in `path` now: `(anchor, head)` in UTF-16 code units. `None` when
    /// there is no such file, or the positions belong to another text (a peer's stale cursor in
    /// a file that was deleted and created again) or to content this replica has not received.
    pub fn resolve_selection(&self, path: &str, selection: &Selection) -> Option<(u32, u32)> {
        let txn = self.doc.transact();
        let text = self.text(&txn, path)?;
        let own: BranchID = AsRef::<yrs::branch::Branch>::as_ref(&text).id();
        let at = |pos: &yrs::StickyIndex| {
            let offset = pos.get_offset(&txn)?;
            (offset.branch.id() == own).then_some(offset.index)
        };
        Some((at(&selection.anchor)?, at(&selection.head)?))
    }

    fn text<T: ReadTxn>(&self, txn: &T, path: &str) -> Option<TextRef> {
        match self.files.get(txn, path)? {
            Out::YText(text) => Some(text),
            _ => None,
        }
    }

    /// Sets a metadata string.
    pub fn set_meta(&self, key: &str, value: &str) -> Option<Vec<u8>> {
        let mut txn = self.doc.transact_mut();
        self.meta.insert(&mut txn, key, value);
        non_empty(txn.encode_update_v1())
    }

    /// Creates every file of `files` that does not exist yet, and sets `meta` keys, in one
    /// transaction. Used to seed a room from a template.
    pub fn seed(&self, files: &[(&str, &str)], meta: &[(&str, &str)]) -> Option<Vec<u8>> {
        let mut txn = self.doc.transact_mut();
        for (path, text) in files {
            if validate_path(path).is_ok() && self.files.get(&txn, path).is_none() {
                self.files.insert(&mut txn, *path, TextPrelim::new(*text));
            }
        }
        for (key, value) in meta {
            self.meta.insert(&mut txn, *key, *value);
        }
        non_empty(txn.encode_update_v1())
    }

    /// The state vector (which clocks of which clients this replica holds).
    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Everything this replica has that a replica at `sv` lacks (a sync step 2 payload).
    pub fn encode_diff(&self, sv: &StateVector) -> Vec<u8> {
        self.doc.transact().encode_diff_v1(sv)
    }

    /// The whole document as one update (`Y.encodeStateAsUpdate`). Updates still waiting for a
    /// missing dependency are not included; an update log keeps those (see [`crate::UpdateLog`]).
    pub fn encode_state(&self) -> Vec<u8> {
        self.encode_diff(&StateVector::default())
    }

    /// Applies an update from a peer or a log (lib0 v1). Returns what became part of the
    /// document (the integrated update, empty-change filtered), which is what a server
    /// broadcasts; parts with a missing dependency wait inside the doc until it arrives.
    ///
    /// Errors: [`CollabError::UpdateOutOfBounds`] or [`CollabError::MalformedUpdate`] when the
    /// bytes are outside the decoding bounds or do not decode (nothing applied),
    /// [`CollabError::Apply`] when yrs rejects or panics on the update. After an `Apply` error
    /// the document may be partially changed: a server should drop and reload the room.
    pub fn apply_update(&self, update: &[u8]) -> Result<Option<Vec<u8>>, CollabError> {
        crate::bounds::check_update_v1(update)?;
        self.apply_checked(update)
    }

    /// [`RoomDoc::apply_update`] of an update that [`crate::bounds::check_update_v1`] has
    /// already accepted (the walk is not repeated).
    fn apply_checked(&self, update: &[u8]) -> Result<Option<Vec<u8>>, CollabError> {
        let decoded = decode_checked(update)?;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = self.doc.transact_mut_with(REMOTE);
            txn.apply_update(decoded)
                .map_err(|e| CollabError::Apply(e.to_string()))?;
            Ok::<_, CollabError>(non_empty(txn.encode_update_v1()))
        }));
        match result {
            Ok(r) => r,
            Err(panic) => Err(CollabError::Apply(panic_message(&panic))),
        }
    }

    /// [`RoomDoc::apply_update`] for updates from peers that must arrive in order, as a
    /// server receives them: an update whose structs for some client start past this replica's
    /// clock for that client (a gap in that client's own history) is refused with
    /// [`CollabError::UpdateGap`] before yrs sees it. yrs 0.28 keeps such a gap as a skip
    /// placeholder in its block store, and an update that later overlaps it inconsistently
    /// panics in the middle of its transaction (found by the fuzz target); a y-websocket
    /// client never sends one (its history reaches the server in order, and a reconnect
    /// resends it from the server's state vector). Updates that wait for another client's
    /// structs (an origin or parent not yet here) still wait, as with `apply_update`.
    ///
    /// Errors: those of [`RoomDoc::apply_update`], and [`CollabError::UpdateGap`].
    pub fn apply_update_in_order(&self, update: &[u8]) -> Result<Option<Vec<u8>>, CollabError> {
        let shape = crate::bounds::check_update_v1(update)?;
        let sv = self.state_vector();
        let mut pending = None;
        for (client, starts_at, _) in shape.sections {
            let mut have = sv.get(&yrs::ClientID::new(client));
            if starts_at > have {
                // Its history may be waiting too (for another client's structs): continuing
                // it is in order.
                let waiting = pending.get_or_insert_with(|| self.pending_sections());
                for (c, first, end) in waiting.iter() {
                    if *c == client && *first <= have {
                        have = have.max(*end);
                    }
                }
            }
            if starts_at > have {
                return Err(CollabError::UpdateGap {
                    client,
                    starts_at,
                    have,
                });
            }
        }
        self.apply_checked(update)
    }

    /// The sections of the update waiting for a missing dependency, as
    /// [`crate::bounds::UpdateShape::sections`] measures them.
    fn pending_sections(&self) -> Vec<(u64, u32, u32)> {
        let txn = self.doc.transact();
        txn.store()
            .pending_update()
            .and_then(|p| crate::bounds::check_update_v1(&p.update.encode_v1()).ok())
            .map(|shape| shape.sections)
            .unwrap_or_default()
    }

    /// Whether some applied update still waits for a missing dependency.
    pub fn has_pending(&self) -> bool {
        let txn = self.doc.transact();
        txn.store().pending_update().is_some() || txn.store().pending_ds().is_some()
    }

    /// Calls `f` after every transaction that changed `files`, until [`RoomDoc::unobserve_files`]
    /// with the same `key`. `f` runs inside the transaction: it must not touch the document.
    pub fn observe_files<F>(&self, key: &str, f: F)
    where
        F: Fn(&FilesChange) + Send + Sync + 'static,
    {
        self.files.observe_deep(key.to_owned(), move |txn, events| {
            let mut change = FilesChange {
                remote: txn.origin() == Some(&Origin::from(REMOTE)),
                ..FilesChange::default()
            };
            for event in events.iter() {
                match event {
                    Event::Map(map) => {
                        change
                            .entries
                            .extend(map.keys(txn).keys().map(|k| k.to_string()));
                    }
                    Event::Text(_) => {
                        if let Some(PathSegment::Key(path)) = event.path().front() {
                            change.edited.push(path.to_string());
                        }
                    }
                    _ => {}
                }
            }
            change.entries.sort();
            change.edited.sort();
            change.edited.dedup();
            f(&change);
        });
    }

    /// Stops the observer registered under `key`.
    pub fn unobserve_files(&self, key: &str) {
        self.files.unobserve_deep(key.to_owned());
    }
}

/// Decodes a lib0 v1 update after checking it against the decoding bounds
/// ([`crate::bounds::check_update_v1`]), turning a decoder panic into an error.
///
/// Errors: [`CollabError::UpdateOutOfBounds`] (nothing was decoded),
/// [`CollabError::MalformedUpdate`] (yrs refused or panicked).
pub fn decode_update(update: &[u8]) -> Result<Update, CollabError> {
    crate::bounds::check_update_v1(update)?;
    decode_checked(update)
}

/// [`decode_update`] of an update the bounds have already accepted.
fn decode_checked(update: &[u8]) -> Result<Update, CollabError> {
    match catch_unwind(|| Update::decode_v1(update)) {
        Ok(Ok(u)) => Ok(u),
        Ok(Err(e)) => Err(CollabError::MalformedUpdate(e.to_string())),
        Err(panic) => Err(CollabError::MalformedUpdate(panic_message(&panic))),
    }
}

/// Encodes a state vector (lib0 v1) as sync step 1 carries it.
pub fn encode_state_vector(sv: &StateVector) -> Vec<u8> {
    sv.encode_v1()
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("yrs panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("yrs panicked: {s}")
    } else {
        "yrs panicked".to_owned()
    }
}

fn non_empty(update: Vec<u8>) -> Option<Vec<u8>> {
    (update != EMPTY_UPDATE).then_some(update)
}

/// A path is relative, `/`-separated, without empty, `.` or `..` segments, NUL or backslash.
pub fn validate_path(path: &str) -> Result<(), CollabError> {
    let bad = |reason: &'static str| CollabError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad("longer than 512 bytes"));
    }
    if path.contains(['\0', '\\']) {
        return Err(bad("contains NUL or a backslash"));
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad(
            "has an empty, `.` or `..` segment (or starts with `/`)",
        ));
    }
    Ok(())
}

fn check_edit(path: &str, units: &[u16], edit: &TextEdit) -> Result<(), CollabError> {
    let len = units.len();
    let end = edit.offset as usize + edit.delete as usize;
    if end > len {
        return Err(CollabError::EditOutOfRange {
            path: path.to_owned(),
            offset: edit.offset,
            delete: edit.delete,
            len: len as u32,
        });
    }
    // A boundary at `i` splits a pair when unit i is a low surrogate (its high one is at i - 1).
    let splits = |i: usize| i < len && (0xDC00..=0xDFFF).contains(&units[i]);
    for at in [edit.offset as usize, end] {
        if splits(at) {
            return Err(CollabError::SplitsSurrogatePair {
                path: path.to_owned(),
                offset: at as u32,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_count_utf16_code_units() -> Result<(), CollabError> {
        let doc = RoomDoc::with_client_id(1);
        doc.create_file("App.tsx", "a😀b")?;
        // 😀 is two UTF-16 code units: "b" starts at 3.
        doc.edit("App.tsx", &[TextEdit::insert(3, "漢")])?;
        assert_eq!(doc.read("App.tsx").as_deref(), Some("a😀漢b"));
        doc.edit("App.tsx", &[TextEdit::delete(1, 2)])?;
        assert_eq!(doc.read("App.tsx").as_deref(), Some("a漢b"));
        Ok(())
    }

    #[test]
    fn bad_edits_apply_nothing() -> Result<(), CollabError> {
        let doc = RoomDoc::with_client_id(1);
        doc.create_file("a.ts", "x😀")?;
        let err = doc.edit(
            "a.ts",
            &[TextEdit::insert(0, "ok"), TextEdit::insert(4, "no")],
        );
        assert!(matches!(
            err,
            Err(CollabError::SplitsSurrogatePair { offset: 4, .. })
        ));
        let err = doc.edit("a.ts", &[TextEdit::delete(2, 5)]);
        assert!(matches!(
            err,
            Err(CollabError::EditOutOfRange { len: 3, .. })
        ));
        assert_eq!(doc.read("a.ts").as_deref(), Some("x😀"));
        assert!(matches!(
            doc.edit("missing.ts", &[]),
            Err(CollabError::NoSuchFile(_))
        ));
        Ok(())
    }

    #[test]
    fn file_operations_and_json() -> Result<(), CollabError> {
        let doc = RoomDoc::with_client_id(7);
        doc.create_file("App.tsx", "app")?;
        doc.create_file("components/Button.tsx", "btn")?;
        assert!(matches!(
            doc.create_file("App.tsx", ""),
            Err(CollabError::FileExists(_))
        ));
        assert!(matches!(
            doc.create_file("../x", ""),
            Err(CollabError::InvalidPath { .. })
        ));
        doc.rename_file("components/Button.tsx", "components/Btn.tsx")?;
        doc.delete_file("App.tsx")?;
        doc.set_meta("entry", "main.tsx");
        assert_eq!(doc.paths(), vec!["components/Btn.tsx".to_owned()]);
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"files": {"components/Btn.tsx": "btn"}, "meta": {"entry": "main.tsx"}})
        );
        // Setting a key again is a new (last-writer-wins) item, hence an update.
        assert!(doc.set_meta("entry", "main.tsx").is_some());
        Ok(())
    }

    #[test]
    fn replicas_converge_through_updates_and_diffs() -> Result<(), CollabError> {
        let a = RoomDoc::with_client_id(1);
        let b = RoomDoc::with_client_id(2);
        let u = a.create_file("f.ts", "hello")?.ok_or(CollabError::Closed)?;
        b.apply_update(&u)?;
        a.edit("f.ts", &[TextEdit::insert(5, " 👋 world")])?;
        b.edit("f.ts", &[TextEdit::insert(0, "«")])?;
        let to_b = a.encode_diff(&b.state_vector());
        let to_a = b.encode_diff(&a.state_vector());
        b.apply_update(&to_b)?;
        a.apply_update(&to_a)?;
        assert_eq!(a.read("f.ts"), b.read("f.ts"));
        assert_eq!(a.read("f.ts").as_deref(), Some("«hello 👋 world"));
        Ok(())
    }

    #[test]
    fn observers_see_local_and_remote_changes() -> Result<(), CollabError> {
        use std::sync::{Arc, Mutex};
        let a = RoomDoc::with_client_id(1);
        let b = RoomDoc::with_client_id(2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        b.observe_files("test", move |c| {
            if let Ok(mut v) = sink.lock() {
                v.push(c.clone());
            }
        });
        let u = a.create_file("x.ts", "1")?;
        b.apply_update(&u.unwrap_or_default())?;
        b.edit("x.ts", &[TextEdit::insert(1, "2")])?;
        let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].entries, vec!["x.ts".to_owned()]);
        assert!(seen[0].remote);
        assert_eq!(seen[1].edited, vec!["x.ts".to_owned()]);
        assert!(!seen[1].remote);
        Ok(())
    }

    #[test]
    fn garbage_updates_are_rejected_without_change() {
        let doc = RoomDoc::with_client_id(1);
        for bad in [&[0xff_u8, 0xff, 0xff][..], &[1, 1, 5], &[200], &[]] {
            let r = doc.apply_update(bad);
            assert!(r.is_err(), "{bad:?} should be rejected, got {r:?}");
        }
        assert_eq!(doc.paths(), Vec::<String>::new());
    }
}
