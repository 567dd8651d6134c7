//! The one error type every command returns.

/// Why a command failed. Serialized to the UI as `{ kind, message, diagnostics }`, where
/// `diagnostics` is non-empty only for syntax errors (the list spike-transpile or spike-format
/// found, 1-based lines and character columns).
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    /// The source does not transpile.
    #[error(transparent)]
    Transpile(#[from] spike_transpile::TranspileError),
    /// The source does not format (usually a syntax error).
    #[error(transparent)]
    Format(#[from] spike_format::FormatError),
    /// The room document or its update log refused the operation.
    #[error(transparent)]
    Collab(#[from] spike_collab::CollabError),
    /// Tauri failed (window, webview or IPC).
    #[error(transparent)]
    Tauri(#[from] tauri::Error),
    /// A file system operation failed (app data directory, logs).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Settings were refused or could not be saved.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// An IPC argument is malformed or too large.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The room was opened with a view-only link: it can be watched, not changed.
    #[error("room {0} is view-only: this link lets you watch, not edit (ask for an edit link)")]
    ReadOnly(String),
    /// A folder mirror could not start or stop.
    #[error(transparent)]
    Mirror(#[from] spike_mirror::MirrorError),
    /// The assistant's provider failed or refused (rate limited, no key, down, timed out).
    #[error(transparent)]
    Ai(#[from] spike_ai::AiError),
    /// An edit the assistant proposed does not fit the room (any more).
    #[error(transparent)]
    AiEdit(#[from] spike_ai::EditError),
    /// The store (the npm module cache) could not be opened.
    #[error(transparent)]
    Store(#[from] spike_store::StoreError),
    /// The OS keychain could not be used.
    #[error("keychain: {0}")]
    Keychain(String),
}

impl DesktopError {
    /// A stable machine-readable name of the variant, for the UI (one of [`ErrorReply::kind`]'s
    /// values).
    pub fn kind(&self) -> &'static str {
        match self {
            DesktopError::Transpile(_) => "transpile",
            DesktopError::Format(_) => "format",
            DesktopError::Collab(_) => "collab",
            DesktopError::Tauri(_) => "tauri",
            DesktopError::Io { .. } => "io",
            DesktopError::Settings(_) => "settings",
            DesktopError::BadRequest(_) => "bad-request",
            DesktopError::ReadOnly(_) => "read-only",
            DesktopError::Mirror(_) => "mirror",
            DesktopError::Ai(_) | DesktopError::AiEdit(_) => "ai",
            DesktopError::Keychain(_) => "keychain",
            DesktopError::Store(_) => "store",
        }
    }

    /// The syntax errors behind a transpile or format failure (empty for every other kind).
    pub fn diagnostics(&self) -> Vec<spike_transpile::Diagnostic> {
        match self {
            DesktopError::Transpile(e) => e.diagnostics(),
            DesktopError::Format(spike_format::FormatError::Syntax(d)) => d.clone(),
            _ => Vec::new(),
        }
    }
}

/// A [`DesktopError`] as the UI receives it (a rejected `invoke`).
#[derive(Debug, Clone, serde::Serialize, ts_rs::TS)]
pub struct ErrorReply {
    /// Which kind of failure.
    #[ts(
        type = r#""transpile" | "format" | "collab" | "tauri" | "io" | "settings" | "bad-request" | "read-only" | "mirror" | "ai" | "keychain" | "store""#
    )]
    pub kind: &'static str,
    /// The error in a sentence.
    pub message: String,
    /// The syntax errors behind a transpile or format failure (empty otherwise).
    pub diagnostics: Vec<spike_transpile::Diagnostic>,
}

impl serde::Serialize for DesktopError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ErrorReply {
            kind: self.kind(),
            message: self.to_string(),
            diagnostics: self.diagnostics(),
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_kind_message_and_diagnostics() {
        let err = spike_transpile::transpile(
            "const x = ;\n",
            &spike_transpile::TranspileOptions::new("App.tsx"),
        )
        .expect_err("a syntax error");
        let json = serde_json::to_value(DesktopError::from(err)).expect("serializes");
        assert_eq!(json["kind"], "transpile");
        assert_eq!(json["diagnostics"][0]["line"], 1);
        assert_eq!(json["diagnostics"][0]["file"], "App.tsx");
        assert_eq!(json["diagnostics"][0]["severity"], "error");
    }

    #[test]
    fn bad_request_has_no_diagnostics() {
        let json = serde_json::to_value(DesktopError::BadRequest("too big".into())).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"kind": "bad-request", "message": "bad request: too big", "diagnostics": []})
        );
    }
}
