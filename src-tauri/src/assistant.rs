//! The AI assistant panel's engine: a question about the room's code goes to the configured
//! provider through spike-ai's [`Router`] (local quota → response cache → retries with backoff →
//! circuit breaker), and the answer streams to the UI over a Tauri [`Channel`] as
//! [`AiEvent`]s. The model sees the open file and the room's file list, may read other files
//! (`read_file`, answered from the room), and proposes changes only through spike-ai's editing
//! tools. Proposed edits are validated against the room and shown as a unified diff per file;
//! nothing changes until the person accepts, and then the edits are applied to the room as
//! minimal CRDT edits through this person's own session, so collaborators see them arrive like
//! typing, attributed to the person who accepted them. Dropping a request (Stop, or a new
//! question) drops its stream, which closes the upstream connection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use serde::Serialize;
use spike_ai::{
    AiError, ChatRequest, Chunk, Edit, Message, ProviderKind, ResponseCache, Router, ToolCall,
    ToolRequest,
};
use tauri::ipc::Channel;

use crate::room::Room;
use crate::settings::Settings;
use crate::{keys, lock, DesktopError};

/// Longest question, in characters.
pub const MAX_PROMPT_CHARS: usize = 16_000;
/// Model turns per question: reading files takes one each, so the model can read a few files
/// before it must answer.
const MAX_TURNS: usize = 4;
/// Longest answer per turn, in tokens.
const MAX_TOKENS: u32 = 4096;

const SYSTEM_PROMPT: &str = "You are the coding assistant of Spike, a collaborative live editor \
for React components in TypeScript (TSX) whose preview runs as people type. Answer briefly. \
When asked to change code, change it only through the tools: read_file to see a file you have \
not been shown, then replace_range (whole lines, with their exact current text), search_replace \
(text that occurs exactly once) or create_file. Keep edits minimal; never rewrite a whole file \
to change part of it.";

/// What the panel receives while a question is answered.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AiEvent {
    /// More of the answer's text.
    Text {
        /// The new text.
        delta: String,
    },
    /// The model read a file of the room.
    Reading {
        /// The file.
        path: String,
    },
    /// The model proposed changes; accept with `ai_apply`, reject with `ai_reject`.
    Proposal {
        /// The changes.
        proposal: Proposal,
    },
    /// The answer is complete (`stop`: the provider's stop reason, or `stopped` by the person).
    Done {
        /// Why it ended.
        stop: String,
    },
    /// The question failed (rate limited, no key, provider down, an invalid edit…).
    Error {
        /// What went wrong, for a person.
        message: String,
    },
}

/// Edits the model proposed, validated against the room when proposed.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct Proposal {
    /// Its id, for `ai_apply` / `ai_reject`.
    #[ts(type = "number")]
    pub id: u64,
    /// One entry per file changed.
    pub files: Vec<ProposedFile>,
}

/// One file of a [`Proposal`].
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct ProposedFile {
    /// The file.
    pub path: String,
    /// Whether the proposal creates it.
    pub created: bool,
    /// The change as a unified diff (3 lines of context).
    pub diff: String,
}

struct Running {
    task: tauri::async_runtime::JoinHandle<()>,
    events: Channel<AiEvent>,
}

/// What a router was built from; a new one is built when any of it changes.
#[derive(Clone, PartialEq, Eq)]
struct RouterKey {
    kind: ProviderKind,
    base_url: String,
    model: String,
    /// BLAKE3 of the key, so a changed key rebuilds the router without keeping the key here.
    key_hash: Option<[u8; 32]>,
}

/// The assistant's state in the shell.
pub(crate) struct Assistant {
    next_id: AtomicU64,
    running: Mutex<HashMap<u64, Running>>,
    proposals: Mutex<HashMap<u64, Vec<Edit>>>,
    router: Mutex<Option<(RouterKey, Arc<Router>)>>,
    /// The response cache's SQLite file (`<data>/ai-cache.sqlite`).
    cache_path: PathBuf,
}

impl Assistant {
    pub(crate) fn new(cache_path: PathBuf) -> Self {
        Self {
            next_id: AtomicU64::new(1),
            running: Mutex::default(),
            proposals: Mutex::default(),
            router: Mutex::default(),
            cache_path,
        }
    }

