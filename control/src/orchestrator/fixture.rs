//! Test fixture: a simulated cluster that runs reconcile passes, applies their commands with
//! `ClusterState::apply`, and plays the nodes (tasks start, stop, fail).
#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{
    Availability, ClusterState, Command, CommandResponse, FailureAction, NodeRecord,
    RestartCondition, RestartPolicy, Role, Service, ServiceMode, ServiceSpec, Task, TaskState,
    TaskStatus, UpdateConfig, UpdateOrder, UpdateState, touched::Touched,
};

use super::{Inputs, Passes, reconcile};

pub fn node(id: &str, role: Role) -> NodeRecord {
    NodeRecord {
        id: id.to_string(),
        hostname: id.to_string(),
        role,
        availability: Availability::Active,
        labels: BTreeMap::new(),
        addr: "127.0.0.1:2377".parse().unwrap(),
        data_path_addr: "127.0.0.1".parse().unwrap(),
        created_at: 0,
        resources: Default::default(),
    }
}

pub fn update_config() -> UpdateConfig {
    UpdateConfig {
        parallelism: 1,
        delay_ms: 0,
        failure_action: FailureAction::Pause,
        monitor_ms: 5_000,
        max_failure_ratio_milli: 0,
        order: UpdateOrder::StopFirst,
    }
}

pub fn spec(name: &str, mode: ServiceMode) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        command: vec!["sleep".into(), "infinity".into()],
        env: Vec::new(),
        mounts: Vec::new(),
        mode,
        constraints: Vec::new(),
        networks: Vec::new(),
        endpoint_mode: Default::default(),
        restart: RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 0,
            max_attempts: 0,
            window_ms: 0,
        },
        update: update_config(),
        rollback: update_config(),
        stop_grace_ms: 10_000,
        force_update: 0,
        ports: Vec::new(),
        labels: Default::default(),
        network_aliases: Default::default(),
        workdir: String::new(),
        user: String::new(),
        hostname: String::new(),
        stop_signal: String::new(),
        max_replicas_per_node: 0,
        secrets: Vec::new(),
        configs: Vec::new(),
        healthcheck: None,
        command_shape: None,
        resources: Default::default(),
    }
}

pub fn replicated(name: &str, replicas: u64) -> ServiceSpec {
    spec(name, ServiceMode::Replicated { replicas })
}

pub fn global(name: &str) -> ServiceSpec {
    spec(name, ServiceMode::Global)
}

pub struct Sim {
    pub state: ClusterState,
    pub down: BTreeSet<String>,
    pub now: u64,
    next_id: u64,
    /// The leader's ticks, run beside every pass: each must decide what the pass over all
    /// services decides (see [`Sim::pass`]).
    passes: Passes,
    /// What the state machine would have noted since the last tick, and its generation.
    touched: Touched,
    generation: u64,
}

impl Sim {
    /// Nodes n1..=n<count>, n1 a manager, the others workers; time starts at 1,000,000 ms.
    pub fn new(count: usize) -> Sim {
        let mut sim = Sim {
            state: ClusterState::default(),
            down: BTreeSet::new(),
            now: 1_000_000,
            next_id: 0,
            passes: Passes::default(),
            touched: Touched::default(),
            generation: 0,
        };
        for i in 1..=count {
            let role = if i == 1 { Role::Manager } else { Role::Worker };
            sim.add_node(&format!("n{i}"), role);
        }
        sim
    }

    pub fn add_node(&mut self, id: &str, role: Role) {
        self.node_changed(id);
        self.state.nodes.insert(id.to_string(), node(id, role));
    }

    /// A node's record, to change as `node update` would (so the node is noted).
    pub fn node_mut(&mut self, id: &str) -> &mut NodeRecord {
        self.node_changed(id);
        self.state.nodes.get_mut(id).unwrap()
    }

    pub fn remove_node(&mut self, id: &str) {
        self.node_changed(id);
        self.state.nodes.remove(id);
    }

