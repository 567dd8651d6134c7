//! Code-editing tools: what the model may call to change a room's files, the structured
//! [`Edit`]s its calls become, and their validation and application to a room as CRDT edits.
//!
//! In the spirit of spike.land's editor tools: read a file, replace a range of lines, search
//! and replace, create a file. The model never overwrites a whole file: every change names the
//! text it expects to replace, which is checked against the room's current text, and the result
//! reaches the room as the minimal character edits ([`spike_collab::minimal_edits`]) from the
//! old text to the new, so collaborators' concurrent edits elsewhere and their cursors survive.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use spike_collab::{minimal_edits, CollabError, RoomDoc, Session, TextEdit};

use crate::{Message, Tool, ToolCall};

/// Tool name: read a file of the room.
pub const READ_FILE: &str = "read_file";
/// Tool name: replace lines `start_line..=end_line`.
pub const REPLACE_RANGE: &str = "replace_range";
/// Tool name: replace one exact occurrence of a text.
pub const SEARCH_REPLACE: &str = "search_replace";
/// Tool name: create a new file.
pub const CREATE_FILE: &str = "create_file";

/// The four editing tools, to put in [`crate::ChatRequest::tools`].
pub fn editing_tools() -> Vec<Tool> {
    vec![
        Tool {
            name: READ_FILE.to_owned(),
            description: "Read the current text of a file in the room, before editing it."
                .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {"path": {"type": "string", "description": "File path, e.g. App.tsx"}},
                "required": ["path"]
            }),
        },
        Tool {
            name: REPLACE_RANGE.to_owned(),
            description:
                "Replace lines start_line..=end_line (1-based) of a file. old_text must be \
                          exactly the current text of those lines; the edit is refused if the file \
                          changed."
                    .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "start_line": {"type": "integer", "minimum": 1},
                    "end_line": {"type": "integer", "minimum": 1},
                    "old_text": {"type": "string", "description": "The current text of the lines"},
                    "new_text": {"type": "string", "description": "Their replacement"}
                },
                "required": ["path", "start_line", "end_line", "old_text", "new_text"]
            }),
        },
        Tool {
            name: SEARCH_REPLACE.to_owned(),
            description:
                "Replace the one occurrence of search in a file with replace. search must \
                          occur exactly once; include surrounding lines to make it unique."
                    .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "search": {"type": "string"},
                    "replace": {"type": "string"}
                },
                "required": ["path", "search", "replace"]
            }),
        },
        Tool {
            name: CREATE_FILE.to_owned(),
            description: "Create a new file with the given content; refused if it exists."
                .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"}
                },
                "required": ["path", "content"]
            }),
        },
    ]
}

/// A change the model proposed, as structured data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace lines `start_line..=end_line` (1-based, inclusive; each with its line break),
    /// whose current text must be `old_text`, with `new_text`.
    ReplaceRange {
        /// The file.
        path: String,
        /// First line replaced, from 1.
        start_line: u32,
        /// Last line replaced (inclusive).
        end_line: u32,
        /// The lines' text as the model saw it (a trailing line break is optional).
        old_text: String,
        /// Their replacement (a line break is added if the replaced lines ended with one).
        new_text: String,
    },
    /// Replace the single occurrence of `search` with `replace`.
    SearchReplace {
        /// The file.
        path: String,
        /// Exact text to find; must occur once.
        search: String,
        /// Its replacement.
        replace: String,
    },
    /// Create a file that does not exist yet.
    CreateFile {
        /// The new file's path.
        path: String,
        /// Its text.
        content: String,
    },
}

impl Edit {
    /// The file this edit changes.
    pub fn path(&self) -> &str {
        match self {
            Edit::ReplaceRange { path, .. }
            | Edit::SearchReplace { path, .. }
            | Edit::CreateFile { path, .. } => path,
        }
    }
}

/// What a tool call asks for: a file to read (answer it with the text), or an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolRequest {
    /// `read_file`: the model wants to see this file.
    Read {
        /// The file.
        path: String,
    },
    /// One of the editing tools.
    Edit(Edit),
}

/// Why a tool call or an edit was refused. Nothing is applied when any edit of a batch fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The model called a tool that is not one of [`editing_tools`].
    #[error("the model called an unknown tool `{name}`")]
    UnknownTool {
        /// The name it used.
        name: String,
    },
    /// The call's arguments do not match the tool's schema.
    #[error("the model's `{tool}` call has invalid arguments: {detail}")]
    BadArguments {
        /// The tool.
        tool: String,
        /// What is wrong (the missing or mistyped field).
        detail: String,
    },
    /// An edit of a file the room does not have.
    #[error("{path}: no such file in the room")]
    NoSuchFile {
        /// The file.
        path: String,
    },
    /// The lines named are not (or no longer) the text the model expected: the file changed
    /// since the model read it, or the range is outside the file.
    #[error("{path}: lines {start_line}–{end_line} are stale ({detail}); read the file again")]
    StaleRange {
        /// The file.
        path: String,
        /// First line of the range.
        start_line: u32,
        /// Last line of the range.
        end_line: u32,
        /// How the range and the file disagree.
        detail: String,
    },
    /// `search` does not occur in the file.
    #[error("{path}: the text to replace was not found: {search:?}")]
    SearchNotFound {
        /// The file.
        path: String,
        /// The text searched for (first 200 characters).
        search: String,
    },
    /// `search` occurs more than once, so the edit is ambiguous.
    #[error("{path}: the text to replace occurs {count} times; it must be unique")]
    SearchAmbiguous {
        /// The file.
        path: String,
        /// How often it occurs.
        count: usize,
    },
    /// `create_file` of a path that exists.
    #[error("{path}: already exists; edit it instead of creating it")]
    FileExists {
        /// The file.
        path: String,
    },
    /// The room refused the change (an invalid path, or a concurrent change in the meantime).
    #[error(transparent)]
    Room(#[from] CollabError),
}

