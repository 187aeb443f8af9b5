//! What a user sees: errors are one line naming the file, the line where known, and the key;
//! `.env` fills what the environment lacks; warnings read as Docker's.

use std::{collections::HashMap, path::PathBuf};

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn load(files: &[PathBuf], env: &[(&str, &str)]) -> Result<shoal_compose::Loaded, String> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    shoal_compose::load(files, &env).map_err(|e| e.to_string())
}

#[test]
fn type_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "stack.yml",
        "services:\n  api:\n    command: [run]\n    deploy:\n      replicas: many\n",
    );
    let error = load(std::slice::from_ref(&file), &[]).unwrap_err();
    assert_eq!(
        error,
        format!(
            "{}:5:7: services.api.deploy.replicas: must be an integer, found a string",
            file.display()
        )
    );
}

#[test]
fn an_image_alone_is_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = write(dir.path(), "a.yml", "services:\n  web:\n    image: nginx\n");
    let over = write(dir.path(), "b.yml", "services:\n  web:\n    hostname: w\n");
    let error = load(&[base, over.clone()], &[]).unwrap_err();
    assert!(!error.contains('\n'), "{error}");
    assert!(
        error.starts_with(&format!("{}:2:3: services.web: ", over.display())),
        "{error}"
    );
    assert!(error.contains("programs, not images"), "{error}");
}

#[test]
fn missing_required_variable_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "stack.yml",
        "services:\n  web:\n    command: [run, \"${TOKEN:?set TOKEN}\"]\n",
    );
    let error = load(&[file], &[]).unwrap_err();
    assert!(
        error.ends_with(
            "services.web.command[1]: required variable TOKEN is missing a value: set TOKEN"
        ),
        "{error}"
    );
}

#[test]
fn dotenv_fills_what_the_environment_lacks() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), ".env", "TAG=\"1.2\"\nLEVEL=debug\n");
    let file = write(
        dir.path(),
        "stack.yml",
        "services:\n  web:\n    image: app:${TAG}\n    command: [run, $LEVEL]\n",
    );
    let loaded = load(&[file], &[("LEVEL", "info")]).expect("loads");
    let web = &loaded.stack.services["web"];
    assert_eq!(web.image.as_deref(), Some("app:1.2"));
    assert_eq!(web.program(), ["run", "info"]);
}

#[test]
fn warnings_read_as_docker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "stack.yml",
        "services:\n  web:\n    command: [run]\n    links: [db]\n    build: .\n    ports: [\"127.0.0.1:80:80\"]\n",
    );
    let loaded = load(&[file], &[]).expect("loads");
    assert_eq!(
        loaded.warnings[0],
        "Ignoring unsupported options: build, links"
    );
    assert!(loaded.warnings[1].contains("ignoring IP address 127.0.0.1"));
}

#[test]
fn no_files_is_an_error() {
    assert_eq!(load(&[], &[]).unwrap_err(), "no compose file given");
}
