//! `shoal swarm init | join | join-token | leave | update | unlock | unlock-key | ca`, printing
//! what Docker prints.

use std::{
    io::{BufRead as _, IsTerminal as _, Write as _},
    time::Duration,
};

use anyhow::Context as _;
use shoal_control::api::{
    Empty, InitRequest, JoinSwarmRequest, JoinTokenRequest, LeaveRequest, RootCaRequest,
    RootCaResponse, UnlockKeyRequest, UnlockRequest, UpdateSwarmRequest,
};
use shoal_control::pki::{self, DOCKER_MIN_NODE_CERT_EXPIRY};
use shoal_control::wire_limits::{agent_client, cluster_client};

use crate::{
    cli::{
        JoinTokenArgs, LeaveArgs, SwarmCaArgs, SwarmCommand, SwarmInitArgs, SwarmJoinArgs,
        SwarmUpdateArgs, UnlockKeyArgs,
    },
    client::{status_error, with_agent},
};

/// How often `swarm ca --rotate` asks how far the rotation has come.
const ROTATION_POLL: Duration = Duration::from_millis(500);

pub fn run(host: &str, command: SwarmCommand) -> anyhow::Result<()> {
    match command {
        SwarmCommand::Init(args) => init(host, args),
        SwarmCommand::Join(args) => join(host, args),
        SwarmCommand::JoinToken(args) => join_token(host, args),
        SwarmCommand::Leave(args) => leave(host, args),
        SwarmCommand::Update(args) => update(host, args),
        SwarmCommand::Unlock => unlock(host),
        SwarmCommand::UnlockKey(args) => unlock_key(host, args),
        SwarmCommand::Ca(args) => ca(host, args),
    }
}

/// `--cert-expiry` in whole seconds (rounded up: the agent refuses what is below its
/// minimum), with a warning line below Docker's minimum of an hour.
fn cert_expiry_secs(expiry: Duration) -> u64 {
    if expiry < DOCKER_MIN_NODE_CERT_EXPIRY {
        eprintln!(
            "warning: --cert-expiry {}s is below Docker's minimum of 1h: every node renews its \
             certificate every {:.0}-{:.0}s (at 50-80 % of its lifetime); for tests and demos",
            expiry.as_secs_f64(),
            expiry.as_secs_f64() * 0.5,
            expiry.as_secs_f64() * 0.8
        );
    }
    expiry.as_secs_f64().ceil() as u64
}

/// `swarm ca [--rotate] [-q] [-d]`: the root CA certificate; with `--rotate`, a rotation
/// started and followed until every node holds a certificate of the new CA, which is then
/// printed (Docker's output, with a line per change instead of redrawn progress bars).
fn ca(host: &str, args: SwarmCaArgs) -> anyhow::Result<()> {
    let mut status = root_ca_call(host, args.rotate)?;
    if !args.rotate || args.detach {
        print!("{}", status.ca_cert_pem);
        return Ok(());
    }
    let mut desired = String::new();
    let mut shown = None;
    loop {
        if !status.desired_ca_cert_pem.is_empty() && status.desired_ca_cert_pem != desired {
            desired = status.desired_ca_cert_pem.clone();
            shown = None;
            if !args.quiet {
                let digest = pki::cert_info(&desired)
                    .map(|c| c.fingerprint)
                    .context("reading the new root CA")?;
                println!("desired root digest: sha256:{digest}");
            }
        }
        let done = status.desired_ca_cert_pem.is_empty();
        let progress = (status.nodes_rotated, status.nodes);
        if !args.quiet && shown != Some(progress) && !done {
            println!(
                "  rotated TLS certificates:  {}/{} nodes",
                progress.0, progress.1
            );
            shown = Some(progress);
        }
        if done {
            if !args.quiet {
                println!(
                    "  rotated TLS certificates:  {0}/{0} nodes\n  rotated CA certificates:   \
                     {0}/{0} nodes",
                    status.nodes
                );
            }
            print!("{}", status.ca_cert_pem);
            return Ok(());
        }
        std::thread::sleep(ROTATION_POLL);
        status = root_ca_call(host, false)?;
    }
}

fn root_ca_call(host: &str, rotate: bool) -> anyhow::Result<RootCaResponse> {
    let response = with_agent(host, async |channel| {
        cluster_client(channel)
            .root_ca(RootCaRequest { rotate })
            .await
            .map_err(status_error)
    })?;
    Ok(response.into_inner())
}

fn update(host: &str, args: SwarmUpdateArgs) -> anyhow::Result<()> {
    if let Some(expiry) = args.cert_expiry {
        let request = UpdateSwarmRequest {
            cert_expiry_secs: Some(cert_expiry_secs(expiry)),
            // The CLI changes what it is told to, whatever changed since.
            expected_version: None,
        };
        with_agent(host, async |channel| {
            cluster_client(channel)
                .update_swarm(request)
                .await
                .map_err(status_error)
        })?;
    }
    if args.rotate_gossip_key {
        with_agent(host, async |channel| {
            cluster_client(channel)
                .rotate_gossip_key(Empty {})
                .await
                .map_err(status_error)
        })?;
    }
    let key = match args.autolock {
        Some(autolock) => unlock_key_call(host, false, Some(autolock))?,
        None => String::new(),
    };
    println!("Swarm updated.");
    if args.autolock == Some(true) && !key.is_empty() {
        print_unlock_key(&key);
    }
    Ok(())
}

