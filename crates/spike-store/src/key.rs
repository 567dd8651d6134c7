//! Keys: content-addressed blobs and named KV entries.

use std::fmt;
use std::str::FromStr;

use crate::StoreError;

/// The BLAKE3 hash of a blob's bytes. Text form `blake3:<64 lowercase hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash([u8; 32]);

impl BlobHash {
    /// The text prefix of every blob hash.
    pub const PREFIX: &'static str = "blake3:";

    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `blake3:` prefix.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for BlobHash {
    type Err = StoreError;

    /// Parses `blake3:<64 hex digits>` (hex in either case). Errors: [`StoreError::InvalidKey`].
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let invalid = |reason| StoreError::InvalidKey {
            key: s.to_owned(),
            reason,
        };
        let hex = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| invalid("a blob hash starts with `blake3:`"))?;
        if hex.len() != 64 {
            return Err(invalid("a blob hash has 64 hex digits after `blake3:`"));
        }
        blake3::Hash::from_hex(hex)
            .map(|h| Self(*h.as_bytes()))
            .map_err(|_| invalid("a blob hash has only hex digits after `blake3:`"))
    }
}

/// The longest namespace, bytes.
pub const MAX_NAMESPACE_BYTES: usize = 64;
/// The longest KV key, bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// A named KV entry: `namespace` (1–64 of `a-z 0-9 . _ -`, starting with a letter or digit) and
/// `key` (1–512 bytes of `/`-separated segments; no empty, `.` or `..` segment, no leading `/`,
/// no backslash, no control characters). The rules make every key a safe relative path on any
/// backend: no traversal, no absolute keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KvKey {
    namespace: String,
    key: String,
}

impl KvKey {
    /// Validates and builds a key. Errors: [`StoreError::InvalidKey`] naming the broken rule.
    pub fn new(namespace: impl Into<String>, key: impl Into<String>) -> Result<Self, StoreError> {
        let (namespace, key) = (namespace.into(), key.into());
        check_namespace(&namespace)?;
        check_key(&key)?;
        Ok(Self { namespace, key })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key within the namespace.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for KvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.key)
    }
}

impl fmt::Debug for KvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KvKey({self})")
    }
}

/// Checks a namespace against the rules of [`KvKey`].
pub(crate) fn check_namespace(namespace: &str) -> Result<(), StoreError> {
    let invalid = |reason| StoreError::InvalidKey {
        key: namespace.to_owned(),
        reason,
    };
    if namespace.is_empty() || namespace.len() > MAX_NAMESPACE_BYTES {
        return Err(invalid("a namespace has 1 to 64 bytes"));
    }
    if !namespace.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(invalid("a namespace starts with a-z or 0-9"));
    }
    if !namespace
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(invalid("a namespace has only a-z, 0-9, `.`, `_` and `-`"));
    }
    Ok(())
}

/// Checks a key (or a key prefix when `prefix` is true: it may be empty or end in `/`).
pub(crate) fn check_key_text(key: &str, prefix: bool) -> Result<(), StoreError> {
    let invalid = |reason| StoreError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid("a key has at most 512 bytes"));
    }
    if key.is_empty() {
        return if prefix {
            Ok(())
        } else {
            Err(invalid("a key is not empty"))
        };
    }
    if key.starts_with('/') {
        return Err(invalid("a key is relative: no leading `/`"));
    }
    if key.contains('\\') {
        return Err(invalid("a key has no backslash"));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid("a key has no control characters"));
    }
    let body = if prefix {
        key.strip_suffix('/').unwrap_or(key)
    } else {
        key
    };
    for segment in body.split('/') {
        match segment {
            "" => {
                return Err(invalid(
                    "a key has no empty segment (`//` or a trailing `/`)",
                ))
            }
            "." | ".." => return Err(invalid("a key has no `.` or `..` segment")),
            _ => {}
        }
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), StoreError> {
    check_key_text(key, false)
}

/// What a [`crate::Tier`] stores things under.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// An immutable blob, named by the hash of its bytes.
    Blob(BlobHash),
    /// A mutable named entry.
    Kv(KvKey),
}

impl Key {
    /// The blob key of `bytes`.
    pub fn blob_of(bytes: &[u8]) -> Self {
        Self::Blob(BlobHash::of(bytes))
    }

