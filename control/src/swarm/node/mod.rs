//! The node side of a membership: what every node runs, manager or worker.
//!
//! # Layout
//! - `runner`: the [`TaskRunner`](runner::TaskRunner) seam to whatever runs processes.
//! - `heartbeat`: the heartbeat loop: alive, task reports up, assignments followed.
//! - `certs`: the node's certificate renewed over time and for root rotations.
//! - `reissue`: a manager re-issuing its own expired certificate from the CA in its store.
//! - `task_io`: a task's logs and `exec`, served on its node and relayed by others.
//! - `log_lines`: a task's logs as timed lines, filtered (`since`, `until`, `tail`).
//! - [`log_stamps`]: when each part of a log was written (the files the executor keeps).

pub(super) mod certs;
pub(super) mod heartbeat;
pub(super) mod log_lines;
pub mod log_stamps;
pub(super) mod reissue;
pub(super) mod runner;
pub(super) mod task_io;
