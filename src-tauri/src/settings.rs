//! What a person sets in the app (display name, colour, room server, format on save), the room
//! they had open and the folders their rooms are mirrored into, saved as JSON in `settings.json` in the app config directory (or in
//! `SPIKE_DATA_DIR` when set, so side-by-side instances do not share it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spike_collab::RoomLink;

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 40;

/// The app's settings. Every field has a default, so an older or partial file still loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// The name peers see; empty means the login name.
    pub name: String,
    /// The colour peers see, `#rrggbb`; empty means one picked by client id.
    pub color: String,
    /// The room server new rooms are created on (`ws://…` or `wss://…`); empty means the app's
    /// own embedded server.
    pub server: String,
    /// Whether Ctrl/Cmd+S formats the file (edits are saved as they are typed either way).
    pub format_on_save: bool,
    /// The room that was open last, reopened at start.
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_room: Option<RoomLink>,
    /// The assistant's API: `openai`, `anthropic` or `compatible` (any OpenAI-compatible
    /// server: Ollama, llama.cpp, LM Studio, vLLM).
    #[ts(type = r#""openai" | "anthropic" | "compatible""#)]
    pub ai_provider: String,
    /// The assistant API's base URL; empty means the provider's own (Ollama's for
    /// `compatible`).
    pub ai_base_url: String,
    /// The assistant's model id; empty means the provider's default.
    pub ai_model: String,
    /// The ESM CDN npm packages in the preview come from (esm.sh's interface).
    pub cdn: String,
    /// Folder mirrors to resume when their room opens again (after a restart or a switch):
    /// `<server>/<room>` → the absolute folder. Kept by the app, like `last_room`: a mirror
    /// started from "Folder…" is added, one stopped there is removed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: String::new(),
            color: String::new(),
            server: String::new(),
            format_on_save: true,
            last_room: None,
            ai_provider: spike_ai::ProviderKind::Openai.as_str().to_owned(),
            ai_base_url: String::new(),
            ai_model: String::new(),
            cdn: spike_preview::npm::DEFAULT_CDN.to_owned(),
            mirrors: BTreeMap::new(),
        }
    }
}

/// Checks that `url` is an absolute `http` or `https` URL with a host and no query.
fn http_url(url: &str) -> Result<(), String> {
    let parsed = tauri::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{url:?} has a query or fragment"));
    }
    Ok(())
}

