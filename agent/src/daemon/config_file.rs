//! `shoal agent --config FILE`: agent flags from a TOML file, under the environment and the
//! command line.
//!
//! Each key is a flag's long name (`state-dir = "/var/lib/shoal"`, `dns = ["192.0.2.53"]`,
//! `data-path-port = 4789`). Precedence: the command line, then the environment (`SHOAL_*`,
//! clap's `env`), then the file, then the defaults. The file is read through clap's own
//! definition of `shoal agent`, so every agent flag (also ones added later) is a key with
//! nothing to keep in step here: a key is applied only to flags whose value came from a
//! default, by adding it to the command line and parsing again, so values are checked by the
//! same parsers as on the command line.

use std::{ffi::OsString, path::Path};

use anyhow::{anyhow, bail};
use clap::{ArgAction, ArgMatches, CommandFactory as _, Parser as _, parser::ValueSource};

use crate::cli::{AgentArgs, Cli, Command};

/// Flags that choose what `shoal agent` does rather than how it runs: never from the file.
const NOT_IN_FILE: [&str; 4] = ["config", "cleanup", "purge", "help"];

/// The agent's flags with the file named by `--config` (or `SHOAL_CONFIG`) applied under the
/// environment and the command line. Without a file, `args` as they are.
pub fn apply(args: AgentArgs) -> anyhow::Result<AgentArgs> {
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let argv: Vec<OsString> = std::env::args_os().collect();
    apply_to(&argv, &path)
}

/// [`apply`] for a given command line (`argv[0]` included), which must hold `shoal agent`.
fn apply_to(argv: &[OsString], path: &Path) -> anyhow::Result<AgentArgs> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("reading config file {}: {e}", path.display()))?;
    let table = parse(&text, path)?;
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| anyhow!("{}", first_line(&e)))?;
    let agent = agent_matches(&matches)?;
    let extra = file_args(&table, agent, path)?;
    let mut full = argv.to_vec();
    full.extend(extra);
    match Cli::try_parse_from(&full) {
        Ok(Cli {
            command: Command::Agent(args),
            ..
        }) => Ok(*args),
        Ok(_) => bail!("config file {}: not an agent command line", path.display()),
        Err(e) => bail!("config file {}: {}", path.display(), first_line(&e)),
    }
}

fn agent_matches(matches: &ArgMatches) -> anyhow::Result<&ArgMatches> {
    match matches.subcommand() {
        Some(("agent", agent)) => Ok(agent),
        _ => bail!("--config is a flag of `shoal agent`"),
    }
}

/// The file as a TOML table; a syntax error is one line with its line number.
fn parse(text: &str, path: &Path) -> anyhow::Result<toml::Table> {
    text.parse::<toml::Table>().map_err(|e| {
        let line = e
            .span()
            .and_then(|span| text.get(..span.start))
            .map(|before| before.matches('\n').count() + 1);
        let message = e.message().trim().replace('\n', " ");
        match line {
            Some(line) => anyhow!("config file {}:{line}: {message}", path.display()),
            None => anyhow!("config file {}: {message}", path.display()),
        }
    })
}

/// Command-line arguments for the file's keys whose flags were not given on the command line
/// or in the environment. Unknown keys and values of the wrong shape are errors naming the
/// key and the file; each value is checked by the flag's own parser.
fn file_args(
    table: &toml::Table,
    agent: &ArgMatches,
    path: &Path,
) -> anyhow::Result<Vec<OsString>> {
    let command = Cli::command();
    let agent_command = command
        .find_subcommand("agent")
        .ok_or_else(|| anyhow!("the CLI has no agent command"))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let key_error =
            |what: String| anyhow!("config file {}: key `{key}`: {what}", path.display());
        let settable = |name: &str| {
            agent_command
                .get_arguments()
                .find(|a| a.get_long() == Some(name) && !NOT_IN_FILE.contains(&name))
        };
        let Some(arg) = settable(key) else {
            let dashed = key.replace('_', "-");
            let hint = if dashed != *key && settable(&dashed).is_some() {
                format!("did you mean `{dashed}`?")
            } else {
                "keys are the long names of `shoal agent`'s flags, e.g. `state-dir`".to_string()
            };
            bail!(
                "config file {}: unknown key `{key}` ({hint})",
                path.display()
            );
        };
        let mut flag_args = Vec::new();
        match arg.get_action() {
            ArgAction::SetTrue => match value {
                toml::Value::Boolean(true) => flag_args.push(OsString::from(format!("--{key}"))),
                toml::Value::Boolean(false) => {}
                _ => return Err(key_error("must be true or false".into())),
            },
            ArgAction::Set => flag_args.push(OsString::from(format!(
                "--{key}={}",
                scalar(value).map_err(key_error)?
            ))),
            ArgAction::Append => {
                let values = match value {
                    toml::Value::Array(items) => {
                        items.iter().map(scalar).collect::<Result<Vec<_>, _>>()
                    }
                    other => scalar(other).map(|v| vec![v]),
                }
                .map_err(key_error)?;
                flag_args.extend(
                    values
                        .into_iter()
                        .map(|v| OsString::from(format!("--{key}={v}"))),
                );
            }
            _ => return Err(key_error("cannot be set in a config file".into())),
        }
        // Checked alone, so an error names this key (the flags' parsers are clap's).
        let mut check: Vec<OsString> = vec!["shoal".into(), "agent".into()];
        check.extend(flag_args.iter().cloned());
        if let Err(e) = Cli::command().try_get_matches_from(check) {
            return Err(key_error(first_line(&e)));
        }
        let given = matches!(
            agent.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !given {
            out.extend(flag_args);
        }
    }
    Ok(out)
}

