//! CLI commands that call the agent's API, one module each.

pub mod info;
pub mod node;
pub mod service;
pub mod swarm;
