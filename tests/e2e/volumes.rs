//! Volumes and tmpfs mounts on real nodes: a named volume created on a task's first use keeps
//! its data across task replacement and is removed only once no task runs with it; `volume
//! create | ls | inspect | rm` on the node; tmpfs private to the task; anonymous volumes that go
//! with their task; bad mounts and names refused with one line, creating nothing.
//!
//! Tasks have no root filesystem of their own, so every mount target is a directory of the
//! host (here, under the fixture's work dir) that the mount covers in the task's view only.

use std::{fs, path::Path, time::Duration};

use shoal_tests::{Cluster, wait_until};

use crate::support::{ok, running, stderr};

/// Runs the CLI on node `i` and asserts it fails with `code` and one stderr line holding
/// `needle`.
fn refused(cluster: &Cluster, i: usize, args: &[&str], code: i32, needle: &str) {
    let out = cluster.nodes[i].cli(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.contains(needle), "{args:?}: {needle:?} not in {err:?}");
}

/// A directory of the host to mount on (every target must exist), under the work dir.
fn target_dir(cluster: &Cluster, name: &str) -> String {
    let dir = cluster.work_dir().join(name);
    fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

/// What `volumes/` of node `i` holds, hidden entries included.
fn volume_dirs(cluster: &Cluster, i: usize) -> Vec<String> {
    let dir = cluster.nodes[i].state_dir().join("volumes");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn volume_names(cluster: &Cluster, i: usize) -> Vec<String> {
    ok(cluster, i, &["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn inspect(cluster: &Cluster, i: usize, name: &str) -> serde_json::Value {
    let out = ok(cluster, i, &["volume", "inspect", name]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 1, "{out}");
    all[0].clone()
}

/// The line of a mountinfo whose mount point (field 5) is `target`.
fn mount_line<'a>(mountinfo: &'a str, target: &str) -> Option<&'a str> {
    mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(target))
}

#[test]
fn a_named_volume_outlives_its_tasks_and_goes_only_when_unused() {
    let cluster = Cluster::start(2);
    cluster.form_swarm(1);
    let node2 = 1;
    let mnt = target_dir(&cluster, "mnt-data");

    // --- 1. volume create on node2, with a label; bad names create nothing
    let out = ok(
        &cluster,
        node2,
        &["volume", "create", "--label", "env=test", "precreated"],
    );
    assert_eq!(out, "precreated");
    for (name, needle) in [
        ("a", "create a: volume name is too short"),
        (
            "bad/name",
            "create bad/name: \"bad/name\" includes invalid characters",
        ),
        ("../escape", "includes invalid characters"),
        ("_under", "includes invalid characters"),
    ] {
        refused(&cluster, node2, &["volume", "create", name], 1, needle);
    }
    refused(
        &cluster,
        node2,
        &["volume", "create", "--driver", "nfs", "x1"],
        2,
        "nfs",
    );
    assert_eq!(volume_dirs(&cluster, node2), ["precreated"]);
    let precreated = inspect(&cluster, node2, "precreated");
    assert_eq!(precreated["Labels"], serde_json::json!({ "env": "test" }));

    // --- 2. a service pinned to node2 appends its task ID to a volume created on first use
    let script = format!("echo $SHOAL_TASK_ID >> {mnt}/tasks; exec sleep 600");
    let mount = format!("type=volume,src=dbdata,dst={mnt}");
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--name",
            "db",
            "--constraint",
            "node.hostname==node2",
            "--mount",
            &mount,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let first = running(&cluster, "db", 1).remove(0);
    assert_eq!(first.node, node2);
    let state2 = cluster.nodes[node2].state_dir();
    let written = state2.join("volumes/dbdata/_data/tasks");
    wait_until(
        Duration::from_secs(10),
        "the first task's line in the volume",
        || match fs::read_to_string(&written) {
            Ok(text) if text.lines().eq([first.id.as_str()]) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // The host's directory under the mount is untouched: the volume is the task's view only.
    assert!(!Path::new(&mnt).join("tasks").exists());

    // --- 3. ls and inspect on node2 show it, Docker's columns and shape; node1 has none
    let ls = ok(&cluster, node2, &["volume", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(
        lines,
        [
            "DRIVER   VOLUME NAME",
            "local    dbdata",
            "local    precreated"
        ],
        "{ls}"
    );
    assert_eq!(ok(&cluster, 0, &["volume", "ls", "-q"]), "");
    let db = inspect(&cluster, node2, "dbdata");
    assert_eq!(db["Name"], "dbdata");
    assert_eq!(db["Driver"], "local");
    assert_eq!(db["Scope"], "local");
    assert_eq!(db["Labels"], serde_json::json!({}));
    assert_eq!(
        db["Mountpoint"],
        state2.join("volumes/dbdata/_data").display().to_string()
    );
    let created = db["CreatedAt"].as_str().unwrap();
    assert!(created.len() == 20 && created.ends_with('Z'), "{created}");
    let dangling = ok(
        &cluster,
        node2,
        &["volume", "ls", "-q", "--filter", "dangling=true"],
    );
    assert_eq!(dangling, "precreated");

    // --- 4. in use by the running task: refused, naming the task
    refused(
        &cluster,
        node2,
        &["volume", "rm", "dbdata"],
        1,
        &format!("remove dbdata: volume is in use - [{}]", first.id),
    );
    assert!(written.exists());

    // --- 5. the task is replaced on the same node: the new task reads what the first wrote
    ok(&cluster, 0, &["service", "update", "--force", "-d", "db"]);
    let second = wait_until(Duration::from_secs(30), "a new running task", || {
        let tasks = running(&cluster, "db", 1);
        if tasks[0].id == first.id {
            Err("still the first task".to_string())
        } else {
            Ok(tasks[0].clone())
        }
    });
    assert_eq!(second.node, node2);
    let expected = format!("{}\n{}", first.id, second.id);
    let seen = wait_until(
        Duration::from_secs(10),
        "both lines, read by the new task",
        || {
            let seen = ok(
                &cluster,
                0,
                &["exec", &second.id, "--", "cat", &format!("{mnt}/tasks")],
            );
            if seen == expected {
                Ok(seen)
            } else {
                Err(seen)
            }
        },
    );
    assert_eq!(seen, expected);

    // --- 6. the service goes: the volume stays until removed, then its directory is gone
    ok(&cluster, 0, &["service", "rm", "db"]);
    wait_until(
        Duration::from_secs(20),
        "volume rm dbdata once no task runs with it",
        || {
            let out = cluster.nodes[node2].cli(&["volume", "rm", "dbdata"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(stderr(&out))
            }
        },
    );
    assert!(!state2.join("volumes/dbdata").exists());
    refused(
        &cluster,
        node2,
        &["volume", "inspect", "dbdata"],
        1,
        "get dbdata: no such volume",
    );
    refused(
        &cluster,
        node2,
        &["volume", "rm", "dbdata"],
        1,
        "get dbdata: no such volume",
    );
    // Docker's -f: a missing volume is no error.
    ok(&cluster, node2, &["volume", "rm", "-f", "dbdata"]);
    assert_eq!(
        ok(&cluster, node2, &["volume", "rm", "precreated"]),
        "precreated"
    );
    assert!(volume_dirs(&cluster, node2).is_empty());
}

#[test]
fn tmpfs_and_anonymous_volumes_are_the_tasks_own() {
    let cluster = Cluster::start(1);
    cluster.form_swarm(1);
    let scratch = target_dir(&cluster, "mnt-scratch");
    let cache = target_dir(&cluster, "mnt-cache");
    let shared = target_dir(&cluster, "mnt-shared");
    let state = cluster.nodes[0].state_dir();

    // --- 1. bad mounts: one line each, no service, no volume
    for (mount, code, needle) in [
        ("type=nfs,src=a,dst=/b", 2, "type \"nfs\" is not valid"),
        (
            "type=volume,src=ab,dst=/b,volume-driver=x",
            2,
            "unknown key \"volume-driver\"",
        ),
        ("type=tmpfs,dst=/b,tmpfs-size=lots", 2, "invalid tmpfs-size"),
        ("type=volume,src=ab", 2, "target is required"),
        (
            "type=volume,src=bad/name,dst=/b",
            1,
            "includes invalid characters",
        ),
        ("type=tmpfs,dst=relative", 1, "must be absolute"),
        ("type=bind,src=/tmp,dst=/", 1, "destination can't be '/'"),
    ] {
        refused(
            &cluster,
            0,
            &["service", "create", "--mount", mount, "--", "sleep", "600"],
            code,
            needle,
        );
    }
    refused(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--mount",
            &format!("type=volume,src=ab,dst={scratch}"),
            "--mount",
            &format!("type=tmpfs,dst={scratch}/"),
            "--",
            "sleep",
            "600",
        ],
        1,
        "duplicate mount point",
    );
    assert_eq!(
        ok(&cluster, 0, &["service", "ls", "--format", "json"]),
        "[]"
    );
    // A task whose target is missing on the node fails before its volume is created.
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "lost",
            "--restart-condition",
            "none",
            "--mount",
            "type=volume,src=never,dst=/nonexistent/shoal-target",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_until(Duration::from_secs(20), "the task to fail", || {
        let out = ok(&cluster, 0, &["service", "ps", "--format", "json", "lost"]);
        let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        match tasks.first() {
            Some(t) if t["state"] == "failed" => {
                let error = t["error"].as_str().unwrap();
                assert!(error.contains("does not exist"), "{error}");
                Ok(())
            }
            _ => Err(out),
        }
    });
    ok(&cluster, 0, &["service", "rm", "lost"]);
    assert!(
        volume_dirs(&cluster, 0).is_empty(),
        "{:?}",
        volume_dirs(&cluster, 0)
    );

    // --- 2. a task with a tmpfs, an anonymous volume and a read-only named volume
    ok(&cluster, 0, &["volume", "create", "shared"]);
    fs::write(state.join("volumes/shared/_data/hello"), "from the host").unwrap();
    let script = format!("echo secret > {scratch}/file && exec sleep 600");
    ok(
        &cluster,
        0,
        &[
            "service",
            "create",
            "--name",
            "tmp",
            "--mount",
            &format!("type=tmpfs,dst={scratch},tmpfs-size=1m,tmpfs-mode=1770"),
            "--mount",
            &format!("type=volume,dst={cache}"),
            "--mount",
            &format!("type=volume,src=shared,dst={shared},readonly"),
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let task = running(&cluster, "tmp", 1).remove(0);
    let exec = |args: &[&str]| {
        let mut full = vec!["exec", task.id.as_str(), "--"];
        full.extend_from_slice(args);
        cluster.nodes[0].cli(&full)
    };

    // --- 3. the tmpfs is a tmpfs inside the task, with Docker's flags and the asked options,
    //        and nowhere on the host
    let mountinfo = ok(
        &cluster,
        0,
        &["exec", &task.id, "--", "cat", "/proc/self/mountinfo"],
    );
    let line = mount_line(&mountinfo, &scratch)
        .unwrap_or_else(|| panic!("no mount on {scratch} in the task:\n{mountinfo}"));
    let (options, fs_part) = line.split_once(" - ").unwrap();
    assert!(fs_part.starts_with("tmpfs tmpfs "), "{line}");
    assert!(
        fs_part.contains("size=1024k") && fs_part.contains("mode=1770"),
        "{line}"
    );
    let flags = options.split(' ').nth(5).unwrap();
    for flag in ["rw", "nosuid", "nodev", "noexec"] {
        assert!(flags.split(',').any(|f| f == flag), "{flag} not in {line}");
    }
    let secret = wait_until(Duration::from_secs(10), "the task's file", || {
        let out = exec(&["cat", &format!("{scratch}/file")]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(text)
        } else {
            Err(stderr(&out))
        }
    });
    assert_eq!(secret, "secret");
    let host_mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mount_line(&host_mounts, &scratch).is_none(),
        "the tmpfs leaked to the host"
    );
    assert!(!Path::new(&scratch).join("file").exists());

    // --- 4. the named volume is read-only in the task and holds what the host put there
    let out = exec(&["cat", &format!("{shared}/hello")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the host");
    let out = exec(&["touch", &format!("{shared}/x")]);
    assert!(!out.status.success(), "wrote to a read-only volume");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );

    // --- 5. the anonymous volume: 64 hex characters, Docker's label, the task's writes in it
    let names = volume_names(&cluster, 0);
    let anonymous: Vec<&String> = names.iter().filter(|n| *n != "shared").collect();
    assert_eq!(anonymous.len(), 1, "{names:?}");
    let anonymous = anonymous[0].clone();
    assert!(
        anonymous.len() == 64 && anonymous.bytes().all(|b| b.is_ascii_hexdigit()),
        "{anonymous}"
    );
    let labels = &inspect(&cluster, 0, &anonymous)["Labels"];
    assert_eq!(
        *labels,
        serde_json::json!({ "com.docker.volume.anonymous": "" })
    );
    let out = exec(&["sh", "-c", &format!("echo cached > {cache}/f")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let data = state.join("volumes").join(&anonymous).join("_data");
    assert_eq!(fs::read_to_string(data.join("f")).unwrap(), "cached\n");
    let line = mount_line(&mountinfo, &cache).unwrap();
    let root = line.split(' ').nth(3).unwrap();
    assert!(
        root.ends_with(&format!("volumes/{anonymous}/_data")),
        "{line}"
    );

    // --- 6. the service goes: its anonymous volume with it, the named one stays
    ok(&cluster, 0, &["service", "rm", "tmp"]);
    wait_until(
        Duration::from_secs(20),
        "the anonymous volume to go with its task",
        || {
            let names = volume_names(&cluster, 0);
            if names == ["shared"] {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        },
    );
    assert!(!state.join("volumes").join(&anonymous).exists());
    ok(&cluster, 0, &["volume", "rm", "shared"]);
    assert!(volume_dirs(&cluster, 0).is_empty());
}
