//! API keys for the assistant, kept in the OS keychain (the keyring crate: macOS Keychain,
//! Windows Credential Manager, the Secret Service — GNOME Keyring, KWallet — on Linux), never in
//! the settings file, the room, the logs or the preview. Where no keychain service runs (a
//! headless Linux session), saving says so, and the environment variable (`OPENAI_API_KEY`,
//! `ANTHROPIC_API_KEY`) is read instead.

use serde::Serialize;
use spike_ai::ProviderKind;

use crate::DesktopError;

/// The keychain "service" every key is filed under.
const SERVICE: &str = "land.spike.desktop";

/// Where a provider's key comes from, for the settings dialog (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// `openai`, `anthropic` or `compatible`.
    pub provider: String,
    /// `keychain`, `environment` or `none`.
    #[ts(type = r#""keychain" | "environment" | "none""#)]
    pub source: &'static str,
    /// Why the keychain could not be read, when it could not (no keychain service, locked).
    pub keychain_error: Option<String>,
}

fn entry(kind: ProviderKind) -> Result<keyring::Entry, DesktopError> {
    keyring::Entry::new(SERVICE, &format!("{}-api-key", kind.as_str())).map_err(keychain_error)
}

/// A keychain failure in words a person can act on.
fn keychain_error(e: keyring::Error) -> DesktopError {
    let detail = match &e {
        keyring::Error::NoStorageAccess(_) | keyring::Error::PlatformFailure(_) => format!(
            "no keychain service is available ({e}). On Linux, start GNOME Keyring or KWallet \
             (a Secret Service), or set the key in the environment instead"
        ),
        _ => e.to_string(),
    };
    DesktopError::Keychain(detail)
}

/// The key for `kind`: the keychain's, else the environment variable's.
/// Errors: none; a keychain that cannot be read counts as holding no key (the status says why).
pub fn key(kind: ProviderKind) -> Option<String> {
    read_keychain(kind)
        .ok()
        .flatten()
        .or_else(|| std::env::var(kind.key_variable()).ok())
        .filter(|k| !k.trim().is_empty())
}

fn read_keychain(kind: ProviderKind) -> Result<Option<String>, DesktopError> {
    match entry(kind)?.get_password() {
        Ok(key) => Ok(Some(key)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(keychain_error(e)),
    }
}

/// Where `kind`'s key comes from.
pub fn status(kind: ProviderKind) -> KeyStatus {
    let (in_keychain, keychain_error) = match read_keychain(kind) {
        Ok(found) => (found.is_some(), None),
        Err(e) => (false, Some(e.to_string())),
    };
    let in_env = std::env::var(kind.key_variable()).is_ok_and(|k| !k.trim().is_empty());
    KeyStatus {
        provider: kind.as_str().to_owned(),
        source: if in_keychain {
            "keychain"
        } else if in_env {
            "environment"
        } else {
            "none"
        },
        keychain_error,
    }
}

/// Stores `key` for `kind` in the keychain; an empty key deletes it.
/// Errors: [`DesktopError::Keychain`] saying why (no keychain service, refused).
pub fn store(kind: ProviderKind, key: &str) -> Result<(), DesktopError> {
    let entry = entry(kind)?;
    let key = key.trim();
    if key.is_empty() {
        return match entry.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(keychain_error(e)),
        };
    }
    entry.set_password(key).map_err(keychain_error)
}
