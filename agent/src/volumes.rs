//! This node's named volumes, as Docker's `local` driver keeps them: a directory per volume,
//! `<state_dir>/volumes/<name>/`, holding `_data` (what tasks mount) and `volume.json` (its
//! labels and creation time). Created by `volume create` or on a task's first use, kept when
//! the task goes, removed by `volume rm` unless a running task mounts it.
//!
//! Nothing is ever half there: a volume is built in a hidden `.tmp-*` directory (synced) and
//! renamed into place, and removed by renaming it to a hidden `.rm-*` directory first, so a
//! crash leaves either the whole volume or none; the hidden leftovers are swept at open. Names
//! are checked (Docker's rule) before anything touches the disk.
//!
//! Which tasks use a volume is kept in memory: the executor registers a task when it starts
//! it (or re-adopts it after an agent restart) and releases it when its process exits. One
//! lock serializes every change, so `volume rm` and a task starting with the volume never
//! interleave.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
    time::UNIX_EPOCH,
};

use rand::RngCore as _;
use shoal_control::{
    clock::now_ms,
    cluster::{InvalidVolumeName, validate_volume_name},
    error_chain::Chain,
};
use tracing::warn;

/// Docker's label on the volumes it creates for a mount with no source; such a volume goes
/// with its task (as Docker removes a swarm task's container with its anonymous volumes).
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";
/// The only driver: volumes are directories of this node.
pub const DRIVER: &str = "local";

const DATA: &str = "_data";
const METADATA: &str = "volume.json";
/// Prefixes of the hidden directories of a volume being built or removed. Volume names start
/// with a letter or digit, so these never clash with one.
const BUILDING: &str = ".tmp-";
const REMOVING: &str = ".rm-";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    InvalidName(#[from] InvalidVolumeName),
    /// Docker's words.
    #[error("no such volume")]
    NotFound,
    /// Docker's words, with the IDs of the tasks that mount it.
    #[error("volume is in use - [{}]", tasks.join(" "))]
    InUse { tasks: Vec<String> },
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VolumeError {
    let path = path.to_path_buf();
    move |source| VolumeError::Io {
        action,
        path,
        source,
    }
}

/// A volume as `volume ls` and `volume inspect` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created_at_ms: u64,
    /// Its `_data` directory: what tasks mount.
    pub mountpoint: PathBuf,
    /// IDs of the tasks running here that mount it.
    pub used_by: Vec<String>,
}

impl Volume {
    pub fn is_anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }
}