#[derive(Deserialize)]
struct PathArgs {
    path: String,
}

impl ToolRequest {
    /// Reads a [`ToolCall`] of one of [`editing_tools`].
    ///
    /// Errors: [`EditError::UnknownTool`], [`EditError::BadArguments`] (naming the field).
    pub fn from_call(call: &ToolCall) -> Result<ToolRequest, EditError> {
        fn args<T: serde::de::DeserializeOwned>(call: &ToolCall) -> Result<T, EditError> {
            T::deserialize(&call.arguments).map_err(|e| EditError::BadArguments {
                tool: call.name.clone(),
                detail: e.to_string(),
            })
        }
        #[derive(Deserialize)]
        struct Range {
            path: String,
            start_line: u32,
            end_line: u32,
            old_text: String,
            new_text: String,
        }
        #[derive(Deserialize)]
        struct Search {
            path: String,
            search: String,
            replace: String,
        }
        #[derive(Deserialize)]
        struct Create {
            path: String,
            content: String,
        }
        Ok(match call.name.as_str() {
            READ_FILE => ToolRequest::Read {
                path: args::<PathArgs>(call)?.path,
            },
            REPLACE_RANGE => {
                let a: Range = args(call)?;
                ToolRequest::Edit(Edit::ReplaceRange {
                    path: a.path,
                    start_line: a.start_line,
                    end_line: a.end_line,
                    old_text: a.old_text,
                    new_text: a.new_text,
                })
            }
            SEARCH_REPLACE => {
                let a: Search = args(call)?;
                ToolRequest::Edit(Edit::SearchReplace {
                    path: a.path,
                    search: a.search,
                    replace: a.replace,
                })
            }
            CREATE_FILE => {
                let a: Create = args(call)?;
                ToolRequest::Edit(Edit::CreateFile {
                    path: a.path,
                    content: a.content,
                })
            }
            other => {
                return Err(EditError::UnknownTool {
                    name: other.to_owned(),
                })
            }
        })
    }
}

/// Answers a `read_file` call from the room: a [`crate::Role::Tool`] message with the file's
/// text, or saying there is no such file (and which files there are), for the model's next turn.
pub fn read_result(doc: &RoomDoc, call_id: &str, path: &str) -> Message {
    let content = match doc.read(path) {
        Some(text) => text,
        None => format!(
            "There is no file {path:?} in the room. Files: {}",
            doc.paths().join(", ")
        ),
    };
    Message::tool_result(call_id, content)
}

/// What a validated batch of edits does to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// A new file with this text.
    Create {
        /// The file.
        path: String,
        /// Its text.
        text: String,
    },
    /// Character edits of an existing file, as [`RoomDoc::edit`] takes them (UTF-16 offsets,
    /// each relative to the text the previous ones left).
    Edit {
        /// The file.
        path: String,
        /// The minimal edits from the room's text to the edited text.
        edits: Vec<TextEdit>,
    },
}

/// Validates `edits` (in order; later ones see earlier ones' results) against the room's
/// current files and returns, per file, the change to make. Reads only.
///
/// Errors: the first invalid edit's [`EditError`]; then no change is returned at all.
pub fn plan_edits(doc: &RoomDoc, edits: &[Edit]) -> Result<Vec<FileChange>, EditError> {
    Ok(plan_texts(doc, edits)?
        .into_iter()
        .map(PlannedText::into_change)
        .collect())
}

/// One file a batch changes: its text in the room (`None`: the batch creates it) and after.
struct PlannedText {
    path: String,
    before: Option<String>,
    after: String,
}

impl PlannedText {
    fn into_change(self) -> FileChange {
        match self.before {
            None => FileChange::Create {
                path: self.path,
                text: self.after,
            },
            Some(before) => FileChange::Edit {
                edits: minimal_edits(&before, &self.after),
                path: self.path,
            },
        }
    }
}

