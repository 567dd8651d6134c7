//! The `tracing` layer: `error`-level events become queued reports.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

use crate::report::{
    cap, is_dropped_field, kind_of_target, now_secs, sanitize_kind, split_chain, MAX_CAUSES,
    MAX_CAUSE_BYTES, MAX_FIELD_BYTES, MAX_MESSAGE_BYTES,
};
use crate::reporter::Shared;
use crate::Report;

thread_local! {
    /// Set while this thread is queueing a report, so that an error event raised by the
    /// queueing itself cannot recurse.
    static QUEUEING: Cell<bool> = const { Cell::new(false) };
}

/// A [`tracing_subscriber::Layer`] that queues a [`Report`] for every `error`-level event.
///
/// What a report holds (and nothing else; span fields are never read):
/// - `kind`: the event's `kind` field if it has one (sanitised), else from its target
///   ([`crate::report::kind_of_target`]);
/// - `message`: the event's message, then its other fields as ` {name=value, …}` (each value
///   at most 256 bytes), then ` at <target> (<file>:<line>)`, at most 2048 bytes in all;
/// - `chain`: from the `error` field: the `source()` chain of a `dyn Error` value
///   (`error = &e as &dyn std::error::Error`), or the causes of text rendered with anyhow's
///   `{:#}` (`error = %format!("{e:#}")`, split at `": "`), at most 16 causes of 1024 bytes;
/// - `room`: the anonymised id ([`crate::RoomHasher`]) of the event's `room` field if it has
///   one, else of the room set with [`crate::ReportHandle::set_room`]; the name is never sent;
/// - `version`, `os`, `at`: the app's version, `<os>-<arch>`, the event's Unix time.
///
/// Fields named like secrets or document content ([`crate::report::DROPPED_FIELD_PARTS`]:
/// `token`, `key`, `secret`, `password`, `authorization`, `content`, …) are dropped. Events of
/// this crate's own targets (`spike_report…`) are ignored, so a failing send never reports
/// itself.
#[derive(Clone)]
pub struct ReportLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ReportLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportLayer").finish_non_exhaustive()
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for ReportLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || meta.target().starts_with("spike_report") {
            return;
        }
        if QUEUEING.with(|q| q.replace(true)) {
            return;
        }
        // Cleared on every way out, a panic included.
        struct Queueing;
        impl Drop for Queueing {
            fn drop(&mut self) {
                QUEUEING.with(|q| q.set(false));
            }
        }
        let _queueing = Queueing;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let report = self
            .shared
            .report(fields.into_parts(meta.target(), meta.file(), meta.line()));
        self.shared.enqueue(&report);
    }
}

/// What [`ReportLayer`] read from one event, before the room is hashed.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    pub kind: String,
    pub message: String,
    pub chain: Vec<String>,
    pub room: Option<String>,
    pub at: u64,
}

impl Shared {
    pub(crate) fn report(&self, parts: Parts) -> Report {
        let room = parts
            .room
            .or_else(|| self.room())
            .map(|room| self.hasher.room_id(&room));
        Report {
            kind: parts.kind,
            message: parts.message,
            chain: parts.chain,
            version: self.version.clone(),
            os: self.os.clone(),
            room,
            at: Some(parts.at),
        }
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    kind: Option<String>,
    room: Option<String>,
    chain: Vec<String>,
    others: Vec<(&'static str, String)>,
}

impl Fields {
    fn into_parts(self, target: &str, file: Option<&str>, line: Option<u32>) -> Parts {
        let mut message = self
            .message
            .filter(|m| !m.trim().is_empty())
            .or_else(|| self.chain.first().cloned())
            .unwrap_or_else(|| "error".to_owned());
        if !self.others.is_empty() {
            let fields: Vec<String> = self
                .others
                .iter()
                .map(|(name, value)| format!("{name}={}", cap(value, MAX_FIELD_BYTES)))
                .collect();
            let _ = write!(message, " {{{}}}", fields.join(", "));
        }
        let _ = write!(message, " at {target}");
        if let (Some(file), Some(line)) = (file, line) {
            let _ = write!(message, " ({file}:{line})");
        }
        Parts {
            kind: self.kind.unwrap_or_else(|| kind_of_target(target)),
            message: cap(&message, MAX_MESSAGE_BYTES),
            chain: self.chain,
            room: self.room,
            at: now_secs(),
        }
    }

    fn record_text(&mut self, field: &Field, text: String) {
        match field.name() {
            "message" => self.message = Some(text),
            "kind" => self.kind = sanitize_kind(&text),
            "room" => self.room = Some(text),
            "error" => self.chain = split_chain(&text),
            name if is_dropped_field(name) => {}
            name => {
                // Keep what can be sent; an event with many fields cannot grow a report.
                if self.others.len() < 16 {
                    self.others.push((name, cap(&text, MAX_FIELD_BYTES)));
                }
            }
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if is_dropped_field(field.name()) {
            return;
        }
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.record_text(field, text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if is_dropped_field(field.name()) {
            return;
        }
        self.record_text(field, value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if field.name() != "error" {
            if !is_dropped_field(field.name()) {
                self.record_text(field, value.to_string());
            }
            return;
        }
        let mut chain = Vec::new();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(value);
        while let Some(e) = cause {
            if chain.len() == MAX_CAUSES {
                break;
            }
            chain.push(cap(&e.to_string(), MAX_CAUSE_BYTES));
            cause = e.source();
        }
        self.chain = chain;
    }
}