    /// A KV key. Errors: [`StoreError::InvalidKey`].
    pub fn kv(namespace: impl Into<String>, key: impl Into<String>) -> Result<Self, StoreError> {
        KvKey::new(namespace, key).map(Self::Kv)
    }

    /// The key as a relative path, the same on every backend: `blobs/<64 hex>` or
    /// `kv/<namespace>/<key>`.
    pub fn path(&self) -> String {
        match self {
            Key::Blob(h) => format!("blobs/{}", h.to_hex()),
            Key::Kv(k) => format!("kv/{}/{}", k.namespace, k.key),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Blob(h) => fmt::Display::fmt(h, f),
            Key::Kv(k) => fmt::Display::fmt(k, f),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

/// What [`crate::Tier::list`] lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prefix {
    /// Every blob.
    Blobs,
    /// The entries of `namespace` whose key starts with `key_prefix` (may be empty; validated
    /// like a key, except that it may end in `/`).
    Kv {
        /// The namespace.
        namespace: String,
        /// The start of the keys.
        key_prefix: String,
    },
}

impl Prefix {
    /// A KV prefix. Errors: [`StoreError::InvalidKey`].
    pub fn kv(
        namespace: impl Into<String>,
        key_prefix: impl Into<String>,
    ) -> Result<Self, StoreError> {
        let (namespace, key_prefix) = (namespace.into(), key_prefix.into());
        check_namespace(&namespace)?;
        check_key_text(&key_prefix, true)?;
        Ok(Self::Kv {
            namespace,
            key_prefix,
        })
    }

    /// Whether `key` falls under this prefix.
    pub fn matches(&self, key: &Key) -> bool {
        match (self, key) {
            (Prefix::Blobs, Key::Blob(_)) => true,
            (
                Prefix::Kv {
                    namespace,
                    key_prefix,
                },
                Key::Kv(k),
            ) => k.namespace == *namespace && k.key.starts_with(key_prefix.as_str()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_hash_round_trips_and_names_bad_text() {
        let h = BlobHash::of(b"hello");
        let text = h.to_string();
        assert_eq!(
            text,
            "blake3:ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
        assert_eq!(text.parse::<BlobHash>().ok(), Some(h));
        assert_eq!(
            text.to_uppercase()
                .replacen("BLAKE3", "blake3", 1)
                .parse::<BlobHash>()
                .ok(),
            Some(h)
        );
        for bad in ["sha256:00", "blake3:zz", "blake3:", &text[..70]] {
            assert!(
                matches!(bad.parse::<BlobHash>(), Err(StoreError::InvalidKey { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn kv_keys_refuse_traversal_and_absolute_paths() {
        assert_eq!(
            Key::kv("npm", "esm.sh/react@19.1.0/index.js")
                .map(|k| k.path())
                .ok(),
            Some("kv/npm/esm.sh/react@19.1.0/index.js".to_owned())
        );
        for (ns, key) in [
            ("npm", "../etc/passwd"),
            ("npm", "a/../../b"),
            ("npm", "/abs"),
            ("npm", "a//b"),
            ("npm", "a/"),
            ("npm", "a\\b"),
            ("npm", "a\nb"),
            ("npm", ""),
            ("NPM", "a"),
            ("-x", "a"),
            ("", "a"),
            ("n/s", "a"),
        ] {
            assert!(
                matches!(KvKey::new(ns, key), Err(StoreError::InvalidKey { .. })),
                "{ns:?} {key:?}"
            );
        }
        assert!(KvKey::new("npm", "a".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn prefixes_match_their_keys_only() -> Result<(), StoreError> {
        let p = Prefix::kv("npm", "esm.sh/")?;
        assert!(p.matches(&Key::kv("npm", "esm.sh/a")?));
        assert!(!p.matches(&Key::kv("npm", "cdn/a")?));
        assert!(!p.matches(&Key::blob_of(b"x")));
        assert!(Prefix::Blobs.matches(&Key::blob_of(b"x")));
        assert!(Prefix::kv("npm", "../").is_err());
        assert!(Prefix::kv("npm", "").is_ok());
        Ok(())
    }
}