/// [`plan_edits`] as whole texts: the files that change, with their texts before and after.
fn plan_texts(doc: &RoomDoc, edits: &[Edit]) -> Result<Vec<PlannedText>, EditError> {
    // path → (text in the room, or None for a file this batch creates; text after the edits)
    let mut files: BTreeMap<String, (Option<String>, String)> = BTreeMap::new();
    for edit in edits {
        let path = edit.path();
        spike_collab::validate_path(path)?;
        if let Edit::CreateFile { path, content } = edit {
            if files.contains_key(path) || doc.read(path).is_some() {
                return Err(EditError::FileExists { path: path.clone() });
            }
            files.insert(path.clone(), (None, content.clone()));
            continue;
        }
        if !files.contains_key(path) {
            let text = doc.read(path).ok_or_else(|| EditError::NoSuchFile {
                path: path.to_owned(),
            })?;
            files.insert(path.to_owned(), (Some(text.clone()), text));
        }
        let Some((_, text)) = files.get_mut(path) else {
            continue;
        };
        *text = apply_one(text, edit)?;
    }
    Ok(files
        .into_iter()
        .filter(|(_, (before, after))| before.as_ref() != Some(after))
        .map(|(path, (before, after))| PlannedText {
            path,
            before,
            after,
        })
        .collect())
}

fn apply_one(text: &str, edit: &Edit) -> Result<String, EditError> {
    match edit {
        Edit::ReplaceRange {
            path,
            start_line,
            end_line,
            old_text,
            new_text,
        } => {
            let stale = |detail: String| EditError::StaleRange {
                path: path.clone(),
                start_line: *start_line,
                end_line: *end_line,
                detail,
            };
            // Byte offsets of each line's start, plus the end of the text.
            let mut starts: Vec<usize> = std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect();
            if starts.last() != Some(&text.len()) {
                starts.push(text.len());
            }
            let lines = starts.len() - 1;
            let (first, last) = (*start_line as usize, *end_line as usize);
            if first == 0 || last < first || last > lines {
                return Err(stale(format!("the file has {lines} lines")));
            }
            let (from, to) = (starts[first - 1], starts[last]);
            let current = &text[from..to];
            let ends_with_break = current.ends_with('\n');
            // One final line break (LF or CRLF) is optional on both sides.
            let trim = |s: &str| {
                let s = s.strip_suffix('\n').unwrap_or(s);
                s.strip_suffix('\r').unwrap_or(s).to_owned()
            };
            if trim(current) != trim(old_text) {
                return Err(stale(format!(
                    "they now read {:?}",
                    current.chars().take(200).collect::<String>()
                )));
            }
            let mut replacement = new_text.clone();
            if ends_with_break && !replacement.is_empty() && !replacement.ends_with('\n') {
                // Keep the file's line ending style.
                replacement.push_str(if current.ends_with("\r\n") {
                    "\r\n"
                } else {
                    "\n"
                });
            }
            Ok(format!("{}{}{}", &text[..from], replacement, &text[to..]))
        }
        Edit::SearchReplace {
            path,
            search,
            replace,
        } => {
            let count = if search.is_empty() {
                0
            } else {
                text.matches(search.as_str()).count()
            };
            match count {
                0 => Err(EditError::SearchNotFound {
                    path: path.clone(),
                    search: search.chars().take(200).collect(),
                }),
                1 => Ok(text.replacen(search.as_str(), replace, 1)),
                count => Err(EditError::SearchAmbiguous {
                    path: path.clone(),
                    count,
                }),
            }
        }
        Edit::CreateFile { content, .. } => Ok(content.clone()),
    }
}

/// Validates `edits` and applies them to `doc` as CRDT operations; returns the updates (lib0 v1)
/// to send to the room, one per changed file.
///
/// Errors: as [`plan_edits`]; nothing is applied then.
pub fn apply_to_doc(doc: &RoomDoc, edits: &[Edit]) -> Result<Vec<Vec<u8>>, EditError> {
    let plan = plan_texts(doc, edits)?;
    let mut updates = Vec::new();
    for file in &plan {
        let update = match &file.before {
            None => doc.create_file(&file.path, &file.after)?,
            Some(before) => doc.replace_text(&file.path, before, &file.after)?,
        };
        updates.extend(update);
    }
    Ok(updates)
}

/// Validates `edits` against the session's replica and applies them through the session, so
/// they are logged and sent to the room like a person's typing: each changed file through
/// [`Session::replace_text`], only if it still holds the text the edits were validated against.
/// Returns what was changed.
///
/// Errors: as [`plan_edits`], or [`EditError::Room`] with [`CollabError::TextChanged`] when a
/// collaborator's edit landed in a file between validation and application (that file is left
/// as it is; files earlier in the batch are already changed): re-propose against the current
/// text, or report it.
pub fn apply_to_session(session: &Session, edits: &[Edit]) -> Result<Vec<FileChange>, EditError> {
    let plan = session.with_doc(|doc| plan_texts(doc, edits))?;
    for file in &plan {
        match &file.before {
            None => session.create_file(&file.path, &file.after)?,
            Some(before) => {
                session.replace_text(&file.path, before, &file.after)?;
            }
        }
    }
    Ok(plan.into_iter().map(PlannedText::into_change).collect())
}