    /// Notes that node `id` changed, as the state machine does for the node commands.
    fn node_changed(&mut self, id: &str) {
        self.touched.note_node(id);
        self.generation += 1;
    }

    pub fn create(&mut self, id: &str, spec: ServiceSpec) {
        self.apply(&Command::CreateService(new_service(id, spec, self.now)));
    }

    pub fn service(&self, id: &str) -> &Service {
        &self.state.services[id]
    }

    /// `service update`, as the API does it.
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut ServiceSpec)) {
        let mut service = self.service(id).clone();
        let mut spec = service.spec.clone();
        change(&mut spec);
        service.previous_spec = Some(std::mem::replace(&mut service.spec, spec));
        service.version += 1;
        service.update_status = None;
        service.updated_at_ms = self.now;
        self.apply(&Command::UpdateService(service));
    }

    pub fn update_state(&self, id: &str) -> Option<UpdateState> {
        self.service(id).update_status.as_ref().map(|s| s.state)
    }

    pub fn apply(&mut self, command: &Command) {
        self.touched.note(command, &self.state);
        self.generation += 1;
        assert_eq!(
            self.state.apply(command),
            CommandResponse::Ok,
            "{command:?}"
        );
    }

    /// One reconcile pass at the current time, applied; checks that the leader's tick at the
    /// same time decides the same (over the services it chose, or without a pass).
    pub fn pass(&mut self) -> Vec<Command> {
        let (reconciled, next) = self.pass_at(self.now);
        let down: BTreeSet<&str> = self.down.iter().map(String::as_str).collect();
        let mut ticked_id = self.next_id;
        let ticked = self.passes.tick(
            &self.state,
            self.generation,
            self.touched.take(),
            &down,
            self.now,
            &mut || {
                ticked_id += 1;
                format!("t{ticked_id:04}")
            },
        );
        assert_eq!(
            ticked,
            reconciled.commands,
            "the tick over {} services decided otherwise than the pass over all",
            self.passes.passed()
        );
        self.next_id = next;
        for command in &reconciled.commands {
            self.apply(command);
        }
        reconciled.commands
    }

    /// What a pass at `now` would decide, not applied; and the next task number.
    fn pass_at(&self, now: u64) -> (super::Reconciled, u64) {
        let is_ready = |id: &str| !self.down.contains(id);
        let inputs = Inputs {
            state: &self.state,
            is_ready: &is_ready,
            now_ms: now,
        };
        let mut next = self.next_id;
        let reconciled = reconcile(&inputs, &mut || {
            next += 1;
            format!("t{next:04}")
        });
        (reconciled, next)
    }

    /// A pass, then checks that a second pass right after it has nothing to do, and that
    /// nothing is left to do until the time it names (see [`Sim::check_wake`]).
    pub fn step(&mut self) -> Vec<Command> {
        let commands = self.pass();
        let again = self.pass();
        assert!(again.is_empty(), "not idempotent: {again:#?}");
        self.check_wake();
        commands
    }

    /// The time a pass now names to look again ([`super::Reconciled::wake_at_ms`]).
    pub fn wake(&self) -> Option<u64> {
        self.pass_at(self.now).0.wake_at_ms()
    }

    /// The leader skips passes while the state and readiness stay the same and the time the
    /// last idle pass named ([`super::Reconciled::wake_at_ms`]) has not come: checks that
    /// passes at later times before it (just before it, half-way, or a day on when it names
    /// none) decide nothing either, so that skipping them loses nothing.
    pub fn check_wake(&self) {
        let (idle, _) = self.pass_at(self.now);
        assert!(idle.commands.is_empty(), "not idle: {idle:#?}");
        let later = match idle.wake_at_ms() {
            Some(wake) => {
                assert!(wake > self.now, "wake at {wake}, now {}", self.now);
                vec![self.now + (wake - self.now) / 2, wake - 1]
            }
            None => vec![self.now + 86_400_000],
        };
        for at in later {
            let (then, _) = self.pass_at(at);
            assert!(
                then.commands.is_empty(),
                "a pass at {at} (now {}, wake {:?}) has work the skip would lose: {:#?}",
                self.now,
                idle.wake_at_ms(),
                then.commands
            );
        }
    }

    /// Plays the nodes that are up: assigned tasks start Running, tasks told to stop report
    /// Shutdown, in one report per node, as their beats would. A node hears of no task before
    /// it is Assigned (as the dispatcher sends them).
    pub fn nodes_act(&mut self) {
        let mut reports: BTreeMap<String, Vec<(String, TaskStatus)>> = BTreeMap::new();
        for task in self.state.tasks.values() {
            if task.node_id.is_empty()
                || task.status.state < TaskState::Assigned
                || self.down.contains(&task.node_id)
            {
                continue;
            }
            if !self.state.nodes.contains_key(&task.node_id) || task.status.state.is_terminal() {
                continue;
            }
            let state = if task.desired_state == TaskState::Running {
                TaskState::Running
            } else {
                TaskState::Shutdown
            };
            if task.status.state != state {
                reports
                    .entry(task.node_id.clone())
                    .or_default()
                    .push((task.id.clone(), status(state, self.now)));
            }
        }
        for (node_id, reports) in reports {
            self.apply(&Command::ReportTasks { node_id, reports });
        }
    }

    /// Passes and node actions until nothing changes (at most 50 rounds).
    pub fn settle(&mut self) {
        for _ in 0..50 {
            let commands = self.step();
            let before = self.state.tasks.clone();
            self.nodes_act();
            if commands.is_empty() && before == self.state.tasks {
                return;
            }
        }
        panic!("did not settle");
    }

    /// The task's node reports it in `state`.
    pub fn report(&mut self, task_id: &str, state: TaskState) {
        let node_id = self.state.tasks[task_id].node_id.clone();
        let reports = vec![(task_id.to_string(), status(state, self.now))];
        self.apply(&Command::ReportTasks { node_id, reports });
        assert_eq!(
            self.state.tasks[task_id].status.state, state,
            "report taken"
        );
    }

    pub fn tasks(&self, service: &str) -> Vec<&Task> {
        self.state
            .tasks
            .values()
            .filter(|t| t.service_id == service)
            .collect()
    }

    /// Tasks the orchestrator wants running.
    pub fn wanted(&self, service: &str) -> Vec<&Task> {
        let mut tasks: Vec<&Task> = self
            .tasks(service)
            .into_iter()
            .filter(|t| t.desired_state == TaskState::Running)
            .collect();
        tasks.sort_by_key(|t| (t.slot, t.node_id.clone()));
        tasks
    }

    /// The wanted task of each slot (replicated) or node (global).
    pub fn current(&self, service: &str, slot: u64) -> &Task {
        let wanted: Vec<&Task> = self
            .wanted(service)
            .into_iter()
            .filter(|t| t.slot == slot)
            .collect();
        assert_eq!(wanted.len(), 1, "slot {slot}: {wanted:#?}");
        wanted[0]
    }

    /// Wanted-running tasks per node ("" for pending).
    pub fn per_node(&self, service: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for task in self.wanted(service) {
            *counts.entry(task.node_id.clone()).or_default() += 1;
        }
        counts
    }

    /// Running tasks per service version.
    pub fn running_versions(&self, service: &str) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for task in self.wanted(service) {
            if task.status.state == TaskState::Running {
                *counts.entry(task.service_version).or_default() += 1;
            }
        }
        counts
    }
}

pub fn status(state: TaskState, now: u64) -> TaskStatus {
    TaskStatus {
        state,
        message: state.as_str().to_string(),
        error: String::new(),
        exit_code: None,
        timestamp_ms: now,
        health: None,
    }
}

pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A service at version 1 as `service create` makes it, created at `now_ms`, nothing allocated.
pub fn new_service(id: &str, spec: ServiceSpec, now_ms: u64) -> Service {
    Service {
        id: id.to_string(),
        spec,
        version: 1,
        previous_spec: None,
        update_status: None,
        virtual_ips: Vec::new(),
        endpoint_ports: Vec::new(),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    }
}
