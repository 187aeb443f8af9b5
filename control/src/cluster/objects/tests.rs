#![allow(clippy::unwrap_used, reason = "test code")]

use super::*;
use crate::{
    cluster::{Command, CommandResponse},
    orchestrator::{
        fixture::{Sim, new_service, replicated},
        parse_constraint,
    },
};

const SECRET: &[u8] = b"hunter2-correct-horse";

fn object(id: &str, name: &str, data: &[u8]) -> FileObject {
    FileObject {
        id: id.into(),
        name: name.into(),
        labels: BTreeMap::from([("env".to_string(), "test".to_string())]),
        data: FileData::new(data.to_vec()),
        created_at_ms: 1,
        updated_at_ms: 1,
        version: 1,
    }
}

fn create(kind: ObjectKind, object: FileObject) -> Command {
    Command::Objects(ObjectCommand::Create { kind, object })
}

fn remove(kind: ObjectKind, id: &str) -> Command {
    Command::Objects(ObjectCommand::Remove {
        kind,
        id: id.into(),
    })
}

fn reference(id: &str, name: &str) -> FileReference {
    FileReference {
        id: id.into(),
        name: name.into(),
        target: name.into(),
        uid: 0,
        gid: 0,
        mode: DEFAULT_FILE_MODE,
    }
}

fn rejected(response: CommandResponse) -> String {
    match response {
        CommandResponse::Rejected(why) => why,
        other => panic!("not rejected: {other:?}"),
    }
}

fn contains(haystack: &str, needle: &[u8]) -> bool {
    haystack.contains(std::str::from_utf8(needle).unwrap())
}

