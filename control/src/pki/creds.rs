//! [`NodeCredentials`]: a node's TLS identity (CA certificate, node certificate and key) and
//! how it is kept in the state directory.
//!
//! Under autolock a manager's key file is sealed with its data key (the one that seals its
//! Raft store, itself sealed with the swarm's unlock key): `shoal-sealed-key-v1`, a newline,
//! the sealed key in base64. Otherwise, and on workers, the PEM is in the clear, as in Docker.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::PkiError;
use crate::raft::seal::{SealError, SealKey, base64_decode, base64_encode};

/// File holding the cluster CA certificate.
pub const CA_FILE: &str = "ca.pem";
/// File holding the node certificate.
pub const CERT_FILE: &str = "node.pem";
/// File holding the node's private key (mode 0600).
pub const KEY_FILE: &str = "node-key.pem";

/// What a node needs for mutual TLS with the cluster, all PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCredentials {
    /// The cluster CA certificate: the only root the node trusts.
    pub ca_cert_pem: String,
    /// The node certificate, signed by the CA, carrying the node ID (CN) and role (OU).
    pub cert_pem: String,
    /// The node's private key.
    pub key_pem: String,
}

// Hand-written so that a stray `{:?}` never prints the private key.
impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// The link that names the current set: `<dir>/tls -> tls.<generation>`.
const CURRENT: &str = "tls";
/// First line of a sealed key file.
const SEALED_HEADER: &str = "shoal-sealed-key-v1\n";

/// Why a sealed key file did not open.
#[derive(Debug, thiserror::Error)]
enum Unseal {
    #[error("the key file is sealed and no data key was given")]
    NoKey,
    #[error("the sealed key is not base64")]
    Encoding,
    #[error("the sealed key does not open")]
    Open(#[source] SealError),
    #[error("the key is not UTF-8")]
    Text,
}

impl NodeCredentials {
    /// Writes the three files as one set under `dir` (created if needed): into a new
    /// directory `tls.<generation>`, each file and the directory synced, then the link `tls`
    /// is switched to it with one rename, and the previous set removed. A crash at any point
    /// leaves either the old set or the new one, never a certificate paired with another
    /// set's key. The key is created with mode 0600, never chmod-ed afterwards.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        self.save_sealed(dir, None)
    }

    /// [`NodeCredentials::save`], with the key file sealed with `seal` if given.
    pub fn save_sealed(&self, dir: &Path, seal: Option<&SealKey>) -> Result<(), PkiError> {
        let key_file = match seal {
            None => self.key_pem.clone(),
            Some(seal) => {
                let sealed = seal.seal(self.key_pem.as_bytes()).map_err(|e| {
                    io_err("sealing", &dir.join(KEY_FILE))(io::Error::new(
                        io::ErrorKind::InvalidData,
                        e,
                    ))
                })?;
                format!("{SEALED_HEADER}{}\n", base64_encode(&sealed, true))
            }
        };
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let previous = fs::read_link(dir.join(CURRENT)).ok();
        let generation = previous
            .as_ref()
            .and_then(|p| p.to_str()?.strip_prefix("tls.")?.parse::<u64>().ok())
            .map_or(1, |g| g + 1);
        let name = format!("tls.{generation}");
        let set = dir.join(&name);
        remove_dir_if_any(&set)?;
        fs::create_dir(&set).map_err(io_err("creating", &set))?;
        for (file, contents, mode) in [
            (KEY_FILE, &key_file, 0o600),
            (CERT_FILE, &self.cert_pem, 0o644),
            (CA_FILE, &self.ca_cert_pem, 0o644),
        ] {
            write_synced(&set.join(file), contents, mode)?;
        }
        sync_dir(&set)?;
        let link = dir.join("tls.link");
        remove_file_if_any(&link)?;
        std::os::unix::fs::symlink(&name, &link).map_err(io_err("linking", &link))?;
        let current = dir.join(CURRENT);
        fs::rename(&link, &current).map_err(io_err("switching", &current))?;
        sync_dir(dir)?;
        // What is no longer current: the previous set, and files of the flat layout of
        // earlier versions.
        if let Some(previous) = previous
            && previous != Path::new(&name)
        {
            remove_dir_if_any(&dir.join(previous))?;
        }
        for file in [CA_FILE, CERT_FILE, KEY_FILE] {
            remove_file_if_any(&dir.join(file))?;
        }
        Ok(())
    }

    /// Reads the credentials saved in `dir`: `Ok(None)` when there are none (the node is not
    /// in a swarm), an error when only some of the files are there. Credentials saved by
    /// earlier versions (the three files in `dir` itself) are read too.
    pub fn load(dir: &Path) -> Result<Option<Self>, PkiError> {
        Self::load_sealed(dir, None)
    }

