//! One service's share of a reconcile pass: its tasks grouped by slot (replicated) or node
//! (global), the changes decided so far, and the primitive changes every policy is built from
//! (create, shut down, assign). At the end the changes become commands.
//!
//! Changes are made on copy-on-write views of the stored tasks, so that every later step of
//! the pass sees the earlier ones (idempotence needs each step to judge the state the pass
//! leaves behind), while untouched tasks cost no copy.

use std::{borrow::Cow, collections::BTreeMap};

use crate::cluster::{Service, ServiceMode, ServiceSpec, Task, TaskState, TaskStatus};

use super::{
    Output,
    placement::{Candidates, Ctx, Placer},
};

/// What a task's history is grouped by: its slot (replicated) or its node (global).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SlotKey<'a> {
    Slot(u64),
    Node(&'a str),
}

/// The tasks of one slot, oldest first.
#[derive(Default)]
pub(super) struct Slot<'a> {
    pub tasks: Vec<Cow<'a, Task>>,
}

impl Slot<'_> {
    /// The slot's current task: the newest one the orchestrator wants running. Tasks are kept
    /// oldest first and new ones are appended, so it is the last such task.
    pub fn current(&self) -> Option<usize> {
        self.tasks
            .iter()
            .rposition(|t| t.desired_state == TaskState::Running)
    }

    pub fn current_task(&self) -> Option<&Task> {
        self.current().map(|i| self.tasks[i].as_ref())
    }
}

/// Where a new task goes.
pub(super) enum Target<'a> {
    /// Global: this node.
    Node(&'a str),
    /// Replicated: the spread choice, or `prefer` when it is eligible (an update keeps a slot
    /// on its node when it can).
    Spread { prefer: Option<String> },
}

pub(super) struct ServicePass<'a, 'x> {
    pub ctx: &'x Ctx<'a>,
    placer: &'x mut Placer,
    new_id: &'x mut dyn FnMut() -> String,
    pub original: &'a Service,
    /// The service as this pass leaves it (update status, rollback).
    pub service: Service,
    pub slots: BTreeMap<SlotKey<'a>, Slot<'a>>,
    /// The nodes a new task may go to, found when the pass first places one: most passes
    /// of most services place nothing, and finding them walks every node.
    candidates: Option<Candidates<'a>>,
    /// Task IDs to remove (history).
    pub removed: Vec<String>,
}