#[test]
fn names_follow_dockers_rule_and_words() {
    for good in [
        "a",
        "db",
        "db-password",
        "app.conf",
        "A_1.b-2",
        &"x".repeat(64),
    ] {
        assert_eq!(validate_name(good), Ok(()), "{good:?}");
    }
    assert_eq!(validate_name(""), Err("name must be provided".to_string()));
    for bad in [
        "-a",
        "a-",
        ".a",
        "a.",
        "_a",
        "a b",
        "a/b",
        "é",
        &"x".repeat(65),
    ] {
        assert_eq!(
            validate_name(bad),
            Err(
                "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and \
                 end character must be [a-zA-Z0-9]"
                    .to_string()
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn data_sizes_are_dockers() {
    let secret = ObjectKind::Secret;
    assert_eq!(
        validate_data(secret, b""),
        Err("secret data must be larger than 0 and less than 512000 bytes".to_string())
    );
    assert!(validate_data(secret, &vec![1; 500 * 1024 - 1]).is_ok());
    assert!(validate_data(secret, &vec![1; 500 * 1024]).is_err());
    let config = ObjectKind::Config;
    assert!(validate_data(config, &vec![1; 500 * 1024]).is_ok());
    assert_eq!(
        validate_data(config, &vec![1; 1000 * 1024]),
        Err("config data must be larger than 0 and less than 1024000 bytes".to_string())
    );
}

#[test]
fn debug_never_shows_a_secrets_data() {
    let mut state = ClusterState::default();
    let command = create(ObjectKind::Secret, object("s1", "db", SECRET));
    let shown = format!("{command:?}");
    assert!(!contains(&shown, SECRET), "{shown}");
    assert!(shown.contains("<21 bytes>"), "{shown}");
    assert_eq!(state.apply(&command), CommandResponse::Ok);
    let shown = format!("{state:?} {:#?}", state.secrets);
    assert!(!contains(&shown, SECRET), "{shown}");
    let files = TaskFiles {
        secrets: BTreeMap::from([("s1".to_string(), FileData::new(SECRET.to_vec()))]),
        configs: BTreeMap::new(),
    };
    let shown = format!("{files:?}");
    assert!(!contains(&shown, SECRET), "{shown}");
    // Nor as the bytes' numbers ([104, 117, ...]).
    assert!(!shown.contains("104, 117"), "{shown}");
}

#[test]
fn names_are_unique_per_kind_and_in_use_objects_stay() {
    let mut sim = Sim::new(1);
    sim.apply(&create(ObjectKind::Secret, object("s1", "db", SECRET)));
    let taken = sim
        .state
        .apply(&create(ObjectKind::Secret, object("s2", "db", b"other")));
    assert_eq!(rejected(taken), "secret db already exists");
    // A config of the same name is another object.
    sim.apply(&create(ObjectKind::Config, object("c1", "db", b"conf")));
    let empty = sim
        .state
        .apply(&create(ObjectKind::Secret, object("s3", "empty", b"")));
    assert!(rejected(empty).contains("larger than 0"));

    let mut spec = replicated("web", 1);
    spec.secrets = vec![reference("s1", "db")];
    sim.create("svc-web", spec.clone());
    spec.name = "api".into();
    sim.create("svc-api", spec);
    let refused = sim.state.apply(&remove(ObjectKind::Secret, "s1"));
    assert_eq!(
        rejected(refused),
        "secret 'db' is in use by the following services: api, web"
    );
    sim.apply(&Command::RemoveService {
        id: "svc-api".into(),
    });
    let refused = sim.state.apply(&remove(ObjectKind::Secret, "s1"));
    assert_eq!(
        rejected(refused),
        "secret 'db' is in use by the following service: web"
    );
    // Updated without it (as `--secret-rm db` does): no longer in use, as in Docker, although
    // the previous spec (the rollback's) still names it.
    sim.update("svc-web", |spec| spec.secrets.clear());
    sim.apply(&remove(ObjectKind::Secret, "s1"));
    assert!(sim.state.secrets.is_empty());
    let gone = sim.state.apply(&remove(ObjectKind::Secret, "s1"));
    assert_eq!(rejected(gone), "secret s1 not found");
    // The config of that name was never in use.
    sim.apply(&remove(ObjectKind::Config, "c1"));
}

#[test]
fn an_update_changes_the_labels_only_at_the_version_it_quotes() {
    let mut sim = Sim::new(1);
    sim.apply(&create(ObjectKind::Config, object("c1", "app", b"port=80")));
    let relabel = |labels: &[(&str, &str)], expected: Option<u64>, at_ms: u64| {
        Command::Objects(ObjectCommand::Update {
            kind: ObjectKind::Config,
            id: "c1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            expected_version: expected,
            at_ms,
        })
    };
    sim.apply(&relabel(&[("tier", "web")], Some(1), 50));
    let config = sim.state.configs["c1"].clone();
    assert_eq!(
        (config.version(), config.updated_at_ms, config.created_at_ms),
        (2, 50, 1)
    );
    assert_eq!(
        config.labels,
        BTreeMap::from([("tier".to_string(), "web".to_string())])
    );
    assert_eq!(config.data.as_bytes(), b"port=80");
    // Quoting version 1 again: another update came first; nothing changes.
    let before = sim.state.clone();
    assert_eq!(
        sim.state.apply(&relabel(&[], Some(1), 60)),
        CommandResponse::OutOfSequence
    );
    assert_eq!(sim.state, before);
    let empty_key = sim.state.apply(&relabel(&[("", "x")], None, 70));
    assert_eq!(rejected(empty_key), "a label's key is empty");
    // The secret of that ID does not exist: a kind is its own namespace.
    let secret = Command::Objects(ObjectCommand::Update {
        kind: ObjectKind::Secret,
        id: "c1".into(),
        labels: BTreeMap::new(),
        expected_version: None,
        at_ms: 80,
    });
    assert_eq!(rejected(sim.state.apply(&secret)), "secret c1 not found");
}

#[test]
fn a_reference_to_a_missing_object_is_refused_when_new_only() {
    let mut sim = Sim::new(1);
    let mut spec = replicated("web", 1);
    spec.configs = vec![reference("c1", "app.conf")];
    let refused = sim
        .state
        .apply(&Command::CreateService(new_service("svc", spec.clone(), 0)));
    assert_eq!(rejected(refused), "config not found: app.conf");
    assert!(sim.state.services.is_empty());

    sim.apply(&create(
        ObjectKind::Config,
        object("c1", "app.conf", b"x=1"),
    ));
    sim.create("svc", spec);
    // A reference by a stale name (the object of that ID is called otherwise) is refused too.
    let mut service = sim.service("svc").clone();
    service.spec.secrets = vec![reference("s9", "nope")];
    service.version += 1;
    let refused = sim.state.apply(&Command::UpdateService(service));
    assert_eq!(rejected(refused), "secret not found: nope");
    // The service keeps its own reference through writes that do not add any.
    let mut service = sim.service("svc").clone();
    service.version += 1;
    sim.apply(&Command::UpdateService(service));
}

#[test]
fn a_node_gets_the_files_of_its_own_starting_tasks_only() {
    let mut sim = Sim::new(2);
    sim.apply(&create(ObjectKind::Secret, object("s1", "db", SECRET)));
    sim.apply(&create(
        ObjectKind::Secret,
        object("s2", "unused", b"nobody's"),
    ));
    sim.apply(&create(
        ObjectKind::Config,
        object("c1", "app.conf", b"x=1"),
    ));
    let mut db = replicated("db", 1);
    db.constraints = vec![parse_constraint("node.hostname==n2").unwrap()];
    db.secrets = vec![reference("s1", "db")];
    db.configs = vec![reference("c1", "app.conf")];
    sim.create("svc-db", db);
    let mut web = replicated("web", 1);
    web.constraints = vec![parse_constraint("node.hostname==n1").unwrap()];
    web.configs = vec![reference("c1", "app.conf")];
    sim.create("svc-web", web);
    sim.pass();

    let assigned = |sim: &Sim, node: &str| -> Vec<Task> {
        sim.state
            .tasks
            .values()
            .filter(|t| t.node_id == node)
            .cloned()
            .collect()
    };
    let n1 = TaskFiles::for_tasks(&sim.state, &assigned(&sim, "n1"));
    assert!(
        n1.secrets.is_empty(),
        "n1 runs nothing with a secret: {n1:?}"
    );
    assert_eq!(n1.configs.keys().collect::<Vec<_>>(), ["c1"]);
    let n2 = TaskFiles::for_tasks(&sim.state, &assigned(&sim, "n2"));
    assert_eq!(n2.secrets.keys().collect::<Vec<_>>(), ["s1"]);
    assert_eq!(n2.get(ObjectKind::Secret, "s1").unwrap().as_bytes(), SECRET);
    assert_eq!(n2.get(ObjectKind::Config, "c1").unwrap().as_bytes(), b"x=1");

    // Once its tasks run, a node is sent nothing more.
    sim.nodes_act();
    assert_eq!(
        TaskFiles::for_tasks(&sim.state, &assigned(&sim, "n2")),
        TaskFiles::default()
    );
}

#[test]
fn targets_resolve_under_their_kinds_directory() {
    let mut r = reference("s1", "db");
    assert_eq!(r.path(ObjectKind::Secret), "/run/secrets/db");
    assert_eq!(r.path(ObjectKind::Config), "/db");
    r.target = "sub/key.pem".into();
    assert_eq!(r.path(ObjectKind::Secret), "/run/secrets/sub/key.pem");
    r.target = "/etc/app/key.pem".into();
    assert_eq!(r.path(ObjectKind::Secret), "/etc/app/key.pem");
    assert!(validate_references(&[r.clone()], &[]).is_ok());
    let mut config = reference("c1", "db");
    config.target = "/etc/app/key.pem".into();
    assert_eq!(
        validate_references(&[r], &[config]),
        Err(
            "secret and config references 'db' and 'db' have a conflicting target: \
             '/etc/app/key.pem'"
                .to_string()
        )
    );
}