    /// The router for `settings` (kept while they and the key stay the same, so its quotas and
    /// breaker carry over between questions) and the model it asks.
    fn router(&self, settings: &Settings) -> Result<(Arc<Router>, String), DesktopError> {
        let kind = settings.ai_kind();
        let key = keys::key(kind);
        let model = if settings.ai_model.is_empty() {
            kind.default_model().to_owned()
        } else {
            settings.ai_model.clone()
        };
        let wanted = RouterKey {
            kind,
            base_url: settings.ai_base_url.clone(),
            model: model.clone(),
            key_hash: key
                .as_deref()
                .map(|k| *blake3::hash(k.as_bytes()).as_bytes()),
        };
        let mut slot = lock(&self.router);
        if let Some((built, router)) = slot.as_ref() {
            if *built == wanted {
                return Ok((router.clone(), model));
            }
        }
        let provider = kind.build(
            Some(&settings.ai_base_url),
            key,
            &format!(
                "save one in Settings → Assistant (kept in the OS keychain), or set {}",
                kind.key_variable()
            ),
        )?;
        let mut router = Router::new().route(provider, Some(model.clone()));
        match ResponseCache::open(&self.cache_path) {
            Ok(cache) => router = router.cache(Arc::new(cache)),
            Err(e) => tracing::warn!("the AI response cache is unavailable: {e}"),
        }
        let router = Arc::new(router);
        *slot = Some((wanted, router.clone()));
        Ok((router, model))
    }

    /// Starts answering `prompt` about `room` (with `file`, the open file, shown to the model);
    /// events go to `events`. Returns the request's id, for [`Assistant::stop`].
    ///
    /// Errors: [`DesktopError::BadRequest`] for an empty or oversized prompt,
    /// [`DesktopError::Ai`] when no provider can be built (no key, bad base URL).
    pub(crate) fn ask(
        self: &Arc<Self>,
        room: Arc<Room>,
        settings: &Settings,
        user: &str,
        prompt: String,
        file: Option<String>,
        events: Channel<AiEvent>,
    ) -> Result<u64, DesktopError> {
        let prompt = prompt.trim().to_owned();
        if prompt.is_empty() {
            return Err(DesktopError::BadRequest("ask a question first".into()));
        }
        if prompt.chars().count() > MAX_PROMPT_CHARS {
            return Err(DesktopError::BadRequest(format!(
                "a question has at most {MAX_PROMPT_CHARS} characters"
            )));
        }
        let (router, model) = self.router(settings)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = first_request(&room, &model, &prompt, file.as_deref());
        let this = self.clone();
        let out = events.clone();
        let caller = user.to_owned();
        let task = tauri::async_runtime::spawn(async move {
            let result = this.converse(&router, &caller, &room, request, &out).await;
            let last = match result {
                Ok(stop) => AiEvent::Done { stop },
                Err(e) => AiEvent::Error {
                    message: e.to_string(),
                },
            };
            send(&out, last);
            lock(&this.running).remove(&id);
        });
        lock(&self.running).insert(id, Running { task, events });
        Ok(id)
    }

    /// The conversation: streams each turn's text, answers `read_file` calls from the room,
    /// and ends with the proposed edits (or none). Returns the stop reason.
    async fn converse(
        &self,
        router: &Router,
        caller: &str,
        room: &Room,
        mut request: ChatRequest,
        events: &Channel<AiEvent>,
    ) -> Result<String, DesktopError> {
        for _ in 0..MAX_TURNS {
            let mut stream = router.stream_for(caller, &request).await?;
            let mut text = String::new();
            let mut calls: Vec<ToolCall> = Vec::new();
            let mut stop = String::from("end");
            while let Some(chunk) = stream.next().await {
                match chunk? {
                    Chunk::Text(delta) => {
                        text.push_str(&delta);
                        send(events, AiEvent::Text { delta });
                    }
                    Chunk::ToolCall(call) => calls.push(call),
                    Chunk::Done(finish) => stop = finish.stop_reason.unwrap_or(stop),
                }
            }
            let mut reads = Vec::new();
            let mut edits = Vec::new();
            for call in &calls {
                match ToolRequest::from_call(call)? {
                    ToolRequest::Read { path } => reads.push((call.id.clone(), path)),
                    ToolRequest::Edit(edit) => edits.push(edit),
                }
            }
            if !edits.is_empty() {
                let proposal = self.propose(room, edits)?;
                send(events, AiEvent::Proposal { proposal });
                return Ok(stop);
            }
            if reads.is_empty() {
                return Ok(stop);
            }
            request.messages.push(Message::assistant(text, calls));
            for (call_id, path) in reads {
                send(events, AiEvent::Reading { path: path.clone() });
                let answer = room
                    .session()
                    .with_doc(|doc| spike_ai::read_result(doc, &call_id, &path));
                request.messages.push(answer);
            }
        }
        Err(DesktopError::Ai(AiError::Config(format!(
            "the model kept reading files for {MAX_TURNS} turns without answering"
        ))))
    }