impl<'a, 'x> ServicePass<'a, 'x> {
    pub fn new(
        ctx: &'x Ctx<'a>,
        placer: &'x mut Placer,
        new_id: &'x mut dyn FnMut() -> String,
        service: &'a Service,
        tasks: &[&'a Task],
    ) -> Self {
        let global = matches!(service.spec.mode, ServiceMode::Global);
        let mut slots: BTreeMap<SlotKey<'a>, Slot<'a>> = BTreeMap::new();
        for task in tasks {
            let key = if global {
                SlotKey::Node(task.node_id.as_str())
            } else {
                SlotKey::Slot(task.slot)
            };
            slots
                .entry(key)
                .or_default()
                .tasks
                .push(Cow::Borrowed(*task));
        }
        for slot in slots.values_mut() {
            // Version first: a newer spec's task is newer even if clocks disagree.
            slot.tasks.sort_by(|a, b| age_key(a).cmp(&age_key(b)));
        }
        ServicePass {
            ctx,
            placer,
            new_id,
            original: service,
            service: service.clone(),
            slots,
            candidates: None,
            removed: Vec::new(),
        }
    }

    pub fn is_global(&self) -> bool {
        matches!(self.service.spec.mode, ServiceMode::Global)
    }

    /// Replaces the service the pass works toward (a rollback changes spec and constraints).
    pub fn set_service(&mut self, service: Service) {
        self.candidates = None;
        self.service = service;
    }

    /// Whether `task` runs something other than the service's current spec.
    pub fn is_dirty(&self, task: &Task) -> bool {
        !same_task_spec(&task.spec, &self.service.spec)
    }

    pub fn current(&self, key: SlotKey<'a>) -> Option<&Task> {
        self.slots.get(&key).and_then(Slot::current_task)
    }

    /// Sets a task's desired state to Shutdown. A task that no node will ever report on again
    /// (never assigned, or its node was removed) is also given a terminal status, so it does
    /// not linger as "stopping" and history pruning can drop it.
    pub fn shutdown(&mut self, key: SlotKey<'a>, index: usize) {
        let Some(cow) = self
            .slots
            .get_mut(&key)
            .and_then(|s| s.tasks.get_mut(index))
        else {
            return;
        };
        if cow.desired_state == TaskState::Shutdown {
            return;
        }
        self.placer.count(cow, false);
        let now = self.ctx.now;
        let node_gone = !cow.node_id.is_empty() && self.ctx.node(&cow.node_id).is_none();
        let task = cow.to_mut();
        task.desired_state = TaskState::Shutdown;
        if !task.status.state.is_terminal() {
            if task.node_id.is_empty() {
                task.status = status(TaskState::Shutdown, "shut down before it was assigned", now);
            } else if node_gone {
                task.status = status(TaskState::Orphaned, "node removed from the swarm", now);
            }
        }
    }

    /// Shuts down every task of the slot the orchestrator still wants running.
    pub fn shutdown_all(&mut self, key: SlotKey<'a>) {
        let count = self.slots.get(&key).map_or(0, |s| s.tasks.len());
        for index in 0..count {
            self.shutdown(key, index);
        }
    }

    /// The spec and version a replacement for `task` runs: the service's current ones when the
    /// task was up to date, else the task's own, so that only the rolling update moves a slot
    /// to a new spec (at its pace, and not while it is paused).
    pub fn spec_for(&self, task: &Task) -> (ServiceSpec, u64) {
        if self.is_dirty(task) {
            (task.spec.clone(), task.service_version)
        } else {
            (self.service.spec.clone(), self.service.version)
        }
    }

    /// `--replicas-max-per-node` of the service as this pass places it (replicated only).
    fn max_per_node(&self) -> u64 {
        match self.service.spec.mode {
            ServiceMode::Replicated { .. } => self.service.spec.max_replicas_per_node,
            ServiceMode::Global => 0,
        }
    }

    /// Creates a task wanted Running in `key`, Assigned to a node or Pending without one.
    pub fn create(&mut self, key: SlotKey<'a>, spec: ServiceSpec, version: u64, target: Target) {
        let max = self.max_per_node();
        let wants = &spec.resources;
        // A global task belongs to its node even while it waits there (for room), as in
        // swarmkit; nodes are sent only tasks that are Assigned or later.
        let waits_on = match &target {
            Target::Node(node) => node.to_string(),
            Target::Spread { .. } => String::new(),
        };
        let node = match target {
            Target::Node(node) => self.placer.room_on(node, wants).map(|()| node.to_string()),
            Target::Spread { prefer } => {
                let candidates = self
                    .candidates
                    .get_or_insert_with(|| self.ctx.candidates(&self.service.spec.constraints));
                match prefer.filter(|n| {
                    candidates.nodes.contains(&n.as_str())
                        && self.placer.fits(&self.service.id, n, max, wants)
                }) {
                    Some(node) => Ok(node),
                    None => self
                        .placer
                        .choose(&self.service.id, candidates, max, wants)
                        .map(str::to_string),
                }
            }
        };
        let now = self.ctx.now;
        let status = match &node {
            Ok(_) => status(TaskState::Assigned, ASSIGNED, now),
            Err(error) => TaskStatus {
                error: error.clone(),
                ..status(TaskState::Pending, PENDING, now)
            },
        };
        let task = Task {
            id: (self.new_id)(),
            service_id: self.service.id.clone(),
            slot: match key {
                SlotKey::Slot(n) => n,
                SlotKey::Node(_) => 0,
            },
            node_id: node.unwrap_or(waits_on),
            service_version: version,
            spec,
            // Addresses are the allocator's, after placement (see `allocator::address_tasks`).
            networks: Vec::new(),
            desired_state: TaskState::Running,
            status,
            created_at_ms: now,
        };
        self.placer.count(&task, true);
        self.slots
            .entry(key)
            .or_default()
            .tasks
            .push(Cow::Owned(task));
    }

    /// Gives a Pending task a node if one is eligible now (`node`, for a global service's, else
    /// the spread choice), else keeps its error up to date.
    pub fn assign(&mut self, key: SlotKey<'a>, index: usize, node: Option<&str>) {
        let max = self.max_per_node();
        let Some(cow) = self
            .slots
            .get_mut(&key)
            .and_then(|s| s.tasks.get_mut(index))
        else {
            return;
        };
        let wants = &cow.spec.resources;
        let chosen = match node {
            Some(node) => self.placer.room_on(node, wants).map(|()| node),
            None => {
                let candidates = self
                    .candidates
                    .get_or_insert_with(|| self.ctx.candidates(&self.service.spec.constraints));
                self.placer.choose(&self.service.id, candidates, max, wants)
            }
        };
        match chosen {
            Ok(node) => {
                let task = cow.to_mut();
                task.node_id = node.to_string();
                task.status = status(TaskState::Assigned, ASSIGNED, self.ctx.now);
                self.placer.count(task, true);
            }
            Err(error) if cow.status.error != error => cow.to_mut().status.error = error,
            Err(_) => {}
        }
    }

    /// Whether a task the orchestrator wants running may stay where it is.
    pub fn keeps(&self, task: &Task) -> bool {
        let constraints = &self.service.spec.constraints;
        if task.node_id.is_empty() {
            false
        } else if self.is_global() {
            self.ctx.can_keep(&task.node_id, constraints)
        } else {
            self.ctx.can_keep_replicated(&task.node_id, constraints)
        }
    }

    /// Whether a task is up and may stay: what an update may count on while it starts the
    /// replacement first.
    pub fn serving(&self, task: &Task) -> bool {
        task.status.state == TaskState::Running && self.keeps(task)
    }

    /// The slots an update must bring to the current spec: every slot of a replicated
    /// service, and for a global service the nodes that can take a new task (a Down or paused
    /// node keeps its old task until it can).
    pub fn update_scope(&self) -> Vec<SlotKey<'a>> {
        match self.service.spec.mode {
            ServiceMode::Replicated { replicas } => (1..=replicas).map(SlotKey::Slot).collect(),
            ServiceMode::Global => {
                let constraints = &self.service.spec.constraints;
                self.ctx
                    .state
                    .nodes
                    .keys()
                    .filter(|id| self.ctx.can_take_new(id, constraints))
                    .map(|id| SlotKey::Node(id.as_str()))
                    .collect()
            }
        }
    }