/// A TOML scalar as a command-line value.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "must be a string, a number or a boolean, not {}",
            other.type_str()
        )),
    }
}

/// The first line of a clap error, without its `error: ` prefix.
fn first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let line = rendered.lines().next().unwrap_or("invalid arguments");
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], file: &str) -> anyhow::Result<AgentArgs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, file).expect("writing the file");
        let mut full: Vec<OsString> = ["shoal", "agent", "--config"]
            .iter()
            .map(OsString::from)
            .collect();
        full.push(path.clone().into_os_string());
        full.extend(argv.iter().map(OsString::from));
        apply_to(&full, &path).map_err(|e| {
            anyhow!(
                "{}",
                e.to_string().replace(&path.display().to_string(), "FILE")
            )
        })
    }

    #[test]
    fn the_file_sets_flags_the_command_line_did_not() {
        let args = run(
            &["--hostname", "from-cli"],
            "hostname = \"from-file\"\nstate-dir = \"/srv/shoal\"\ndata-path-port = 4790\n\
             dns = [\"192.0.2.53\", \"192.0.2.54:5353\"]\nxdp-mode = \"generic\"\n",
        )
        .expect("valid file");
        assert_eq!(args.hostname.as_deref(), Some("from-cli"));
        assert_eq!(args.state_dir, std::path::PathBuf::from("/srv/shoal"));
        assert_eq!(args.data_path_port, 4790);
        assert_eq!(args.dns.len(), 2);
        assert_eq!(args.xdp_mode, crate::cli::XdpModeArg::Generic);
        // Untouched flags keep their defaults.
        assert_eq!(args.gossip_port, 7946);
    }

    #[test]
    fn a_list_on_the_command_line_replaces_the_files() {
        let args = run(
            &["--dns", "198.51.100.1"],
            "dns = [\"192.0.2.53\", \"192.0.2.54\"]\n",
        )
        .expect("valid file");
        assert_eq!(args.dns, vec!["198.51.100.1:53".parse().expect("addr")]);
    }

    #[test]
    fn bad_files_are_one_line_naming_the_key_and_the_file() {
        for (file, want) in [
            ("bogus = 1\n", "config file FILE: unknown key `bogus`"),
            (
                "state_dir = \"/x\"\n",
                "unknown key `state_dir` (did you mean `state-dir`?)",
            ),
            ("cleanup = true\n", "unknown key `cleanup`"),
            (
                "data-path-port = 0\n",
                "config file FILE: key `data-path-port`: invalid value '0'",
            ),
            (
                "xdp-mode = \"turbo\"\n",
                "key `xdp-mode`: invalid value 'turbo'",
            ),
            (
                "hostname = { a = 1 }\n",
                "key `hostname`: must be a string, a number or a boolean",
            ),
            ("hostname = \n", "config file FILE:1:"),
            ("# a comment\n\nhostname = = 1\n", "config file FILE:3:"),
        ] {
            let err = run(&[], file).expect_err(file).to_string();
            assert!(err.contains(want), "{file:?}: {err:?} lacks {want:?}");
            assert_eq!(err.lines().count(), 1, "{err:?}");
        }
    }
}
