//! Which services and nodes a command changes for the orchestrator, whose passes read the
//! nodes, the services and the tasks only: the state machine notes them as it applies
//! commands ([`Touched`]), and the leader's orchestrator passes over the services they
//! concern rather than every one (`orchestrator::Passes`).

use std::collections::BTreeSet;

use super::{ClusterState, Command};

/// More services and nodes than this noted since the orchestrator last took them count as all of them:
/// the notes must not grow without bound on a manager that does not lead (nothing takes them
/// there), and a pass over that many is a pass over most anyway.
const MAX_NOTED: usize = 4096;

/// The services and nodes changed since the orchestrator last looked, or all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Everything may have changed: the swarm was created, a snapshot replaced the state, or
    /// too many were noted.
    pub all: bool,
    /// Services whose record or tasks changed.
    pub services: BTreeSet<String>,
    /// Nodes whose record changed, or that joined or left.
    pub nodes: BTreeSet<String>,
}

impl Touched {
    /// Notes what `command`, about to be applied to `state`, may change. Called before the
    /// apply: a task report or removal names tasks, whose service is read from the state.
    pub fn note(&mut self, command: &Command, state: &ClusterState) {
        if self.all {
            return;
        }
        match command {
            Command::Init { .. } => self.note_all(),
            Command::AddNode(node) => self.note_node(&node.id),
            Command::UpdateNode { id, .. }
            | Command::SetRole { id, .. }
            | Command::RemoveNode { id, .. } => self.note_node(id),
            Command::CreateService(service) | Command::UpdateService(service) => {
                self.note_service(&service.id);
            }
            Command::RemoveService { id } => self.note_service(id),
            Command::PutTasks(tasks) => {
                for task in tasks {
                    self.note_service(&task.service_id);
                }
            }
            Command::ReportTasks { reports, .. } => {
                for (id, _) in reports {
                    self.note_task(id, state);
                }
            }
            Command::RemoveTasks(ids) => {
                for id in ids {
                    self.note_task(id, state);
                }
            }
            // Neither nodes, services nor tasks.
            Command::RotateSecret { .. }
            | Command::CreateNetwork(_)
            | Command::RemoveNetwork { .. }
            | Command::RotateGossipKey(_)
            | Command::SetUnlockKey(_)
            | Command::SetNodeKey { .. }
            | Command::Objects(_)
            | Command::CertIssued { .. }
            | Command::SetCertExpiry { .. }
            | Command::StartCaRotation(_)
            | Command::FinishCaRotation { .. }
            | Command::Settings { .. } => {}
        }
    }

    /// Everything may have changed.
    pub fn note_all(&mut self) {
        self.all = true;
        self.services.clear();
        self.nodes.clear();
    }

    pub fn note_service(&mut self, id: &str) {
        if !self.all {
            self.services.insert(id.to_string());
            self.check_size();
        }
    }

    pub fn note_node(&mut self, id: &str) {
        if !self.all {
            self.nodes.insert(id.to_string());
            self.check_size();
        }
    }

    fn check_size(&mut self) {
        if self.services.len() + self.nodes.len() > MAX_NOTED {
            self.note_all();
        }
    }

    fn note_task(&mut self, id: &str, state: &ClusterState) {
        if let Some(task) = state.tasks.get(id) {
            self.note_service(&task.service_id);
        }
    }

    /// What was noted, leaving nothing noted.
    pub fn take(&mut self) -> Touched {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_NOTED, Touched};
    use crate::cluster::{Availability, Command};
    use crate::orchestrator::fixture::{Sim, new_service, replicated};

    fn noted(commands: &[Command], sim: &Sim) -> Touched {
        let mut touched = Touched::default();
        for command in commands {
            touched.note(command, &sim.state);
        }
        touched
    }

    fn services(ids: &[&str]) -> Touched {
        Touched {
            services: ids.iter().map(|id| id.to_string()).collect(),
            ..Touched::default()
        }
    }

    #[test]
    fn services_tasks_and_nodes_are_noted_and_nothing_else() {
        let mut sim = Sim::new(2);
        sim.create("web", replicated("web", 1));
        sim.create("db", replicated("db", 1));
        sim.settle();
        let web_task = sim.current("web", 1).clone();

        // A service's record, its tasks (by the task's service, read from the state).
        let create = Command::CreateService(new_service("api", replicated("api", 1), 0));
        let report = Command::ReportTasks {
            node_id: web_task.node_id.clone(),
            reports: vec![(web_task.id.clone(), web_task.status.clone())],
        };
        let remove = Command::RemoveTasks(vec![sim.current("db", 1).id.clone()]);
        assert_eq!(
            noted(&[create, report, remove], &sim),
            services(&["api", "db", "web"])
        );
        // A task unknown to the state: nothing to pass.
        let unknown = Command::RemoveTasks(vec!["nope".into()]);
        assert_eq!(noted(&[unknown], &sim), Touched::default());

        // The nodes, by ID: the orchestrator finds the services concerned.
        let drain = Command::UpdateNode {
            id: "n2".into(),
            availability: Some(Availability::Drain),
            labels_add: Vec::new(),
            labels_rm: Vec::new(),
        };
        let role = Command::SetRole {
            id: "n1".into(),
            role: crate::cluster::Role::Worker,
        };
        let commands = [Command::RemoveService { id: "web".into() }, drain, role];
        let mut expected = services(&["web"]);
        expected.nodes = ["n1", "n2"].into_iter().map(String::from).collect();
        assert_eq!(noted(&commands, &sim), expected);

        // Neither: a node's key.
        let key = Command::SetNodeKey {
            id: "n1".into(),
            public_key: vec![1; 32],
        };
        assert_eq!(noted(&[key], &sim), Touched::default());
    }

    #[test]
    fn too_many_services_and_nodes_count_as_all_and_take_leaves_nothing() {
        let mut touched = Touched::default();
        for i in 0..MAX_NOTED {
            touched.note_service(&format!("s{i}"));
        }
        assert!(!touched.all);
        touched.note_node("n1");
        assert!(touched.all && touched.services.is_empty() && touched.nodes.is_empty());
        touched.note_node("n2");
        assert!(touched.nodes.is_empty(), "all stays all");
        touched.note_service("more");
        assert!(touched.services.is_empty(), "all stays all");
        assert!(touched.take().all);
        assert_eq!(touched, Touched::default());
    }
}
