//! `shoal`: the node agent (`shoal agent`) and the docker-compatible CLI that talks to it.
//!
//! # Layout
//! - `cli`: the command line (clap), and turning parse errors into one line.
//! - `daemon`: `shoal agent`: config, state dir, data path, local API, shutdown.
//! - `client`: connecting to an agent's API (`-H`, `SHOAL_HOST`).
//! - `commands`: one module per CLI command that calls the API.
//! - `executor`: the exec driver: tasks as processes in their own namespaces.
//! - `networking`: overlay networks on this node: sandboxes, gateway, gossiped endpoints.
//! - `whoami`: the built-in demo workload.
//! - `table`, `duration`, `time_format`: Docker-style tables, durations and timestamps.
//! - `logging`: the one place that configures tracing.

mod cli;
mod client;
mod commands;
mod daemon;
mod duration;
mod executor;
mod logging;
mod networking;
mod publish;
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
    if let cli::Command::Exec(args) = cli.command {
        return commands::exec::run(&cli.host, args).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        });
    }
    let result = match cli.command {
        cli::Command::Agent(args) => daemon::run(*args),
        cli::Command::Info(args) => commands::info::run(&cli.host, args),
        cli::Command::Whoami(args) => whoami::run(args),
        cli::Command::Swarm(command) => commands::swarm::run(&cli.host, command),
        cli::Command::Node(command) => commands::node::run(&cli.host, command),
        cli::Command::Service(command) => commands::service::run(&cli.host, *command),
        cli::Command::Exec(_) => Ok(()),
        cli::Command::Network(command) => commands::network::run(&cli.host, command),
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
