//! CLI commands that call the agent's API, one module each.

pub mod exec;
pub mod info;
pub mod logs;
pub mod network;
pub mod node;
pub mod objects;
pub mod service;
pub mod stack;
pub mod swarm;
pub mod version;
pub mod volume;
