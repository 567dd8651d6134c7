//! The report a client sends, and the rules that keep it small and free of secrets.

/// Longest `message` sent, in bytes (the server takes up to 4096).
pub const MAX_MESSAGE_BYTES: usize = 2048;
/// Longest single field value folded into the message, in bytes.
pub const MAX_FIELD_BYTES: usize = 256;
/// Longest cause in `chain`, in bytes (the server takes up to 4096).
pub const MAX_CAUSE_BYTES: usize = 1024;
/// Most causes in `chain` (the server takes up to 32).
pub const MAX_CAUSES: usize = 16;
/// Longest `kind`, in bytes (the server's bound).
pub const MAX_KIND_BYTES: usize = 64;
/// Longest `version` and `os`, in bytes (the server's bound).
pub const MAX_VERSION_BYTES: usize = 64;

/// Parts of field names that mark a field as a secret or as document content: such fields are
/// never sent. Matched case-insensitively anywhere in the name, so `api_key`, `x_token` and
/// `file_content` are all dropped.
pub const DROPPED_FIELD_PARTS: &[&str] = &[
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "authorization",
    "auth",
    "cookie",
    "credential",
    "content",
    "body",
    "text",
];

/// One error report: the room server's own wire type (`POST /v1/reports`,
/// `{"kind", "message", "chain", "version", "os", "room"?, "at"?}`), so the two cannot drift.
/// This crate fills it: `kind` from [`kind_of_target`], `message` capped at
/// [`MAX_MESSAGE_BYTES`], at most [`MAX_CAUSES`] causes of [`MAX_CAUSE_BYTES`], `os` from [`os`],
/// `room` anonymised by [`crate::RoomHasher`].
pub use spike_server::reports::Report;

/// This machine's `<os>-<arch>`, e.g. `linux-x86_64`.
pub fn os() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Whether a field named `name` is never sent (see [`DROPPED_FIELD_PARTS`]).
pub fn is_dropped_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    DROPPED_FIELD_PARTS.iter().any(|part| name.contains(part))
}

/// `text` cut to at most `max` bytes on a character boundary; a cut text ends with `…`.
pub fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let ellipsis = '…';
    let mut end = max.saturating_sub(ellipsis.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = text[..end].to_owned();
    out.push(ellipsis);
    out
}

/// A `kind` from any text: lower-cased, characters outside `[a-z0-9_.-]` become `-`, at most
/// [`MAX_KIND_BYTES`]; `None` when nothing is left.
pub fn sanitize_kind(text: &str) -> Option<String> {
    let kind: String = text
        .trim()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(MAX_KIND_BYTES)
        .collect();
    (!kind.is_empty()).then_some(kind)
}

/// The `kind` of an event without an explicit `kind` field, from its target's crate: the engine
/// crates map to the server's known kinds (`spike_collab`, `spike_mirror` → `sync`;
/// `spike_store` → `storage`; `spike_preview` → `preview`; `spike_ai` → `ai`; `spike_transpile`
/// → `transpile`; `spike_format` → `format`); any other crate is its own kind (e.g.
/// `spike_desktop`, counted as `other` by the server).
pub fn kind_of_target(target: &str) -> String {
    let krate = target.split("::").next().unwrap_or(target);
    let known = match krate {
        "spike_collab" | "spike_mirror" => Some("sync"),
        "spike_store" => Some("storage"),
        "spike_preview" => Some("preview"),
        "spike_ai" => Some("ai"),
        "spike_transpile" => Some("transpile"),
        "spike_format" => Some("format"),
        _ => None,
    };
    known
        .map(str::to_owned)
        .or_else(|| sanitize_kind(krate))
        .unwrap_or_else(|| "error".to_owned())
}

/// Splits an error rendered with anyhow's `{:#}` (`outer: cause: root`) into its causes,
/// outermost first, capped as [`Report::chain`] is.
pub fn split_chain(text: &str) -> Vec<String> {
    text.split(": ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .take(MAX_CAUSES)
        .map(|c| cap(c, MAX_CAUSE_BYTES))
        .collect()
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_on_char_boundaries() {
        assert_eq!(cap("short", 10), "short");
        assert_eq!(cap("ééééé", 7), "éé…");
        assert!(cap(&"x".repeat(5000), MAX_MESSAGE_BYTES).len() <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn kinds_are_stable_short_names() {
        assert_eq!(kind_of_target("spike_mirror::engine"), "sync");
        assert_eq!(kind_of_target("spike_store::remote"), "storage");
        assert_eq!(kind_of_target("spike_desktop::commands"), "spike_desktop");
        assert_eq!(
            sanitize_kind("Mirror Error!").as_deref(),
            Some("mirror-error-")
        );
        assert_eq!(sanitize_kind("  "), None);
    }

    #[test]
    fn secret_and_content_fields_are_dropped() {
        for name in [
            "token",
            "api_key",
            "Authorization",
            "db_password",
            "file_content",
        ] {
            assert!(is_dropped_field(name), "{name}");
        }
        for name in ["path", "status", "attempt", "error"] {
            assert!(!is_dropped_field(name), "{name}");
        }
    }

    #[test]
    fn anyhow_chains_split_outermost_first() {
        assert_eq!(
            split_chain("syncing room: connecting: Connection refused (os error 111)"),
            vec![
                "syncing room",
                "connecting",
                "Connection refused (os error 111)"
            ]
        );
    }
}
