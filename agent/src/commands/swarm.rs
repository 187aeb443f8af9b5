//! `shoal swarm init | join | join-token | leave | update`, printing what Docker prints.

use shoal_control::api::{Empty, InitRequest, JoinSwarmRequest, JoinTokenRequest, LeaveRequest};
use shoal_control::wire_limits::cluster_client;

use crate::{
    cli::{JoinTokenArgs, LeaveArgs, SwarmCommand, SwarmInitArgs, SwarmJoinArgs, SwarmUpdateArgs},
    client::{status_error, with_agent},
};

pub fn run(host: &str, command: SwarmCommand) -> anyhow::Result<()> {
    match command {
        SwarmCommand::Init(args) => init(host, args),
        SwarmCommand::Join(args) => join(host, args),
        SwarmCommand::JoinToken(args) => join_token(host, args),
        SwarmCommand::Leave(args) => leave(host, args),
        SwarmCommand::Update(args) => update(host, args),
    }
}

fn update(host: &str, args: SwarmUpdateArgs) -> anyhow::Result<()> {
    if args.rotate_gossip_key {
        with_agent(host, async |channel| {
            cluster_client(channel)
                .rotate_gossip_key(Empty {})
                .await
                .map_err(status_error)
        })?;
    }
    println!("Swarm updated.");
    Ok(())
}

fn init(host: &str, args: SwarmInitArgs) -> anyhow::Result<()> {
    let request = InitRequest {
        advertise_addr: args.advertise_addr,
        data_path_addr: args.data_path_addr,
        default_addr_pools: args.default_addr_pools,
        default_addr_pool_mask_length: args.default_addr_pool_mask_length,
        dispatcher_heartbeat_ms: args.dispatcher_heartbeat.as_millis().max(1) as u64,
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
    Ok(())
}

fn join(host: &str, args: SwarmJoinArgs) -> anyhow::Result<()> {
    let request = JoinSwarmRequest {
        token: args.token,
        remote_addr: args.remote_addr,
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
