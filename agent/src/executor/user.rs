//! `--user USER[:GROUP]`: who a task's process runs as, resolved on the node from its
//! /etc/passwd and /etc/group as runc's `user.GetExecUser` does for Docker: a name must be
//! found, a number need not be; an explicit group replaces the user's primary group and then
//! no supplementary groups are added, else the groups that list the user as a member are.

use std::{fs, io, path::Path};

/// Where runc (and so Docker) reads users and groups: the task's view, which is the node's.
const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// runc's bounds on IDs.
const MAX_ID: u64 = (1 << 31) - 1;

/// The credentials a task's process gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (setgroups(2)).
    pub groups: Vec<u32>,
    /// HOME, unless the service sets one: the user's home, `/` for an ID with no entry.
    pub home: String,
}

/// Why a `--user` cannot be run as here, in runc's words.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("uids and gids must be in range 0-{MAX_ID}")]
    Range,
    #[error("reading {path}")]
    Read {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Resolves `spec` (`USER[:GROUP]`, not empty) against this node's files; a missing file is
/// an empty one, as in runc.
pub fn resolve_on_node(spec: &str) -> Result<ExecUser, UserError> {
    let read = |path: &'static str| match fs::read_to_string(Path::new(path)) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UserError::Read { path, source }),
    };
    resolve(spec, read(PASSWD)?.as_deref(), read(GROUP)?.as_deref())
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// `name:password:uid:gid:gecos:home:shell` lines; comments and lines that do not parse are
/// skipped.
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: fields.first()?,
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
                home: fields.get(5).copied().unwrap_or(""),
            })
        })
}

/// `name:password:gid:member,member` lines.
fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: fields.first()?,
                gid: fields.get(2)?.parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
                    .unwrap_or_default(),
            })
        })
}

fn numeric(text: &str) -> Option<Result<u32, UserError>> {
    let n: u64 = text.parse().ok()?;
    Some(
        u32::try_from(n)
            .ok()
            .filter(|n| u64::from(*n) <= MAX_ID)
            .ok_or(UserError::Range),
    )
}

/// runc's `GetExecUser(spec, defaults {0, 0, home "/"}, passwd, group)`.
pub fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, UserError> {
    let (user_arg, group_arg) = spec.split_once(':').unwrap_or((spec, ""));
    let mut user = ExecUser {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        home: "/".to_owned(),
    };
    let user_number = numeric(user_arg).transpose()?;
    let found = passwd.and_then(|text| {
        passwd_entries(text).find(|e| match user_number {
            _ if user_arg.is_empty() => e.uid == 0,
            Some(uid) => e.uid == uid,
            None => e.name == user_arg,
        })
    });
    let matched_name = match found {
        Some(entry) => {
            user.uid = entry.uid;
            user.gid = entry.gid;
            user.home = entry.home.to_owned();
            Some(entry.name)
        }
        None if user_arg.is_empty() => None,
        None => {
            user.uid = user_number.ok_or_else(|| UserError::NoUser(user_arg.to_owned()))?;
            None
        }
    };
    if !group_arg.is_empty() {
        let group_number = numeric(group_arg).transpose()?;
        let found = group.and_then(|text| {
            group_entries(text).find(|g| match group_number {
                Some(gid) => g.gid == gid,
                None => g.name == group_arg,
            })
        });
        user.gid = match found {
            Some(g) => g.gid,
            None => group_number.ok_or_else(|| UserError::NoGroup(group_arg.to_owned()))?,
        };
    } else if let (Some(name), Some(text)) = (matched_name, group) {
        user.groups = group_entries(text)
            .filter(|g| g.members.contains(&name))
            .map(|g| g.gid)
            .collect();
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
app:x:1000:1000:App,,,:/home/app:/bin/sh
broken line
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
adm:x:4:app,syslog
staff:x:50:app
nogroup:x:65534:
app:x:1000:
";

    fn user(spec: &str) -> ExecUser {
        resolve(spec, Some(PASSWD), Some(GROUP)).unwrap()
    }

    fn ids(u: &ExecUser) -> (u32, u32, Vec<u32>, &str) {
        (u.uid, u.gid, u.groups.clone(), u.home.as_str())
    }

    #[test]
    fn users_and_groups_resolve_as_runc_resolves_them() {
        // A name: its IDs, home and the groups that list it.
        assert_eq!(ids(&user("app")), (1000, 1000, vec![4, 50], "/home/app"));
        // A number with an entry: the same.
        assert_eq!(ids(&user("1000")), (1000, 1000, vec![4, 50], "/home/app"));
        // An explicit group replaces the primary group, and adds no supplementary ones.
        assert_eq!(ids(&user("app:staff")), (1000, 50, vec![], "/home/app"));
        assert_eq!(ids(&user("app:4242")), (1000, 4242, vec![], "/home/app"));
        // A number without an entry: gid 0, home /.
        assert_eq!(ids(&user("4321")), (4321, 0, vec![], "/"));
        assert_eq!(ids(&user("4321:65534")), (4321, 65534, vec![], "/"));
        assert_eq!(
            ids(&user("nobody:nogroup")),
            (65534, 65534, vec![], "/nonexistent")
        );
        // No user, a group: root with that group.
        assert_eq!(ids(&user(":adm")), (0, 4, vec![], "/root"));
        // No files at all: numbers still work.
        let bare = resolve("7:8", None, None).unwrap();
        assert_eq!(ids(&bare), (7, 8, vec![], "/"));
    }

    #[test]
    fn unknown_names_and_bad_numbers_are_refused_in_runcs_words() {
        let err = |spec: &str| {
            resolve(spec, Some(PASSWD), Some(GROUP))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("ghost"),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            err("app:ghosts"),
            "unable to find group ghosts: no matching entries in group file"
        );
        assert_eq!(
            err("4294967296"),
            "uids and gids must be in range 0-2147483647"
        );
        assert_eq!(
            err("2147483648"),
            "uids and gids must be in range 0-2147483647"
        );
        assert!(resolve("ghost", None, None).is_err());
    }
}
