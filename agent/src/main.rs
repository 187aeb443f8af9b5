//! `shoal`: the node agent (`shoal agent`) and the docker-compatible CLI that talks to it.
//!
//! # Layout
//! - `cli`: the command line (clap): every command's flags, value parsers, one-line parse errors.
//! - `client`: connecting the CLI to an agent's API (`-H`, `SHOAL_HOST`).
//! - `commands`: the CLI commands that call the API, and what they print.
//! - `daemon`: `shoal agent`: config, state dir, data path, local API, shutdown.
//! - `duration`: durations as Docker's CLI writes them (`500ms`, `1m30s`).
//! - `engine`: the Docker Engine API's Swarm subset on `docker.sock`, for the docker CLI.
//! - `executor`: the exec driver: tasks as processes in their own namespaces.
//! - `logging`: the one place that configures tracing.
//! - `networking`: overlay networks on this node: sandboxes, gateway, gossiped endpoints.
//! - `publish`: `--publish` values (short and long form) and `--publish-rm`.
//! - `table`: Docker-style tables.
//! - `time_format`: timestamps and ages as Docker shows them (RFC 3339, "5 seconds ago").
//! - `unix_socket`: binding the agent's unix sockets with their mode.
//! - `volumes`: this node's named volumes (Docker's `local` driver).
//! - `whoami`: the built-in demo workload.

mod build_info;
mod cli;
mod client;
mod commands;
mod daemon;
mod duration;
mod engine;
mod executor;
mod logging;
mod networking;
mod publish;
mod table;
mod time_format;
mod unix_socket;
mod volumes;
mod whoami;

use std::process::ExitCode;

use clap::Parser as _;
use shoal_control::error_chain::Chain;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_parse_error(e),
    };
    if let cli::Command::Exec(args) = cli.command {
        return commands::exec::run(&cli.host, args).unwrap_or_else(|e| {
            eprintln!("error: {}", Chain(e.as_ref()));
            ExitCode::FAILURE
        });
    }
    let result = match cli.command {
        cli::Command::Agent(args) => daemon::run(*args),
        cli::Command::Info(args) => commands::info::run(&cli.host, args),
        cli::Command::Version(args) => commands::version::run(&cli.host, args),
        cli::Command::Whoami(args) => whoami::run(args),
        cli::Command::Swarm(command) => commands::swarm::run(&cli.host, command),
        cli::Command::Node(command) => commands::node::run(&cli.host, command),
        cli::Command::Service(command) => commands::service::run(&cli.host, *command),
        cli::Command::Exec(_) => Ok(()),
        cli::Command::Network(command) => commands::network::run(&cli.host, command),
        cli::Command::Volume(command) => commands::volume::run(&cli.host, command),
        cli::Command::Secret(command) => commands::objects::run_secret(&cli.host, command),
        cli::Command::Config(command) => commands::objects::run_config(&cli.host, command),
        cli::Command::Stack(command) => commands::stack::run(&cli.host, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain on one line: "doing X: because Y".
            eprintln!("error: {}", Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
