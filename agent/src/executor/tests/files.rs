//! Secrets and configs in real tasks: where the task sees them, with their owners and modes,
//! read-only, and nowhere on the node's disk.

use std::collections::BTreeMap;

use shoal_control::cluster::objects::{FileData, FileReference, TaskFiles};

use super::*;

const SECRET: &[u8] = b"s3cr3t-bytes-of-the-executor-test";

fn reference(id: &str, name: &str, target: &str, mode: u32, uid: u32, gid: u32) -> FileReference {
    FileReference {
        id: id.into(),
        name: name.into(),
        target: target.into(),
        uid,
        gid,
        mode,
    }
}

/// Runs `argv` in the task (as `shoal exec` does) and returns its stdout, or its stderr as
/// the error.
fn run_in(ex: &Executor, id: &str, argv: &[&str]) -> Result<String, String> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let out = ex
        .exec_command(id, &argv)
        .expect("a command in the task")
        .stdin(Stdio::null())
        .output()
        .expect("running the command");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Regular files under `dir` that hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if kind.is_file()
            && fs::read(&path)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}

#[test]
fn secrets_and_configs_are_the_tasks_own_and_never_on_disk() {
    let h = Harness::new("files");
    let config_target = h.scratch("etc").join("app.conf");
    fs::write(&config_target, "the host's own\n").expect("writing the config target");
    let config_path = config_target.display().to_string();
    let ex = h.open();
    let mut reports = Reports::new(&ex);

    // --- 1. a task with two secrets (one nested) and a config
    let mut t = task("tfiles1", &["sleep", "30"]);
    t.spec.secrets = vec![
        reference("s1", "db", "db", 0o400, 1, 2),
        reference("s2", "key", "app/key.pem", 0o440, 0, 0),
    ];
    t.spec.configs = vec![reference("c1", "conf", &config_path, 0o444, 0, 0)];
    let files = TaskFiles {
        secrets: BTreeMap::from([
            ("s1".to_string(), FileData::new(SECRET.to_vec())),
            ("s2".to_string(), FileData::new(b"nested".to_vec())),
        ]),
        configs: BTreeMap::from([("c1".to_string(), FileData::new(b"port=80\n".to_vec()))]),
    };
    ex.reconcile_with_files(std::slice::from_ref(&t), &files);
    reports.wait("tfiles1", TaskState::Running);

    // --- 2. the task sees them, as asked
    let run = |argv: &[&str]| run_in(&ex, "tfiles1", argv);
    assert_eq!(run(&["cat", "/run/secrets/db"]).unwrap().as_bytes(), SECRET);
    assert_eq!(run(&["cat", "/run/secrets/app/key.pem"]).unwrap(), "nested");
    assert_eq!(run(&["cat", &config_path]).unwrap(), "port=80\n");
    assert_eq!(
        run(&[
            "stat",
            "-c",
            "%a %u %g",
            "/run/secrets/db",
            "/run/secrets/app/key.pem",
            &config_path
        ])
        .unwrap(),
        "400 1 2\n440 0 0\n444 0 0\n"
    );
    assert_eq!(
        run(&["stat", "-f", "-c", "%T", "/run/secrets"]).unwrap(),
        "tmpfs\n"
    );
    for target in ["/run/secrets/new", "/run/secrets/db", config_path.as_str()] {
        let err = run(&["sh", "-c", &format!("echo x > {target}")]).unwrap_err();
        assert!(err.contains("Read-only file system"), "{target}: {err}");
    }
    // The staging mount is gone from the task's view; the host sees none of it.
    let pid = ex.pid("tfiles1").expect("pid");
    let inside = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    assert!(!inside.contains("/tfiles1/files "), "{inside}");
    let outside = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!outside.contains(" /run/secrets "), "{outside}");
    assert_eq!(
        fs::read_to_string(&config_target).unwrap(),
        "the host's own\n"
    );

    // --- 3. nothing of the secret is on the node's disk, not even in the task's state
    assert_eq!(files_holding(&h.dir, SECRET), Vec::<PathBuf>::new());
    assert!(
        fs::read_dir(h.dir.join("tasks/tfiles1/files"))
            .expect("the mount point")
            .next()
            .is_none(),
        "the mount point stays empty"
    );

    // --- 4. data that did not come, and a target the node lacks, fail the task, saying so
    let mut missing = task("tfiles2", &["true"]);
    missing.spec.secrets = vec![reference("s9", "gone", "gone", 0o444, 0, 0)];
    let mut nowhere = task("tfiles3", &["true"]);
    nowhere.spec.configs = vec![reference(
        "c1",
        "conf",
        "/nonexistent/shoal.conf",
        0o444,
        0,
        0,
    )];
    ex.reconcile_with_files(&[t, missing, nowhere], &files);
    let failed = reports.wait("tfiles2", TaskState::Failed);
    assert_eq!(
        failed.error,
        "starting task failed: secret gone: its data did not come with the task's assignment"
    );
    let failed = reports.wait("tfiles3", TaskState::Failed);
    assert!(
        failed
            .error
            .contains("invalid config conf: target \"/nonexistent/shoal.conf\" is not a file"),
        "{}",
        failed.error
    );
}