    /// Validates `edits` against the room, keeps them under a new id, and describes them.
    fn propose(&self, room: &Room, edits: Vec<Edit>) -> Result<Proposal, DesktopError> {
        let session = room.session();
        let (plan, before, after) = session.with_doc(|doc| {
            let plan = spike_ai::plan_edits(doc, &edits)?;
            // The texts after the edits, from a scratch copy of the room (the room is not
            // touched until the person accepts).
            let scratch = spike_collab::RoomDoc::new();
            scratch.apply_update(&doc.encode_state())?;
            spike_ai::apply_to_doc(&scratch, &edits)?;
            let mut before = HashMap::new();
            let mut after = HashMap::new();
            for edit in &edits {
                let path = edit.path().to_owned();
                before.insert(path.clone(), doc.read(&path).unwrap_or_default());
                after.insert(path.clone(), scratch.read(&path).unwrap_or_default());
            }
            Ok::<_, DesktopError>((plan, before, after))
        })?;
        let files = plan
            .iter()
            .map(|change| {
                let (path, created) = match change {
                    spike_ai::FileChange::Create { path, .. } => (path, true),
                    spike_ai::FileChange::Edit { path, .. } => (path, false),
                };
                let old = before.get(path).map(String::as_str).unwrap_or_default();
                let new = after.get(path).map(String::as_str).unwrap_or_default();
                let (from, to) = if created {
                    ("/dev/null".to_owned(), format!("b/{path}"))
                } else {
                    (format!("a/{path}"), format!("b/{path}"))
                };
                ProposedFile {
                    path: path.clone(),
                    created,
                    diff: similar::TextDiff::from_lines(old, new)
                        .unified_diff()
                        .context_radius(3)
                        .header(&from, &to)
                        .to_string(),
                }
            })
            .collect();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.proposals).insert(id, edits);
        Ok(Proposal { id, files })
    }

    /// Applies proposal `id` to `room` as this person's edits; returns the files changed.
    ///
    /// Errors: [`DesktopError::BadRequest`] for an unknown (or already decided) proposal,
    /// [`DesktopError::ReadOnly`] in a view-only room, [`DesktopError::AiEdit`] when the room
    /// changed so that an edit no longer fits, or a collaborator's edit landed in a file between
    /// validation and application (`spike_collab::CollabError::TextChanged`: that file is left
    /// as it is; see [`spike_ai::apply_to_session`]); ask again to re-propose.
    pub(crate) fn apply(&self, room: &Room, id: u64) -> Result<Vec<String>, DesktopError> {
        if room.read_only() {
            return Err(DesktopError::ReadOnly(room.name().to_owned()));
        }
        let edits = lock(&self.proposals)
            .remove(&id)
            .ok_or_else(|| DesktopError::BadRequest(format!("no open proposal {id}")))?;
        let changes = spike_ai::apply_to_session(&room.session(), &edits)?;
        Ok(changes
            .iter()
            .map(|c| match c {
                spike_ai::FileChange::Create { path, .. }
                | spike_ai::FileChange::Edit { path, .. } => path.clone(),
            })
            .collect())
    }

    /// Forgets proposal `id`; whether it was open.
    pub(crate) fn reject(&self, id: u64) -> bool {
        lock(&self.proposals).remove(&id).is_some()
    }

    /// Stops request `id` (its stream is dropped, closing the upstream connection); whether it
    /// was running.
    pub(crate) fn stop(&self, id: u64) -> bool {
        match lock(&self.running).remove(&id) {
            Some(running) => {
                running.task.abort();
                send(
                    &running.events,
                    AiEvent::Done {
                        stop: "stopped".into(),
                    },
                );
                true
            }
            None => false,
        }
    }
}

fn send(events: &Channel<AiEvent>, event: AiEvent) {
    if let Err(e) = events.send(event) {
        tracing::warn!("sending an assistant event to the UI failed: {e}");
    }
}

/// The first turn: the question, the open file with line numbers (for `replace_range`), and the
/// room's file list.
fn first_request(room: &Room, model: &str, prompt: &str, file: Option<&str>) -> ChatRequest {
    let mut text = format!("{prompt}\n\nFiles in the room: {}", room.paths().join(", "));
    if let Some((path, source)) = file.and_then(|p| room.read(p).map(|t| (p, t))) {
        text.push_str(&format!(
            "\n\nThe open file, `{path}` (line numbers added):\n"
        ));
        for (n, line) in source.lines().enumerate() {
            text.push_str(&format!("{:>4} | {line}\n", n + 1));
        }
    }
    let mut request = ChatRequest::new(model, text);
    request.system = Some(SYSTEM_PROMPT.to_owned());
    request.max_tokens = MAX_TOKENS;
    request.tools = spike_ai::editing_tools();
    request
}
