//! Anonymised room ids: a keyed BLAKE3 hash of the room name under a per-installation salt.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::ReportError;

/// Hex digits of an anonymised room id (the first 16 bytes of the hash).
pub const ROOM_ID_HEX: usize = 32;

/// Turns room names into anonymised room ids.
///
/// The id is the first 16 bytes, in lower-case hex, of `blake3::keyed_hash(salt, room name)`
/// (BLAKE3's keyed mode, <https://github.com/BLAKE3-team/BLAKE3-specs>), with a 32-byte salt
/// drawn once per installation from the OS's random source and kept in a file beside the queue.
/// The same room always gets the same id from one installation, so the server can group one
/// room's reports; without the salt, which never leaves the machine, the name cannot be
/// recovered by hashing guessed names. Two installations give one room different ids.
#[derive(Clone)]
pub struct RoomHasher {
    salt: [u8; 32],
}

impl std::fmt::Debug for RoomHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomHasher { salt: <hidden> }")
    }
}

impl RoomHasher {
    /// A hasher with this salt.
    pub fn new(salt: [u8; 32]) -> Self {
        Self { salt }
    }

    /// Reads the salt from `path` (64 hex digits), creating it with fresh random bytes when the
    /// file is missing or does not hold a salt (a damaged salt only changes future room ids).
    ///
    /// Errors: [`ReportError::Salt`] when the OS has no random source or the file cannot be
    /// written.
    pub fn load_or_create(path: &Path) -> Result<Self, ReportError> {
        if let Some(salt) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| parse_hex32(text.trim()))
        {
            return Ok(Self::new(salt));
        }
        let fail = |message: String| ReportError::Salt {
            path: path.to_owned(),
            message,
        };
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|e| fail(format!("no random source: {e}")))?;
        let hex: String = salt.iter().map(|b| format!("{b:02x}")).collect();
        // Write to a temporary file and rename, so a crash never leaves half a salt.
        let mut tmp = PathBuf::from(path.as_os_str());
        tmp.set_extension("salt.tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(hex.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path));
        written.map_err(|e| fail(e.to_string()))?;
        Ok(Self::new(salt))
    }

    /// The anonymised id of `room`: [`ROOM_ID_HEX`] lower-case hex digits.
    pub fn room_id(&self, room: &str) -> String {
        let hash = blake3::keyed_hash(&self.salt, room.as_bytes());
        hash.to_hex()[..ROOM_ID_HEX].to_owned()
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_salt_file_and_differ_across_salts(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("reports.salt");
        let a = RoomHasher::load_or_create(&path)?;
        let again = RoomHasher::load_or_create(&path)?;
        let id = a.room_id("team-secret");
        assert_eq!(id, again.room_id("team-secret"));
        assert_eq!(id.len(), ROOM_ID_HEX);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, a.room_id("team-secret2"));
        let other = RoomHasher::load_or_create(&dir.path().join("other.salt"))?;
        assert_ne!(id, other.room_id("team-secret"));
        // The keyed hash, not a plain one.
        assert_ne!(id, blake3::hash(b"team-secret").to_hex()[..ROOM_ID_HEX]);
        Ok(())
    }
}
