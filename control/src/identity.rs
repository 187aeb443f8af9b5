//! A node's identity: its ID, created on first start and kept in the state directory so that
//! a restarted agent (even after SIGKILL) is the same node.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use rand::Rng;

/// Node IDs look like Docker's: 25 characters of lowercase letters and digits.
pub const NODE_ID_LEN: usize = 25;
const NODE_ID_FILE: &str = "node-id";

/// A node's ID. Always [`NODE_ID_LEN`] characters of `[a-z0-9]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds {found:?}, which is not a node ID (25 characters of a-z and 0-9)")]
    Corrupt { path: PathBuf, found: String },
}

impl NodeId {
    /// A fresh random ID (about 129 bits of entropy).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let id = (0..NODE_ID_LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        NodeId(id)
    }

    /// Parses an ID, accepting only the canonical form.
    pub fn parse(s: &str) -> Option<Self> {
        let valid = s.len() == NODE_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        valid.then(|| NodeId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the ID kept in `state_dir`, or creates, persists and returns a new one. The file
    /// is written to a temporary name, synced and renamed, so a crash never leaves half an ID.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        let path = state_dir.join(NODE_ID_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let found = text.trim();
                NodeId::parse(found).ok_or_else(|| IdentityError::Corrupt {
                    path: path.clone(),
                    found: found.to_string(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = NodeId::generate();
                write_atomically(&path, format!("{}\n", id.0).as_bytes())?;
                Ok(id)
            }
            Err(source) => Err(IdentityError::Io {
                action: "reading",
                path,
                source,
            }),
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let io_error = |action, source| IdentityError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::create(&tmp).map_err(|e| io_error("creating", e))?;
    io::Write::write_all(&mut &file, contents).map_err(|e| io_error("writing", e))?;
    file.sync_all().map_err(|e| io_error("syncing", e))?;
    fs::rename(&tmp, path).map_err(|e| io_error("renaming into", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_canonical_and_distinct() {
        let a = NodeId::generate();
        let b = NodeId::generate();
        assert_eq!(NodeId::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a, b);
    }

    #[test]
    fn parse_rejects_non_canonical() {
        assert!(NodeId::parse("short").is_none());
        assert!(NodeId::parse("ABCDEFGHIJKLMNOPQRSTUVWXY").is_none());
        assert!(NodeId::parse("abcdefghijklmnopqrstuvwx-").is_none());
    }

    #[test]
    fn load_or_create_is_stable_and_rejects_corruption() {
        let dir = std::env::temp_dir().join(format!("shoal-identity-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let first = NodeId::load_or_create(&dir).unwrap();
        let again = NodeId::load_or_create(&dir).unwrap();
        assert_eq!(first, again);

        fs::write(dir.join(NODE_ID_FILE), "garbage").unwrap();
        let err = NodeId::load_or_create(&dir).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "got {err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