/// The unlock key from the leader, after turning autolock on or off and rotating as asked;
/// empty when autolock is off.
fn unlock_key_call(host: &str, rotate: bool, autolock: Option<bool>) -> anyhow::Result<String> {
    let request = UnlockKeyRequest { autolock, rotate };
    let response = with_agent(host, async |channel| {
        cluster_client(channel)
            .unlock_key(request)
            .await
            .map_err(status_error)
    })?;
    Ok(response.into_inner().key)
}

fn print_unlock_key(key: &str) {
    println!(
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n\
         command and provide the following key:\n"
    );
    println!("    {key}\n");
    println!(
        "Please remember to store this key in a password manager, since without it you\n\
         will not be able to restart the manager."
    );
}

fn unlock(host: &str) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        print!("Enter unlock key: ");
        std::io::stdout().flush().context("writing the prompt")?;
    }
    let mut key = String::new();
    stdin
        .lock()
        .read_line(&mut key)
        .context("reading the unlock key from stdin")?;
    let request = UnlockRequest {
        key: key.trim().to_string(),
    };
    with_agent(host, async |channel| {
        agent_client(channel)
            .unlock(request)
            .await
            .map_err(status_error)
    })?;
    Ok(())
}

fn unlock_key(host: &str, args: UnlockKeyArgs) -> anyhow::Result<()> {
    let key = unlock_key_call(host, args.rotate, None)?;
    if key.is_empty() {
        anyhow::bail!("no unlock key is set");
    }
    if args.quiet {
        println!("{key}");
        return Ok(());
    }
    if args.rotate {
        println!("Successfully rotated manager unlock key.\n");
    }
    print_unlock_key(&key);
    Ok(())
}

fn init(host: &str, args: SwarmInitArgs) -> anyhow::Result<()> {
    let request = InitRequest {
        listen_addr: args.listen_addr,
        advertise_addr: args.advertise_addr,
        data_path_addr: args.data_path_addr,
        default_addr_pools: args.default_addr_pools,
        default_addr_pool_mask_length: args.default_addr_pool_mask_length,
        dispatcher_heartbeat_ms: args.dispatcher_heartbeat.as_millis().max(1) as u64,
        autolock: args.autolock,
        cert_expiry_secs: cert_expiry_secs(args.cert_expiry),
    };
    let response = with_agent(host, async |channel| {
        let mut cluster = cluster_client(channel);
        cluster.init(request).await.map_err(status_error)
    })?
    .into_inner();
    println!(
        "Swarm initialized: current node ({}) is now a manager.\n",
        response.node_id
    );
    println!("To add a worker to this swarm, run the following command:\n");
    println!(
        "    shoal swarm join --token {} {}\n",
        response.worker_token, response.manager_addr
    );
    println!(
        "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the \
         instructions."
    );
    if !response.unlock_key.is_empty() {
        println!();
        print_unlock_key(&response.unlock_key);
    }
    Ok(())
}

fn join(host: &str, args: SwarmJoinArgs) -> anyhow::Result<()> {
    let request = JoinSwarmRequest {
        token: args.token,
        remote_addr: args.remote_addr,
        listen_addr: args.listen_addr,
        advertise_addr: args.advertise_addr,
        data_path_addr: args.data_path_addr,
    };
    let response = with_agent(host, async |channel| {
        cluster_client(channel)
            .join_swarm(request)
            .await
            .map_err(status_error)
    })?
    .into_inner();
    println!("This node joined a swarm as a {}.", response.role);
    Ok(())
}

fn join_token(host: &str, args: JoinTokenArgs) -> anyhow::Result<()> {
    let request = JoinTokenRequest {
        role: args.role.clone(),
        rotate: args.rotate,
    };
    let response = with_agent(host, async |channel| {
        cluster_client(channel)
            .join_token(request)
            .await
            .map_err(status_error)
    })?
    .into_inner();
    if args.quiet {
        println!("{}", response.token);
        return Ok(());
    }
    if args.rotate {
        println!("Successfully rotated {} join token.\n", args.role);
    }
    println!(
        "To add a {} to this swarm, run the following command:\n",
        args.role
    );
    println!(
        "    shoal swarm join --token {} {}\n",
        response.token, response.manager_addr
    );
    Ok(())
}

fn leave(host: &str, args: LeaveArgs) -> anyhow::Result<()> {
    with_agent(host, async |channel| {
        cluster_client(channel)
            .leave(LeaveRequest { force: args.force })
            .await
            .map_err(status_error)
    })?;
    println!("Node left the swarm.");
    Ok(())
}
