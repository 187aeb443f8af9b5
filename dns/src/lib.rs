//! shoal's embedded DNS: what a task's resolver at 127.0.0.11 sees and answers.
//!
//! This crate knows nothing of netlink or eBPF; the agent hands it sockets and records.
//!
//! # Layout
//! - [`resolv_conf`]: reading the host's resolv.conf (upstream servers, search, options) and
//!   writing the one each task gets.
#![forbid(unsafe_code)]

pub mod resolv_conf;
