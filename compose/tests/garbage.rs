//! The reader never panics: truncated files, flipped bytes and random YAML-ish text all end
//! in `Ok` or in an error, and every error prints as one line.

use std::{collections::HashMap, path::PathBuf};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes that matter to YAML and to interpolation, and one that is not UTF-8.
const ALPHABET: &[u8] = b" :-[]{}\n$#&*!|>'\"0a,?\t\xff";

/// Every `.yml` of the examples and the corpus.
fn seeds() -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("../examples"), root.join("tests/corpus")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("readable entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yml") {
                files.push(std::fs::read(&path).expect("readable file"));
            }
        }
    }
    assert!(files.len() > 20, "found only {} seed files", files.len());
    files
}

/// Loads `bytes` as a one-file stack; panics only if the reader does.
fn load(dir: &std::path::Path, bytes: &[u8], env: &HashMap<String, String>) {
    let file = dir.join("stack.yml");
    std::fs::write(&file, bytes).expect("write");
    if let Err(error) = shoal_compose::load(&[file], env) {
        let text = error.to_string();
        assert!(!text.contains('\n'), "multi-line error: {text:?}");
    }
}

#[test]
fn truncated_and_mutated_files_do_not_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env: HashMap<String, String> = [("HOME", "/root"), ("N", "3"), ("X", "${Y}")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut rng = Rng(0x5eed_cafe);
    for seed in seeds() {
        for cut in (0..seed.len()).step_by(7) {
            load(dir.path(), &seed[..cut], &env);
        }
        for _ in 0..40 {
            let mut bytes = seed.clone();
            for _ in 0..=rng.below(4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len());
                bytes[at] = ALPHABET[rng.below(ALPHABET.len())];
            }
            load(dir.path(), &bytes, &env);
        }
    }
}

#[test]
fn random_yaml_does_not_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = HashMap::new();
    let words = [
        "services",
        "web",
        "image",
        "command",
        "ports",
        "deploy",
        "replicas",
        "networks",
        "volumes",
        "secrets",
        "configs",
        "external",
        "target",
        "published",
        "mode",
        "- ",
        ": ",
        "\n",
        "\n  ",
        "\n    ",
        "[",
        "]",
        "{",
        "}",
        ",",
        "${A}",
        "$$",
        "80:80",
        "null",
        "true",
        "-1",
        "1.5",
        "\"",
        "'",
        "&a ",
        "*a",
        "<<: ",
        "!!str ",
        "~",
        "x-",
        "environment",
        "healthcheck",
        "test",
        "version",
        "3.8",
        "aliases",
        "tmpfs",
        "size",
        "type",
    ];
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..rng.below(60) {
            text.push_str(words[rng.below(words.len())]);
        }
        load(dir.path(), text.as_bytes(), &env);
    }
}
