//! `shoal`: the node agent (`shoal agent`) and the docker-compatible CLI that talks to it.
//!
//! # Layout
//! - `cli`: the command line (clap), and turning parse errors into one line.
//! - `daemon`: `shoal agent`: config, state dir, data path, local API, shutdown.
//! - `client`: connecting to an agent's API (`-H`, `SHOAL_HOST`).
//! - `commands`: one module per CLI command that calls the API.
//! - `executor`: the exec driver: tasks as processes in their own namespaces.
//! - `whoami`: the built-in demo workload.
//! - `table`, `duration`, `time_format`: Docker-style tables, durations and timestamps.
//! - `logging`: the one place that configures tracing.

mod cli;
mod client;
mod commands;
mod daemon;
mod duration;
#[allow(
    dead_code,
    reason = "log_paths, exec_command and pid serve `service logs` and `shoal exec`, not wired yet"
)]
mod executor;
mod logging;
mod table;
mod time_format;
mod whoami;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_parse_error(e),
    };
    let result = match cli.command {
        cli::Command::Agent(args) => daemon::run(*args),
        cli::Command::Info(args) => commands::info::run(&cli.host, args),
        cli::Command::Whoami(args) => whoami::run(args),
        cli::Command::Swarm(command) => commands::swarm::run(&cli.host, command),
        cli::Command::Node(command) => commands::node::run(&cli.host, command),
        cli::Command::Service(command) => commands::service::run(&cli.host, *command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` puts the whole context chain on one line: "doing X: because Y".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