    /// [`NodeCredentials::load`], opening a sealed key file with `seal`. A key file in the
    /// clear is read as is.
    pub fn load_sealed(dir: &Path, seal: Option<&SealKey>) -> Result<Option<Self>, PkiError> {
        let current = dir.join(CURRENT);
        let set = if current.exists() {
            current
        } else {
            dir.to_path_buf()
        };
        let ca = read_optional(&set.join(CA_FILE))?;
        let cert = read_optional(&set.join(CERT_FILE))?;
        let key = read_optional(&set.join(KEY_FILE))?;
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca_cert_pem), Some(cert_pem), Some(key_file)) => Ok(Some(NodeCredentials {
                ca_cert_pem,
                cert_pem,
                key_pem: unseal(key_file, seal).map_err(|e| {
                    io_err("unsealing", &set.join(KEY_FILE))(io::Error::new(
                        io::ErrorKind::InvalidData,
                        e,
                    ))
                })?,
            })),
            (ca, cert, _) => Err(PkiError::IncompleteCredentials {
                dir: set,
                missing: if ca.is_none() {
                    CA_FILE
                } else if cert.is_none() {
                    CERT_FILE
                } else {
                    KEY_FILE
                },
            }),
        }
    }

    /// Removes the saved credentials. Missing files are not an error.
    pub fn remove(dir: &Path) -> Result<(), PkiError> {
        if let Ok(set) = fs::read_link(dir.join(CURRENT)) {
            remove_dir_if_any(&dir.join(set))?;
        }
        for name in [CURRENT, CA_FILE, CERT_FILE, KEY_FILE] {
            remove_file_if_any(&dir.join(name))?;
        }
        Ok(())
    }
}

/// The PEM of a key file's contents, opened with `seal` if it is sealed.
fn unseal(key_file: String, seal: Option<&SealKey>) -> Result<String, Unseal> {
    let Some(body) = key_file.strip_prefix(SEALED_HEADER) else {
        return Ok(key_file);
    };
    let seal = seal.ok_or(Unseal::NoKey)?;
    let sealed = base64_decode(body.trim()).ok_or(Unseal::Encoding)?;
    let plain = seal.open(&sealed).map_err(Unseal::Open)?;
    String::from_utf8(plain).map_err(|_| Unseal::Text)
}

fn remove_file_if_any(path: &Path) -> Result<(), PkiError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

fn remove_dir_if_any(path: &Path) -> Result<(), PkiError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), PkiError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

/// Writes `contents` to a new file at `path` with `mode`, synced.
fn write_synced(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("creating", path))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing", path))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PkiError {
    let path = path.to_path_buf();
    move |source| PkiError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn sample() -> NodeCredentials {
        NodeCredentials {
            ca_cert_pem: "ca\n".into(),
            cert_pem: "cert\n".into(),
            key_pem: "key\n".into(),
        }
    }

    #[test]
    fn save_load_round_trip_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("swarm");
        assert!(NodeCredentials::load(&sub).unwrap().is_none());
        sample().save(&sub).unwrap();
        assert_eq!(NodeCredentials::load(&sub).unwrap(), Some(sample()));
        let mode = fs::metadata(sub.join(CURRENT).join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Saving again replaces the set, and leaves only the link and the new set behind.
        let mut newer = sample();
        newer.cert_pem = "cert2\n".into();
        newer.save(&sub).unwrap();
        assert_eq!(NodeCredentials::load(&sub).unwrap(), Some(newer));
        let mut names: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["tls", "tls.2"]);
    }

    #[test]
    fn a_crash_before_the_switch_leaves_the_old_set_whole() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        // A save that died after writing half of the next set: the link still names the old.
        let next = dir.path().join("tls.2");
        fs::create_dir(&next).unwrap();
        fs::write(next.join(CERT_FILE), "new cert\n").unwrap();
        assert_eq!(NodeCredentials::load(dir.path()).unwrap(), Some(sample()));
        // The next save starts that set afresh.
        let mut newer = sample();
        newer.key_pem = "key2\n".into();
        newer.save(dir.path()).unwrap();
        assert_eq!(NodeCredentials::load(dir.path()).unwrap(), Some(newer));
    }

    #[test]
    fn credentials_of_earlier_versions_are_read_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        for (file, contents) in [
            (CA_FILE, "ca\n"),
            (CERT_FILE, "cert\n"),
            (KEY_FILE, "key\n"),
        ] {
            fs::write(dir.path().join(file), contents).unwrap();
        }
        assert_eq!(NodeCredentials::load(dir.path()).unwrap(), Some(sample()));
        sample().save(dir.path()).unwrap();
        assert!(!dir.path().join(CERT_FILE).exists());
        assert_eq!(NodeCredentials::load(dir.path()).unwrap(), Some(sample()));
    }

    #[test]
    fn partial_credentials_are_an_error_and_remove_clears() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        fs::remove_file(dir.path().join(CURRENT).join(CERT_FILE)).unwrap();
        let err = NodeCredentials::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(CERT_FILE), "{err}");
        NodeCredentials::remove(dir.path()).unwrap();
        assert!(NodeCredentials::load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn a_sealed_key_file_opens_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut creds = sample();
        creds.key_pem = "-----BEGIN PRIVATE KEY-----\nabc\n".into();
        let dek = SealKey::generate();
        creds.save_sealed(dir.path(), Some(&dek)).unwrap();
        let on_disk = fs::read_to_string(dir.path().join(CURRENT).join(KEY_FILE)).unwrap();
        assert!(on_disk.starts_with(SEALED_HEADER), "{on_disk}");
        assert!(!on_disk.contains("PRIVATE KEY"), "{on_disk}");
        assert_eq!(
            NodeCredentials::load_sealed(dir.path(), Some(&dek)).unwrap(),
            Some(creds.clone())
        );
        for wrong in [None, Some(&SealKey::generate())] {
            let err = NodeCredentials::load_sealed(dir.path(), wrong).unwrap_err();
            assert!(err.to_string().starts_with("unsealing"), "{err}");
        }
        // Back in the clear (a demoted manager): read with or without a key.
        creds.save(dir.path()).unwrap();
        assert_eq!(
            NodeCredentials::load_sealed(dir.path(), Some(&dek)).unwrap(),
            Some(creds)
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("key\\n"), "{shown}");
    }
}
