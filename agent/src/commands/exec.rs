//! `shoal exec TASK -- COMMAND...`: runs a command inside a task's namespaces on whichever node
//! runs it, streams its output, and exits with its exit code.

use std::{io::Write as _, process::ExitCode};

use shoal_control::api::ExecRequest;
use shoal_control::wire_limits::cluster_client;

use crate::{
    cli::ExecArgs,
    client::{status_error, with_agent},
};

pub fn run(host: &str, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let code = with_agent(host, async |channel| {
        let request = ExecRequest {
            task: args.task,
            command: args.command,
        };
        let mut output = cluster_client(channel)
            .exec(request)
            .await
            .map_err(status_error)?
            .into_inner();
        let mut code = None;
        while let Some(chunk) = output.message().await.map_err(status_error)? {
            match chunk.stream.as_str() {
                "stdout" => std::io::stdout().write_all(&chunk.data)?,
                "stderr" => std::io::stderr().write_all(&chunk.data)?,
                _ => code = Some(chunk.exit_code),
            }
        }
        std::io::stdout().flush()?;
        code.ok_or_else(|| anyhow::anyhow!("the command's exit status was lost"))
    })?;
    // Exit codes beyond 255 cannot be returned; clamp as a shell would.
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}
