//! The `shoal volume` command line, as Docker's `docker volume` spells it. Volumes are this
//! node's: every command talks to the agent the CLI points at (`-H`).

use clap::{Args, Subcommand};

use super::{format::OutputFormat, parse::parse_label};

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume on this node (a name is generated if none is given).
    Create(VolumeCreateArgs),
    /// List this node's volumes.
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Show volumes in Docker's JSON shape.
    Inspect(VolumeNamesArgs),
    /// Remove volumes (not while a running task mounts them).
    #[command(alias = "remove")]
    Rm(VolumeRmArgs),
}

#[derive(Args, Debug)]
pub struct VolumeCreateArgs {
    /// Volume driver: local (a directory of this node).
    #[arg(short, long, default_value = "local", value_parser = ["local"])]
    pub driver: String,
    /// Set metadata on the volume: key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The volume's name: [a-zA-Z0-9][a-zA-Z0-9_.-]+.
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeLsArgs {
    /// Only print volume names.
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter: dangling=true|false, driver=local, label=KEY[=VALUE], name=PART (repeatable;
    /// all must hold).
    #[arg(short, long = "filter", value_name = "KEY=VALUE", value_parser = parse_volume_filter)]
    pub filters: Vec<VolumeFilter>,
    /// Output format: a table, or JSON (one object per volume, per line, as Docker's).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Docker's `volume ls --filter` keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeFilter {
    /// Used by no running task (true), or used (false).
    Dangling(bool),
    Driver(String),
    Label {
        key: String,
        value: Option<String>,
    },
    /// A part of the name.
    Name(String),
}

fn parse_volume_filter(s: &str) -> Result<VolumeFilter, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("bad format of filter {s:?}: expected KEY=VALUE"))?;
    match key {
        "dangling" => match value {
            "true" | "1" => Ok(VolumeFilter::Dangling(true)),
            "false" | "0" => Ok(VolumeFilter::Dangling(false)),
            _ => Err(format!(
                "invalid filter 'dangling={value}': expected true or false"
            )),
        },
        "driver" => Ok(VolumeFilter::Driver(value.to_string())),
        "label" => Ok(match value.split_once('=') {
            Some((key, value)) => VolumeFilter::Label {
                key: key.to_string(),
                value: Some(value.to_string()),
            },
            None => VolumeFilter::Label {
                key: value.to_string(),
                value: None,
            },
        }),
        "name" => Ok(VolumeFilter::Name(value.to_string())),
        other => Err(format!(
            "invalid filter '{other}': expected dangling, driver, label or name"
        )),
    }
}

#[derive(Args, Debug)]
pub struct VolumeNamesArgs {
    /// Volume names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumeRmArgs {
    /// Do not fail on volumes that do not exist (volumes in use are still refused).
    #[arg(short, long)]
    pub force: bool,
    /// Volume names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_dockers() {
        assert_eq!(
            parse_volume_filter("dangling=true"),
            Ok(VolumeFilter::Dangling(true))
        );
        assert_eq!(
            parse_volume_filter("label=env=prod"),
            Ok(VolumeFilter::Label {
                key: "env".into(),
                value: Some("prod".into())
            })
        );
        assert_eq!(
            parse_volume_filter("label=env"),
            Ok(VolumeFilter::Label {
                key: "env".into(),
                value: None
            })
        );
        assert!(parse_volume_filter("dangling=maybe").is_err());
        assert!(parse_volume_filter("size=3").is_err());
        assert!(parse_volume_filter("name").is_err());
    }
}