    /// Shuts down the tasks of a slot that an update or a move left behind: once the current
    /// task is Running, older tasks still wanted running (start-first updates) go; before
    /// that, only those that may not stay where they are.
    pub fn retire_superseded(&mut self, key: SlotKey<'a>) {
        let Some(slot) = self.slots.get(&key) else {
            return;
        };
        let Some(current) = slot.current() else {
            return;
        };
        let current_running = slot.tasks[current].status.state == TaskState::Running;
        let superseded: Vec<usize> = slot
            .tasks
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                *i != current
                    && t.desired_state == TaskState::Running
                    && (current_running || !self.keeps(t))
            })
            .map(|(i, _)| i)
            .collect();
        for index in superseded {
            self.shutdown(key, index);
        }
    }

    /// Whether a task the service wants running waits for a node after this pass: other
    /// services' changes (tasks stopping, freeing a node's reservations) may place it.
    pub fn waits_for_a_node(&self) -> bool {
        self.slots
            .values()
            .flat_map(|s| &s.tasks)
            .any(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Pending)
    }

    /// Turns the pass's decisions into output; whether it decided anything.
    pub fn finish(self, out: &mut Output) -> bool {
        let before = (out.services.len(), out.tasks.len(), out.removed.len());
        if self.service != *self.original {
            out.services.push(self.service);
        }
        for slot in self.slots.into_values() {
            for task in slot.tasks {
                if let Cow::Owned(task) = task
                    && self.ctx.state.tasks.get(&task.id) != Some(&task)
                {
                    out.tasks.push(task);
                }
            }
        }
        out.removed.extend(self.removed);
        (out.services.len(), out.tasks.len(), out.removed.len()) != before
    }
}

const ASSIGNED: &str = "scheduler assigned task to node";
pub(crate) const PENDING: &str = "pending task scheduling";

fn status(state: TaskState, message: &str, now: u64) -> TaskStatus {
    TaskStatus {
        state,
        message: message.to_string(),
        error: String::new(),
        exit_code: None,
        timestamp_ms: now,
        health: None,
    }
}

fn age_key(task: &Task) -> (u64, u64, &str) {
    (task.service_version, task.created_at_ms, task.id.as_str())
}

/// Whether two specs run the same task. Only what the task itself runs counts: the mode
/// (replicas), update and rollback settings and the restart policy are the orchestrator's
/// business, and constraints only matter when the task's node stops satisfying them (as in
/// Docker), so changing them does not restart anything. The same goes for the per-node
/// replica limit (new placements follow it) and the service's labels (not the task's).
pub fn same_task_spec(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    a.command == b.command
        && a.env == b.env
        && a.mounts == b.mounts
        && a.networks == b.networks
        // Published with each endpoint when the task attaches.
        && a.network_aliases == b.network_aliases
        // The process's own settings.
        && a.workdir == b.workdir
        && a.user == b.user
        && a.hostname == b.hostname
        && a.stop_signal == b.stop_signal
        // The agent runs the check it was given when the task started.
        && a.healthcheck == b.healthcheck
        // Joining or leaving the routing mesh adds or removes an interface.
        && a.needs_ingress() == b.needs_ingress()
        // Tasks carry their service's VIPs, which come and go with the endpoint mode.
        && a.endpoint_mode == b.endpoint_mode
        && a.stop_grace_ms == b.stop_grace_ms
        && a.force_update == b.force_update
        // Files are put in place when a task starts.
        && a.secrets == b.secrets
        && a.configs == b.configs
}
