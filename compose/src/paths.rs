//! Relative paths in a Compose file (bind sources, `env_file`, secret and config files) are
//! resolved against the first file's directory, the way Go's `filepath.Join` does: lexically,
//! with `.` and `..` folded, so the result matches what `docker stack config` prints.

use std::path::{Path, PathBuf};

/// `path` if absolute, else `dir/path`, cleaned.
pub(crate) fn resolve(dir: &Path, path: &str) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        PathBuf::from(join_clean(dir, path))
    }
}

/// Go's `filepath.Join(dir, path)`: joined, then `Clean`ed.
pub(crate) fn join_clean(dir: &Path, path: &str) -> String {
    let joined = format!("{}/{path}", dir.display());
    clean(&joined)
}

/// Go's `filepath.Clean` for Unix paths.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        assert_eq!(join_clean(Path::new("/a/b"), "./c"), "/a/b/c");
        assert_eq!(join_clean(Path::new("/a/b"), "../c//d/"), "/a/c/d");
        assert_eq!(join_clean(Path::new("/a"), "../../.."), "/");
        assert_eq!(join_clean(Path::new("/a"), ""), "/a");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(
            resolve(Path::new("/w"), "/abs/./x"),
            PathBuf::from("/abs/./x")
        );
    }
}
