//! The `shoal secret` and `shoal config` command lines, as Docker's `docker secret` and
//! `docker config` spell them, and the `--secret` / `--config` values of `service create` and
//! `service update`.

use clap::{Args, Subcommand};
use shoal_control::api::FileReference;

use super::{format::OutputFormat, parse::parse_label};

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret from a file or STDIN (`-`) as content.
    Create(ObjectCreateArgs),
    /// List secrets.
    #[command(alias = "list")]
    Ls(ObjectLsArgs),
    /// Display detailed information on one or more secrets (never their data).
    Inspect(ObjectInspectArgs),
    /// Remove one or more secrets (not while a service uses them).
    #[command(alias = "remove")]
    Rm(ObjectNamesArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Create a config from a file or STDIN (`-`) as content.
    Create(ObjectCreateArgs),
    /// List configs.
    #[command(alias = "list")]
    Ls(ObjectLsArgs),
    /// Display detailed information on one or more configs.
    Inspect(ObjectInspectArgs),
    /// Remove one or more configs (not while a service uses them).
    #[command(alias = "remove")]
    Rm(ObjectNamesArgs),
}

#[derive(Args, Debug)]
pub struct ObjectCreateArgs {
    /// Labels: key=value (repeatable).
    #[arg(short, long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The name: [a-zA-Z0-9] at both ends, [a-zA-Z0-9-_.] between, at most 64 characters.
    pub name: String,
    /// The file to read the content from; `-`: STDIN.
    #[arg(value_name = "FILE|-")]
    pub file: String,
}

#[derive(Args, Debug)]
pub struct ObjectLsArgs {
    /// Only display IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter: id=PREFIX, name=PREFIX, label=KEY[=VALUE] (repeatable; ids and names match if
    /// any does, labels must all hold).
    #[arg(short, long = "filter", value_name = "KEY=VALUE", value_parser = parse_object_filter)]
    pub filters: Vec<ObjectFilter>,
    /// Output format: a table, or JSON (one object per line, as Docker's).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Docker's `secret ls --filter` and `config ls --filter` keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectFilter {
    /// An ID prefix.
    Id(String),
    /// A name prefix.
    Name(String),
    Label {
        key: String,
        value: Option<String>,
    },
}

fn parse_object_filter(s: &str) -> Result<ObjectFilter, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("bad format of filter (expected name=value): {s}"))?;
    match key {
        "id" => Ok(ObjectFilter::Id(value.to_string())),
        "name" => Ok(ObjectFilter::Name(value.to_string())),
        "label" => Ok(match value.split_once('=') {
            Some((key, value)) => ObjectFilter::Label {
                key: key.to_string(),
                value: Some(value.to_string()),
            },
            None => ObjectFilter::Label {
                key: value.to_string(),
                value: None,
            },
        }),
        other => Err(format!("invalid filter '{other}'")),
    }
}

#[derive(Args, Debug)]
pub struct ObjectInspectArgs {
    /// Print the information in a human friendly format.
    #[arg(long)]
    pub pretty: bool,
    /// Names or IDs.
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ObjectNamesArgs {
    /// Names or IDs.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Docker's `--secret` and `--config`: `NAME` alone, or comma-separated `source=` (`src=`),
/// `target=`, `uid=`, `gid=`, `mode=` fields. The mode is read as Go's `ParseUint(v, 0, 32)`
/// reads it, as Docker does: `0400` is octal, `0x100` hex, `256` decimal.
pub(super) fn parse_file_reference(s: &str, what: &str) -> Result<FileReference, String> {
    if !s.contains('=') && !s.contains(',') {
        return Ok(FileReference {
            name: s.to_string(),
            ..Default::default()
        });
    }
    let mut reference = FileReference::default();
    for field in s.split(',') {
        let Some((key, value)) = field.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(format!("invalid field '{field}' must be a key=value pair"));
        };
        let number = |value: &str| -> Result<u32, String> {
            value
                .parse()
                .map_err(|_| format!("invalid {key} {value:?}: a number is needed"))
        };
        match key.to_ascii_lowercase().as_str() {
            "source" | "src" => reference.name = value.to_string(),
            "target" => reference.target = value.to_string(),
            "uid" => reference.uid = number(value)?,
            "gid" => reference.gid = number(value)?,
            "mode" => {
                reference.mode = Some(
                    parse_go_uint(value)
                        .ok_or_else(|| format!("invalid mode specified: {value:?}"))?,
                );
            }
            other => return Err(format!("invalid field in {what} request: {other}")),
        }
    }
    if reference.name.is_empty() {
        return Err("source is required".to_string());
    }
    Ok(reference)
}

/// Go's `strconv.ParseUint(s, 0, 32)`: `0x`/`0o`/`0b` prefixes, a leading `0` for octal.
fn parse_go_uint(s: &str) -> Option<u32> {
    let s = s.replace('_', "");
    let (digits, radix) = match s.get(..2) {
        Some("0x" | "0X") => (&s[2..], 16),
        Some("0o" | "0O") => (&s[2..], 8),
        Some("0b" | "0B") => (&s[2..], 2),
        _ if s.len() > 1 && s.starts_with('0') => (&s[1..], 8),
        _ => (s.as_str(), 10),
    };
    u32::from_str_radix(digits, radix).ok()
}

pub(super) fn parse_secret(s: &str) -> Result<FileReference, String> {
    parse_file_reference(s, "secret")
}

pub(super) fn parse_config(s: &str) -> Result<FileReference, String> {
    parse_file_reference(s, "config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_as_dockers_cli_reads_them() {
        assert_eq!(
            parse_secret("db"),
            Ok(FileReference {
                name: "db".into(),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_secret("source=db,target=app/db.pw,uid=33,gid=34,mode=0400"),
            Ok(FileReference {
                name: "db".into(),
                target: "app/db.pw".into(),
                uid: 33,
                gid: 34,
                mode: Some(0o400),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_config("src=app,mode=0x1a4").unwrap().mode,
            Some(0o644)
        );
        // As Go reads it: no leading 0, decimal.
        assert_eq!(parse_config("src=app,mode=292").unwrap().mode, Some(0o444));
        assert_eq!(parse_secret("target=x"), Err("source is required".into()));
        assert_eq!(
            parse_secret("src=db,owner=me"),
            Err("invalid field in secret request: owner".into())
        );
        assert_eq!(
            parse_config("src=db,tgt"),
            Err("invalid field 'tgt' must be a key=value pair".into())
        );
        assert!(parse_secret("src=db,mode=rw").is_err());
        assert!(parse_secret("src=db,uid=-1").is_err());
    }

    #[test]
    fn filters_are_dockers() {
        assert_eq!(
            parse_object_filter("name=db"),
            Ok(ObjectFilter::Name("db".into()))
        );
        assert_eq!(
            parse_object_filter("label=env"),
            Ok(ObjectFilter::Label {
                key: "env".into(),
                value: None
            })
        );
        assert_eq!(
            parse_object_filter("driver=x"),
            Err("invalid filter 'driver'".into())
        );
        assert!(parse_object_filter("name").is_err());
    }
}