pub struct Volumes {
    /// `<state_dir>/volumes`.
    root: PathBuf,
    /// Volume name -> the tasks running here that mount it. Also the lock every change holds.
    users: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl Volumes {
    /// Opens (creating if needed) `<state_dir>/volumes` and sweeps what an agent that died
    /// mid-create or mid-remove left behind.
    pub fn open(state_dir: &Path) -> Result<Volumes, VolumeError> {
        let root = state_dir.join("volumes");
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(io_error("creating", &root))?;
        for entry in fs::read_dir(&root).map_err(io_error("reading", &root))? {
            let entry = entry.map_err(io_error("reading", &root))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(BUILDING) || name.starts_with(REMOVING) {
                let path = entry.path();
                if let Err(e) = fs::remove_dir_all(&path) {
                    warn!(path = %path.display(), error = %Chain(&e), "removing a leftover volume directory");
                }
            }
        }
        Ok(Volumes {
            root,
            users: Mutex::default(),
        })
    }

    /// A fresh name for a volume created without one: 64 hex characters, as Docker's.
    pub fn generate_name() -> String {
        random_hex(32)
    }

    /// Creates volume `name` (generated if `None`) with `labels`. A volume of that name that
    /// already exists is returned as it is, as Docker does.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        let name = name.map_or_else(Self::generate_name, str::to_owned);
        validate_volume_name(&name)?;
        let users = self.lock();
        if !self.volume_dir(&name).exists() {
            self.build(&name, &labels)?;
        }
        self.load(&name, &users)
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let users = self.lock();
        let mut volumes = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_error("reading", &self.root))? {
            let entry = entry.map_err(io_error("reading", &self.root))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if validate_volume_name(&name).is_err() || !entry.path().is_dir() {
                continue;
            }
            match self.load(&name, &users) {
                Ok(volume) => volumes.push(volume),
                // Removed meanwhile by hand: not a volume any more.
                Err(VolumeError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// A volume by name; a name no volume could have is simply not found, as in Docker.
    pub fn inspect(&self, name: &str) -> Result<Volume, VolumeError> {
        if validate_volume_name(name).is_err() {
            return Err(VolumeError::NotFound);
        }
        let users = self.lock();
        self.load(name, &users)
    }

    /// Removes a volume and its data, unless a task running here mounts it.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        if validate_volume_name(name).is_err() {
            return Err(VolumeError::NotFound);
        }
        let users = self.lock();
        if let Some(tasks) = users.get(name).filter(|t| !t.is_empty()) {
            return Err(VolumeError::InUse {
                tasks: tasks.iter().cloned().collect(),
            });
        }
        let dir = self.volume_dir(name);
        if !dir.is_dir() {
            return Err(VolumeError::NotFound);
        }
        // Out of sight at once; the data goes after (or at the next open, after a crash).
        let doomed = self.root.join(format!("{REMOVING}{}", random_hex(8)));
        fs::rename(&dir, &doomed).map_err(io_error("removing", &dir))?;
        sync_dir(&self.root)?;
        if let Err(e) = fs::remove_dir_all(&doomed) {
            warn!(volume = name, path = %doomed.display(), error = %Chain(&e), "removing a volume's data");
        }
        Ok(())
    }

    /// For a task about to start: the data directory of volume `name`, created (with the
    /// anonymous label if `anonymous`) if it does not exist. The task counts as a user of the
    /// volume until [`Volumes::release`].
    pub fn acquire(
        &self,
        name: &str,
        task_id: &str,
        anonymous: bool,
    ) -> Result<PathBuf, VolumeError> {
        validate_volume_name(name)?;
        let mut users = self.lock();
        if !self.volume_dir(name).exists() {
            let labels = if anonymous {
                BTreeMap::from([(ANONYMOUS_LABEL.to_owned(), String::new())])
            } else {
                BTreeMap::new()
            };
            self.build(name, &labels)?;
        }
        let data = self.volume_dir(name).join(DATA);
        if !data.is_dir() {
            // A damaged volume (its data removed by hand): the task gets an empty one.
            make_data_dir(&data)?;
        }
        users
            .entry(name.to_owned())
            .or_default()
            .insert(task_id.to_owned());
        Ok(data)
    }

    /// Records that a task re-adopted after an agent restart mounts `name` (creates nothing).
    pub fn register(&self, name: &str, task_id: &str) {
        self.lock()
            .entry(name.to_owned())
            .or_default()
            .insert(task_id.to_owned());
    }

    /// The task's process has exited: it no longer uses any volume.
    pub fn release(&self, task_id: &str) {
        let mut users = self.lock();
        users.retain(|_, tasks| {
            tasks.remove(task_id);
            !tasks.is_empty()
        });
    }

    /// Removes `name` if it is an anonymous volume no task uses (its task is gone). Named
    /// volumes stay, as do volumes that no longer exist.
    pub fn remove_anonymous(&self, name: &str) -> Result<(), VolumeError> {
        match self.inspect(name) {
            Ok(volume) if volume.is_anonymous() && volume.used_by.is_empty() => {
                match self.remove(name) {
                    Ok(()) | Err(VolumeError::NotFound | VolumeError::InUse { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Ok(_) | Err(VolumeError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> {
        // Every change leaves the map consistent; a panicked holder must not stop volumes.
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Builds the volume in a hidden directory, then renames it into place.
    fn build(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), VolumeError> {
        let building = self.root.join(format!("{BUILDING}{}", random_hex(8)));
        let result = (|| {
            DirBuilder::new()
                .mode(0o700)
                .create(&building)
                .map_err(io_error("creating", &building))?;
            make_data_dir(&building.join(DATA))?;
            let metadata = serde_json::json!({
                "Labels": labels,
                "CreatedAtMs": now_ms(),
            });
            write_synced(&building.join(METADATA), metadata.to_string().as_bytes())?;
            sync_dir(&building)?;
            let dir = self.volume_dir(name);
            fs::rename(&building, &dir).map_err(io_error("creating", &dir))?;
            sync_dir(&self.root)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&building);
        }
        result
    }

    /// Reads a volume. A missing or unreadable `volume.json` (a directory made by hand) reads
    /// as no labels, created when the directory was.
    fn load(
        &self,
        name: &str,
        users: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<Volume, VolumeError> {
        let dir = self.volume_dir(name);
        let meta = match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => meta,
            Ok(_) => return Err(VolumeError::NotFound),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(VolumeError::NotFound),
            Err(source) => {
                return Err(VolumeError::Io {
                    action: "reading",
                    path: dir,
                    source,
                });
            }
        };
        let dir_created_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let path = dir.join(METADATA);
        let saved: Option<serde_json::Value> = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(value) => Some(value),
                Err(e) => {
                    warn!(path = %path.display(), error = %Chain(&e), "unreadable volume metadata");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(VolumeError::Io {
                    action: "reading",
                    path,
                    source,
                });
            }
        };
        let labels = saved
            .as_ref()
            .and_then(|v| v["Labels"].as_object())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let created_at_ms = saved
            .as_ref()
            .and_then(|v| v["CreatedAtMs"].as_u64())
            .unwrap_or(dir_created_ms);
        Ok(Volume {
            name: name.to_owned(),
            labels,
            created_at_ms,
            mountpoint: dir.join(DATA),
            used_by: users
                .get(name)
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default(),
        })
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A volume's data directory: 0755 whatever the umask, as Docker's, so a task's non-root
/// users can read it.
fn make_data_dir(path: &Path) -> Result<(), VolumeError> {
    DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(io_error("creating", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(io_error("setting the mode of", path))
}

/// Writes a new file and syncs it (it is renamed into place with its directory later).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), VolumeError> {
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(io_error("writing", path))
}

/// Makes the entries of `dir` (a rename into or out of it) durable.
fn sync_dir(dir: &Path) -> Result<(), VolumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unique state dir, removed on drop.
    struct StateDir(PathBuf);

    impl StateDir {
        fn new(name: &str) -> StateDir {
            let dir = std::env::temp_dir().join(format!(
                "shoal-volumes-{name}-{}-{}",
                std::process::id(),
                random_hex(4)
            ));
            fs::create_dir_all(&dir).unwrap();
            StateDir(dir)
        }
    }

    impl Drop for StateDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// What is in `volumes/`, hidden entries included.
    fn entries(dir: &StateDir) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.0.join("volumes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn create_inspect_list_remove() {
        let dir = StateDir::new("basic");
        let volumes = Volumes::open(&dir.0).unwrap();
        let labels = BTreeMap::from([("env".to_owned(), "test".to_owned())]);
        let created = volumes.create(Some("data"), labels.clone()).unwrap();
        assert_eq!(created.name, "data");
        assert_eq!(created.labels, labels);
        assert_eq!(created.mountpoint, dir.0.join("volumes/data/_data"));
        assert!(created.mountpoint.is_dir());
        let mode = fs::metadata(&created.mountpoint)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(created.created_at_ms > 0);
        assert!(!created.is_anonymous());

        // Creating it again returns it unchanged, labels and time included.
        fs::write(created.mountpoint.join("kept"), "x").unwrap();
        let again = volumes.create(Some("data"), BTreeMap::new()).unwrap();
        assert_eq!(again, created);
        assert!(again.mountpoint.join("kept").exists());

        // A generated name: 64 hex characters.
        let unnamed = volumes.create(None, BTreeMap::new()).unwrap();
        assert_eq!(unnamed.name.len(), 64);
        assert!(unnamed.name.bytes().all(|b| b.is_ascii_hexdigit()));

        let names: Vec<String> = volumes
            .list()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        let mut expected = vec!["data".to_owned(), unnamed.name.clone()];
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(volumes.inspect("data").unwrap(), created);

        volumes.remove("data").unwrap();
        assert!(!dir.0.join("volumes/data").exists());
        assert!(matches!(
            volumes.inspect("data"),
            Err(VolumeError::NotFound)
        ));
        assert!(matches!(volumes.remove("data"), Err(VolumeError::NotFound)));
        // Nothing hidden left behind.
        assert_eq!(entries(&dir), vec![unnamed.name]);

        // Metadata survives a reopen (an agent restart).
        let kept = volumes
            .create(Some("kept"), BTreeMap::from([("a".into(), "b".into())]))
            .unwrap();
        drop(volumes);
        let volumes = Volumes::open(&dir.0).unwrap();
        assert_eq!(volumes.inspect("kept").unwrap(), kept);
    }

    #[test]
    fn invalid_names_create_nothing() {
        let dir = StateDir::new("names");
        let volumes = Volumes::open(&dir.0).unwrap();
        for bad in ["a", "../etc", "a/b", ".hidden", "-x", ""] {
            let err = volumes.create(Some(bad), BTreeMap::new()).unwrap_err();
            assert!(matches!(err, VolumeError::InvalidName(_)), "{bad:?}: {err}");
            assert!(volumes.acquire(bad, "t1", false).is_err(), "{bad:?}");
            // No volume can have such a name: not found, and nothing outside is touched.
            assert!(matches!(volumes.inspect(bad), Err(VolumeError::NotFound)));
            assert!(matches!(volumes.remove(bad), Err(VolumeError::NotFound)));
        }
        assert_eq!(
            volumes
                .create(Some("a"), BTreeMap::new())
                .unwrap_err()
                .to_string(),
            "volume name is too short, names should be at least two alphanumeric characters"
        );
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    }

    #[test]
    fn a_volume_in_use_is_not_removed() {
        let dir = StateDir::new("in-use");
        let volumes = Volumes::open(&dir.0).unwrap();
        // Created on first use.
        let data = volumes.acquire("db", "task1", false).unwrap();
        assert_eq!(data, dir.0.join("volumes/db/_data"));
        volumes.acquire("db", "task2", false).unwrap();
        let err = volumes.remove("db").unwrap_err();
        assert_eq!(err.to_string(), "volume is in use - [task1 task2]");
        assert_eq!(volumes.inspect("db").unwrap().used_by, ["task1", "task2"]);
        volumes.release("task1");
        assert!(matches!(
            volumes.remove("db"),
            Err(VolumeError::InUse { tasks }) if tasks == ["task2"]
        ));
        volumes.release("task2");
        volumes.remove("db").unwrap();
        assert!(!dir.0.join("volumes/db").exists());

        // A re-adopted task's use counts too.
        volumes.create(Some("logs"), BTreeMap::new()).unwrap();
        volumes.register("logs", "task3");
        assert!(volumes.remove("logs").is_err());
        volumes.release("task3");
        volumes.remove("logs").unwrap();
    }

    #[test]
    fn anonymous_volumes_go_with_their_task_named_ones_stay() {
        let dir = StateDir::new("anon");
        let volumes = Volumes::open(&dir.0).unwrap();
        let anon = Volumes::generate_name();
        volumes.acquire(&anon, "task1", true).unwrap();
        volumes.acquire("named", "task1", false).unwrap();
        assert!(volumes.inspect(&anon).unwrap().is_anonymous());
        // Still running: kept.
        volumes.remove_anonymous(&anon).unwrap();
        assert!(volumes.inspect(&anon).is_ok());
        volumes.release("task1");
        volumes.remove_anonymous(&anon).unwrap();
        volumes.remove_anonymous("named").unwrap();
        volumes.remove_anonymous("never-existed").unwrap();
        assert!(matches!(volumes.inspect(&anon), Err(VolumeError::NotFound)));
        assert!(volumes.inspect("named").is_ok());
    }

    #[test]
    fn leftovers_of_a_crash_are_swept_at_open() {
        let dir = StateDir::new("sweep");
        let volumes = Volumes::open(&dir.0).unwrap();
        volumes.create(Some("data"), BTreeMap::new()).unwrap();
        drop(volumes);
        let root = dir.0.join("volumes");
        fs::create_dir_all(root.join(".tmp-0011/_data")).unwrap();
        fs::create_dir_all(root.join(".rm-2233/_data")).unwrap();
        // A directory made by hand is a volume without labels.
        fs::create_dir_all(root.join("manual/_data")).unwrap();
        let volumes = Volumes::open(&dir.0).unwrap();
        assert_eq!(entries(&dir), ["data", "manual"]);
        let manual = volumes.inspect("manual").unwrap();
        assert!(manual.labels.is_empty() && manual.created_at_ms > 0);
    }
}
