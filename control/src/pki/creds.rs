//! [`NodeCredentials`]: a node's TLS identity (CA certificate, node certificate and key) and
//! how it is kept in the state directory.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::PkiError;

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

impl NodeCredentials {
    /// Writes the three files into `dir` (created if needed). Each file is written to a
    /// temporary file and synced, then the three are renamed over the old ones, so a crash
    /// never leaves a torn file. (The set of three is not atomic: a crash between two renames
    /// can pair a new certificate with an old key; writing every temp file before the first
    /// rename keeps that window to a few syscalls.) The key is created with mode 0600 from the
    /// start, not chmod-ed afterwards, so it is never readable by others, even briefly.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let files = [
            (KEY_FILE, &self.key_pem, 0o600),
            (CERT_FILE, &self.cert_pem, 0o644),
            (CA_FILE, &self.ca_cert_pem, 0o644),
        ];
        let mut staged = Vec::with_capacity(files.len());
        for (name, contents, mode) in files {
            let path = dir.join(name);
            staged.push((write_temp(&path, contents, mode)?, path));
        }
        for (tmp, path) in staged {
            fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
        }
        // The renames are durable only once the directory itself is synced.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", dir))?;
        Ok(())
    }

    /// Reads the credentials saved in `dir`: `Ok(None)` when there are none (the node is not
    /// in a swarm), an error when only some of the files are there.
    pub fn load(dir: &Path) -> Result<Option<Self>, PkiError> {
        let ca = read_optional(&dir.join(CA_FILE))?;
        let cert = read_optional(&dir.join(CERT_FILE))?;
        let key = read_optional(&dir.join(KEY_FILE))?;
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca_cert_pem), Some(cert_pem), Some(key_pem)) => Ok(Some(NodeCredentials {
                ca_cert_pem,
                cert_pem,
                key_pem,
            })),
            (ca, cert, _) => Err(PkiError::IncompleteCredentials {
                dir: dir.to_path_buf(),
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

    /// Removes the saved credentials (on `swarm leave`). Missing files are not an error.
    pub fn remove(dir: &Path) -> Result<(), PkiError> {
        for name in [CA_FILE, CERT_FILE, KEY_FILE] {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &path)(e)),
            }
        }
        Ok(())
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

/// Writes `contents` to `<path>.tmp` with `mode`, synced; returns the temp path.
fn write_temp(path: &Path, contents: &str, mode: u32) -> Result<PathBuf, PkiError> {
    let mut tmp: PathBuf = path.to_path_buf();
    tmp.as_mut_os_string().push(".tmp");
    // A temp file left by an earlier crash may have other permissions: start afresh, since
    // `mode` only applies to files being created.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &tmp)(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing", &tmp))?;
    Ok(tmp)
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
        let mode = fs::metadata(sub.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Saving again replaces the files, and leaves no temporary file behind.
        let mut newer = sample();
        newer.cert_pem = "cert2\n".into();
        newer.save(&sub).unwrap();
        assert_eq!(NodeCredentials::load(&sub).unwrap(), Some(newer));
        let names: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn partial_credentials_are_an_error_and_remove_clears() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let err = NodeCredentials::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(CERT_FILE), "{err}");
        NodeCredentials::remove(dir.path()).unwrap();
        assert!(NodeCredentials::load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("key\\n"), "{shown}");
    }
}
