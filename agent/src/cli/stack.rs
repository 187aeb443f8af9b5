//! The `shoal stack` command line, as Docker's `docker stack` spells it.

use std::path::PathBuf;

use clap::{ArgAction, Args, Subcommand};

use super::format::{FormatArgs, OutputFormat};

#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one, from compose files.
    #[command(alias = "up")]
    Deploy(StackDeployArgs),
    /// List stacks.
    #[command(alias = "list")]
    Ls(FormatArgs),
    /// List the services of a stack.
    Services(StackNameArgs),
    /// List the tasks of a stack.
    Ps(StackNameArgs),
    /// Remove stacks: their services, then their networks, configs and secrets.
    #[command(alias = "remove", alias = "down")]
    Rm(StackRmArgs),
}

#[derive(Args, Debug)]
pub struct StackDeployArgs {
    /// Compose file (repeatable: later files override earlier ones).
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub compose_files: Vec<PathBuf>,
    /// Remove services that are no longer in the files.
    #[arg(long)]
    pub prune: bool,
    /// Exit immediately instead of waiting for the services to converge (Docker's default);
    /// `--detach=false` waits.
    #[arg(short, long, default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub detach: bool,
    /// The stack's name: every object is named STACK_NAME.
    pub stack: String,
}

#[derive(Args, Debug)]
pub struct StackNameArgs {
    pub stack: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct StackRmArgs {
    #[arg(required = true)]
    pub stacks: Vec<String>,
}
