//! The data key (DEK) of a manager's Raft store, in `raft-dek.json` next to `raft.redb`: in the
//! clear when the swarm's autolock is off, sealed with the unlock key when it is on.
//!
//! Written like every membership file: a temp file (mode 0600) synced, renamed over the old
//! one, the directory synced, so a crash leaves the old key file or the new one, never half.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::seal::{SealError, SealKey, UnlockKey, base64_decode, base64_encode};

/// The DEK file's name, in the directory of `raft.redb`.
pub const DEK_FILE: &str = "raft-dek.json";

#[derive(Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
enum Stored {
    /// Autolock off: the key itself, base64.
    Plain { dek: String },
    /// Autolock on: the key sealed with the unlock key, base64.
    Sealed { sealed: String },
}

/// What the DEK file holds.
#[derive(Debug, PartialEq)]
pub enum DekFile {
    /// No file: a store of an earlier version, or a node that is not a manager.
    Missing,
    /// Autolock off.
    Plain(SealKey),
    /// Autolock on: the unlock key opens it.
    Sealed(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum DekError {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the data key file {} is damaged", path.display())]
    Damaged { path: PathBuf },
    #[error("parsing {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the data key is sealed: the swarm's unlock key is needed")]
    Locked,
    #[error("the unlock key does not open the data key")]
    WrongKey {
        #[source]
        source: SealError,
    },
    #[error("sealing the data key")]
    Seal {
        #[source]
        source: SealError,
    },
}

fn path_in(dir: &Path) -> PathBuf {
    dir.join(DEK_FILE)
}

impl DekFile {
    /// Reads the DEK file in `dir`.
    pub fn read(dir: &Path) -> Result<DekFile, DekError> {
        let path = path_in(dir);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DekFile::Missing),
            Err(source) => {
                return Err(DekError::Io {
                    action: "reading",
                    path,
                    source,
                });
            }
        };
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|source| DekError::Parse {
            path: path.clone(),
            source,
        })?;
        let damaged = || DekError::Damaged { path: path.clone() };
        match stored {
            Stored::Plain { dek } => base64_decode(&dek)
                .and_then(|b| SealKey::from_bytes(&b).ok())
                .map(DekFile::Plain)
                .ok_or_else(damaged),
            Stored::Sealed { sealed } => base64_decode(&sealed)
                .map(DekFile::Sealed)
                .ok_or_else(damaged),
        }
    }

    pub fn is_sealed(&self) -> bool {
        matches!(self, DekFile::Sealed(_))
    }

    /// The DEK: the clear one as is, a sealed one opened with `unlock`. `Ok(None)` when there
    /// is no file.
    pub fn open(&self, unlock: Option<&UnlockKey>) -> Result<Option<SealKey>, DekError> {
        match (self, unlock) {
            (DekFile::Missing, _) => Ok(None),
            (DekFile::Plain(dek), _) => Ok(Some(dek.clone())),
            (DekFile::Sealed(_), None) => Err(DekError::Locked),
            (DekFile::Sealed(sealed), Some(key)) => key
                .key()
                .open(sealed)
                .and_then(|bytes| SealKey::from_bytes(&bytes))
                .map(Some)
                .map_err(|source| DekError::WrongKey { source }),
        }
    }
}

/// Writes `dek` to the DEK file in `dir`: sealed with `unlock` if given, else in the clear.
pub fn write(dir: &Path, dek: &SealKey, unlock: Option<&UnlockKey>) -> Result<(), DekError> {
    let stored = match unlock {
        None => Stored::Plain {
            dek: base64_encode(dek.as_bytes(), true),
        },
        Some(key) => Stored::Sealed {
            sealed: base64_encode(
                &key.key()
                    .seal(dek.as_bytes())
                    .map_err(|source| DekError::Seal { source })?,
                true,
            ),
        },
    };
    // Serializing two strings cannot fail.
    let bytes = serde_json::to_vec(&stored).unwrap_or_default();
    let path = path_in(dir);
    let tmp = path.with_extension("tmp");
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DekError::Io {
            action,
            path,
            source,
        }
    };
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io("removing", &tmp)(e)),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("writing", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("replacing", &path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// Removes the DEK file in `dir` (a demoted manager's). A missing file is not an error.
pub fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_file(path_in(dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dek_file_is_missing_plain_or_sealed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DekFile::read(dir.path()).unwrap(), DekFile::Missing);
        assert_eq!(DekFile::Missing.open(None).unwrap(), None);

        let dek = SealKey::generate();
        write(dir.path(), &dek, None).unwrap();
        let plain = DekFile::read(dir.path()).unwrap();
        assert!(!plain.is_sealed());
        assert_eq!(plain.open(None).unwrap(), Some(dek.clone()));

        let unlock = UnlockKey::generate();
        write(dir.path(), &dek, Some(&unlock)).unwrap();
        let on_disk = fs::read(dir.path().join(DEK_FILE)).unwrap();
        let clear = base64_encode(dek.as_bytes(), true);
        assert!(
            !on_disk.windows(clear.len()).any(|w| w == clear.as_bytes()),
            "the sealed file holds the key in the clear"
        );
        let sealed = DekFile::read(dir.path()).unwrap();
        assert!(sealed.is_sealed());
        assert!(matches!(sealed.open(None), Err(DekError::Locked)));
        assert!(matches!(
            sealed.open(Some(&UnlockKey::generate())),
            Err(DekError::WrongKey { .. })
        ));
        assert_eq!(sealed.open(Some(&unlock)).unwrap(), Some(dek.clone()));

        // Autolock off again: back in the clear, no temp file left.
        write(dir.path(), &dek, None).unwrap();
        assert_eq!(DekFile::read(dir.path()).unwrap(), DekFile::Plain(dek));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        remove(dir.path()).unwrap();
        remove(dir.path()).unwrap();
        assert_eq!(DekFile::read(dir.path()).unwrap(), DekFile::Missing);
    }

    #[test]
    fn a_damaged_dek_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(DEK_FILE),
            br#"{"format":"plain","dek":"AAAA"}"#,
        )
        .unwrap();
        assert!(matches!(
            DekFile::read(dir.path()),
            Err(DekError::Damaged { .. })
        ));
        fs::write(dir.path().join(DEK_FILE), b"not json").unwrap();
        assert!(matches!(
            DekFile::read(dir.path()),
            Err(DekError::Parse { .. })
        ));
    }
}
