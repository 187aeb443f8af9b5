//! `shoal service create | ls | ps | inspect | scale | update | rollback | logs | rm`: each
//! command's calls to the API, printing what Docker prints. Without `-d`, create, scale, update
//! and rollback follow the service until it converges, and exit non-zero, saying why, when it
//! cannot.
//!
//! # Layout
//! - `requests`: the cluster API calls the commands and the convergence loop share.
//! - `spec`: turning create and update flags into the service spec sent to the API.
//! - `converge`: following a change until the service converges, printing its progress.
//! - `render`: tables, Docker-shaped JSON and `--pretty` text, as pure functions of API messages.
//! - `files`: how `service inspect` shows `--secret` and `--config` references (for `render`).

pub(crate) mod converge;
mod files;
pub(crate) mod render;
mod requests;
mod spec;

use anyhow::bail;
use shoal_control::wire_limits::cluster_client;
use shoal_control::{api::ServiceRef, clock::now_ms};
use tonic::transport::Channel;

use self::{
    converge::{Expect, converge},
    requests::{current, network_ids, services, tasks, update},
};
use crate::{
    cli::{
        OutputFormat,
        filter::Filters,
        service::{
            ServiceCommand, ServiceCreateArgs, ServiceInspectArgs, ServiceLsArgs, ServiceUpdateArgs,
        },
    },
    client::{status_error, with_agent},
};

pub fn run(host: &str, command: ServiceCommand) -> anyhow::Result<()> {
    with_agent(host, async |channel| match command {
        ServiceCommand::Create(args) => create(channel, args).await,
        ServiceCommand::Ls(args) => ls(channel, args).await,
        ServiceCommand::Ps(args) => ps(channel, &args.service, args.format).await,
        ServiceCommand::Inspect(args) => inspect(channel, args).await,
        ServiceCommand::Scale(args) => {
            for (service, replicas) in &args.scales {
                let mut spec = current(channel.clone(), service)
                    .await?
                    .spec
                    .unwrap_or_default();
                if spec.mode == "global" {
                    bail!("scale can only be used with replicated mode ({service} is global)");
                }
                spec.replicas = *replicas;
                let info = update(channel.clone(), service, Some(spec), false).await?;
                println!("{service} scaled to {replicas}");
                if !args.detach {
                    converge(channel.clone(), &info.id, Expect::Forward).await?;
                }
            }
            Ok(())
        }
        ServiceCommand::Update(args) => update_command(channel, args).await,
        ServiceCommand::Rollback(args) => {
            let info = update(channel.clone(), &args.service, None, true).await?;
            println!("{}", args.service);
            if !args.detach {
                converge(channel, &info.id, Expect::Rollback).await?;
            }
            Ok(())
        }
        ServiceCommand::Logs(args) => super::logs::run(channel, &args.service, args.follow).await,
        ServiceCommand::Rm(args) => {
            let mut cluster = cluster_client(channel);
            for service in args.services {
                let request = ServiceRef {
                    service: service.clone(),
                };
                cluster
                    .remove_service(request)
                    .await
                    .map_err(status_error)?;
                println!("{service}");
            }
            Ok(())
        }
    })
}

async fn create(channel: Channel, args: ServiceCreateArgs) -> anyhow::Result<()> {
    let detach = args.detach;
    let spec = spec::from_create(args)?;
    let info = cluster_client(channel.clone())
        .create_service(spec)
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{}", info.id);
    if !detach {
        converge(channel, &info.id, Expect::Forward).await?;
    }
    Ok(())
}

async fn update_command(channel: Channel, args: ServiceUpdateArgs) -> anyhow::Result<()> {
    if args.rollback {
        let info = update(channel.clone(), &args.service, None, true).await?;
        println!("{}", args.service);
        if !args.detach {
            converge(channel, &info.id, Expect::Rollback).await?;
        }
        return Ok(());
    }
    let mut spec = current(channel.clone(), &args.service)
        .await?
        .spec
        .unwrap_or_default();
    spec::check_update(&spec, &args)?;
    // The spec keeps network IDs; `--network-rm` may name them.
    let removed_networks = if args.network_rm.is_empty() {
        Vec::new()
    } else {
        network_ids(channel.clone(), &args.network_rm).await?
    };
    spec::apply_update(&mut spec, &args, &removed_networks)?;
    let info = update(channel.clone(), &args.service, Some(spec), false).await?;
    println!("{}", args.service);
    if !args.detach {
        converge(channel, &info.id, Expect::Forward).await?;
    }
    Ok(())
}

async fn ls(channel: Channel, args: ServiceLsArgs) -> anyhow::Result<()> {
    let filters = Filters::new(&args.filters);
    let mut all = services(channel).await?;
    all.retain(|s| render::matches(s, &filters));
    all.sort_by(|a, b| render::name_of(a).cmp(render::name_of(b)));
    if args.quiet {
        for service in &all {
            println!("{}", render::short(&service.id));
        }
        return Ok(());
    }
    if args.format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    print!("{}", render::ls_table(&all));
    Ok(())
}

async fn ps(channel: Channel, service: &str, format: OutputFormat) -> anyhow::Result<()> {
    let tasks = tasks(channel, service).await?;
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    print!("{}", render::ps_table(&tasks, now_ms()));
    Ok(())
}

async fn inspect(channel: Channel, args: ServiceInspectArgs) -> anyhow::Result<()> {
    let mut found = Vec::new();
    for reference in &args.services {
        found.push(current(channel.clone(), reference).await?);
    }
    if !args.pretty {
        println!("{}", render::inspect_json(&found)?);
        return Ok(());
    }
    for service in &found {
        print!("{}", render::pretty(service));
    }
    Ok(())
}