/// Why settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A field has a value it cannot have.
    #[error("settings field `{field}`: {reason}")]
    Invalid {
        /// The field's JSON name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The settings file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Settings {
    /// Checks every field. Errors: [`SettingsError::Invalid`] naming the first bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |field, reason: &str| {
            Err(SettingsError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.name.chars().count() > MAX_NAME_CHARS {
            return invalid("name", &format!("longer than {MAX_NAME_CHARS} characters"));
        }
        if self.name.chars().any(char::is_control) {
            return invalid("name", "has control characters");
        }
        let hex = self.color.strip_prefix('#').unwrap_or("");
        let is_rgb = hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !self.color.is_empty() && !is_rgb {
            return invalid("color", "expected #rrggbb");
        }
        if !self.server.is_empty() {
            if let Err(e) = RoomLink::new(&self.server, "probe") {
                return invalid("server", &e.to_string());
            }
        }
        if let Err(e) = self.ai_provider.parse::<spike_ai::ProviderKind>() {
            return invalid("aiProvider", &e.to_string());
        }
        if !self.ai_base_url.is_empty() {
            if let Err(reason) = http_url(&self.ai_base_url) {
                return invalid("aiBaseUrl", &reason);
            }
        }
        if self
            .ai_model
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return invalid("aiModel", "has spaces or control characters");
        }
        if let Err(reason) = http_url(&self.cdn) {
            return invalid("cdn", &reason);
        }
        Ok(())
    }

    /// The assistant's provider kind (validated: `openai` when the field is unparsable).
    pub fn ai_kind(&self) -> spike_ai::ProviderKind {
        self.ai_provider
            .parse()
            .unwrap_or(spike_ai::ProviderKind::Openai)
    }

    /// Reads `path`. A missing file gives the defaults; an unreadable or malformed one is moved
    /// aside to `settings.json.bad` (kept for the person to look at) and gives the defaults too,
    /// so a damaged file never stops the app.
    pub fn load(path: &Path) -> Self {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                tracing::warn!("reading {}: {e}; using default settings", path.display());
                return Self::default();
            }
        };
        let parsed = serde_json::from_str::<Self>(&text)
            .map_err(|e| e.to_string())
            .and_then(|s| s.validate().map(|()| s).map_err(|e| e.to_string()));
        match parsed {
            Ok(settings) => settings,
            Err(e) => {
                let aside = path.with_extension("json.bad");
                tracing::warn!(
                    "{} is not valid ({e}); moved to {} and using default settings",
                    path.display(),
                    aside.display()
                );
                if let Err(e) = std::fs::rename(path, &aside) {
                    tracing::warn!("moving it aside failed: {e}");
                }
                Self::default()
            }
        }
    }

    /// Validates and writes to `path` atomically (a temporary file renamed over it).
    /// Errors: [`SettingsError::Invalid`], [`SettingsError::Write`].
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        self.validate()?;
        let write = |source| SettingsError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|e| write(e.into()))?;
        std::fs::write(&tmp, json).map_err(write)?;
        std::fs::rename(&tmp, path).map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults_for_missing_fields() -> Result<(), SettingsError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("settings.json");
        assert_eq!(Settings::load(&path), Settings::default());
        let settings = Settings {
            name: "Ada ✨".into(),
            color: "#10b981".into(),
            server: "ws://10.0.0.2:8717/rooms".into(),
            format_on_save: false,
            last_room: Some(RoomLink::new("ws://127.0.0.1:8717/rooms", "demo").expect("link")),
            ai_provider: "anthropic".into(),
            ai_base_url: "https://llm.example.com".into(),
            ai_model: "claude-3-5-haiku-latest".into(),
            cdn: "http://127.0.0.1:9000".into(),
            mirrors: BTreeMap::from([(
                "ws://127.0.0.1:8717/rooms/demo".to_owned(),
                "/home/ada/demo".to_owned(),
            )]),
        };
        settings.save(&path)?;
        assert_eq!(Settings::load(&path), settings);
        std::fs::write(&path, r#"{"name": "Bo"}"#).expect("write");
        let partial = Settings::load(&path);
        assert_eq!(partial.name, "Bo");
        assert!(partial.format_on_save);
        Ok(())
    }

    #[test]
    fn invalid_fields_are_named() {
        let field = |s: Settings| match s.validate() {
            Err(SettingsError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let base = Settings::default();
        assert_eq!(
            field(Settings {
                color: "red".into(),
                ..base.clone()
            }),
            "color"
        );
        assert_eq!(
            field(Settings {
                name: "x".repeat(41),
                ..base.clone()
            }),
            "name"
        );
        assert_eq!(
            field(Settings {
                server: "http://example.com".into(),
                ..base.clone()
            }),
            "server"
        );
        for (bad, name) in [
            (
                Settings {
                    ai_provider: "gpt".into(),
                    ..base.clone()
                },
                "aiProvider",
            ),
            (
                Settings {
                    ai_base_url: "ftp://x".into(),
                    ..base.clone()
                },
                "aiBaseUrl",
            ),
            (
                Settings {
                    ai_model: "two words".into(),
                    ..base.clone()
                },
                "aiModel",
            ),
            (
                Settings {
                    cdn: "esm.sh".into(),
                    ..base.clone()
                },
                "cdn",
            ),
        ] {
            assert_eq!(field(bad), name);
        }
        assert!(base.validate().is_ok());
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_defaults_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("settings.json");
        std::fs::write(&path, "{ not json").expect("write");
        assert_eq!(Settings::load(&path), Settings::default());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("settings.json.bad")).expect("kept"),
            "{ not json"
        );
        std::fs::write(&path, r##"{"color": "#12"}"##).expect("write");
        assert_eq!(Settings::load(&path), Settings::default());
    }
}
