//! `ContainerSpec.Image` names a program, not an image: an absolute path, or a name found on
//! the PATH. A registry reference (`nginx:alpine`, `docker.io/library/nginx`) gets one clear
//! error instead of a task that fails on every node.

use crate::engine::errors::ApiError;

/// Docker's default PATH, which tasks get when the service sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Checks the program a spec's `Image` names, on this node: an absolute path is taken as it
/// is (the task's node runs it), a bare name must be found on `path` (the service's `PATH`,
/// else Docker's default).
pub fn check(image: &str, path: Option<&str>) -> Result<(), ApiError> {
    if image.starts_with('/') {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(ApiError::bad_request(format!(
            "image \"{image}\" {why}: shoal runs programs, not images; give ContainerSpec.Image \
             as an absolute path (/usr/local/bin/shoal) or the name of a program on the node's \
             PATH"
        )))
    };
    if image.contains(['/', ':', '@']) {
        return refuse("is not a program");
    }
    let found = path
        .unwrap_or(DEFAULT_PATH)
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| std::path::Path::new(dir).join(image))
        .any(|p| {
            use std::os::unix::fs::PermissionsExt as _;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    if found {
        Ok(())
    } else {
        refuse("names no program on this node's PATH")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_pass_and_image_references_do_not() {
        assert!(check("/usr/local/bin/shoal", None).is_ok());
        assert!(check("sh", Some("/bin:/usr/bin")).is_ok());
        let e = check("nginx:alpine", None).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(
            e.message
                .starts_with("image \"nginx:alpine\" is not a program"),
            "{}",
            e.message
        );
        assert!(check("docker.io/library/nginx", None).is_err());
        assert!(
            check("no-such-program-x", None)
                .unwrap_err()
                .message
                .contains("names no program on this node's PATH")
        );
    }
}
