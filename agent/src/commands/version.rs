//! `shoal version`: the client's and the agent's version, git commit and API version, in the
//! shape of `docker version`. The client part is printed even when no agent answers (then the
//! error follows and the exit status is 1, as Docker's).

use std::fmt::Write as _;

use serde_json::json;
use shoal_control::{
    api::{InfoRequest, InfoResponse},
    wire_limits::agent_client,
};

use crate::{
    build_info,
    cli::{OutputFormat, VersionArgs},
    client,
};

pub fn run(host: &str, args: VersionArgs) -> anyhow::Result<()> {
    let server = client::with_agent(host, async |channel| {
        agent_client(channel)
            .info(InfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(client::status_error)
    });
    match args.format {
        OutputFormat::Json => {
            let mut out = json!({ "Client": client_json() });
            if let Ok(info) = &server {
                out["Server"] = server_json(info);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Table => {
            print!("{}", client_table());
            if let Ok(info) = &server {
                print!("\n{}", server_table(info));
            }
        }
    }
    server.map(drop)
}

fn client_json() -> serde_json::Value {
    json!({
        "Version": build_info::VERSION,
        "ApiVersion": build_info::API_VERSION,
        "GitCommit": build_info::GIT_COMMIT,
        "Os": std::env::consts::OS,
        "Arch": build_info::go_arch(),
    })
}

fn server_json(info: &InfoResponse) -> serde_json::Value {
    json!({
        "Version": info.version,
        "ApiVersion": info.api_version,
        "MinAPIVersion": info.min_api_version,
        "GitCommit": info.git_commit,
        "NodeID": info.node_id,
    })
}

fn client_table() -> String {
    let mut out = String::from("Client:\n");
    let _ = writeln!(out, " Version:           {}", build_info::VERSION);
    let _ = writeln!(out, " API version:       {}", build_info::API_VERSION);
    let _ = writeln!(out, " Git commit:        {}", build_info::GIT_COMMIT);
    let _ = writeln!(out, " OS/Arch:           {}", build_info::os_arch());
    out
}

/// An agent older than the fields it shows says nothing of them: `-` then.
fn server_table(info: &InfoResponse) -> String {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("Server:\n Agent:\n");
    let _ = writeln!(out, "  Version:          {}", info.version);
    let _ = writeln!(
        out,
        "  API version:      {} (minimum version {})",
        or_dash(&info.api_version),
        or_dash(&info.min_api_version)
    );
    let _ = writeln!(out, "  Git commit:       {}", or_dash(&info.git_commit));
    let _ = writeln!(out, "  Node ID:          {}", info.node_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_part_shows_what_the_agent_said() {
        let info = InfoResponse {
            version: "0.1.0".into(),
            api_version: "1.1".into(),
            min_api_version: "1.0".into(),
            git_commit: "0123456789ab".into(),
            node_id: "n1".into(),
            ..Default::default()
        };
        let table = server_table(&info);
        assert!(table.contains("  Version:          0.1.0\n"), "{table}");
        assert!(
            table.contains("  API version:      1.1 (minimum version 1.0)\n"),
            "{table}"
        );
        assert!(
            table.contains("  Git commit:       0123456789ab\n"),
            "{table}"
        );
        // An older agent that does not send them.
        let old = server_table(&InfoResponse {
            version: "0.0.9".into(),
            ..Default::default()
        });
        assert!(
            old.contains("API version:      - (minimum version -)"),
            "{old}"
        );
        assert_eq!(server_json(&info)["ApiVersion"], "1.1");
    }

    #[test]
    fn the_client_part_is_this_binary() {
        let table = client_table();
        assert!(table.contains(&format!(" Version:           {}\n", build_info::VERSION)));
        assert!(table.contains(&format!(" Git commit:        {}\n", build_info::GIT_COMMIT)));
        assert_eq!(client_json()["ApiVersion"], build_info::API_VERSION);
    }
}
