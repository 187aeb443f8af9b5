//! What the leader does for the service API: create, update (and roll back), remove, list
//! services and tasks. Placement and rollout are the orchestrator's job; these calls only
//! write the desired state.

use super::{Leader, heartbeat_period};
use crate::{
    api::{
        Empty, ListServicesResponse, ListTasksRequest, ListTasksResponse, ServiceInfo, ServiceRef,
        ServiceSpec as ApiServiceSpec, TaskInfo, UpdateServiceRequest,
    },
    clock::now_ms,
    cluster::{
        Availability, ClusterState, Command, Service, ServiceMode, Task, UpdateState, UpdateStatus,
    },
    identity::NodeId,
    orchestrator::{same_task_spec, satisfies},
    swarm::{
        convert::{service_to_api, spec_from_api, task_to_api},
        error::Error,
        lookup::{resolve_node, resolve_service},
    },
};

impl Leader {
    // The state is read in place under the store's read lock, never copied (a copy is tens of
    // milliseconds at 10,000 services), and never across an await.

    pub async fn create_service(&self, spec: ApiServiceSpec) -> Result<ServiceInfo, Error> {
        let spec = self.read(|state| {
            let spec = spec_from_api(&spec, state)?;
            if state.services.named(&spec.name).is_some() {
                return Err(Error::exists(format!(
                    "service {} already exists",
                    spec.name
                )));
            }
            Ok(spec)
        })?;
        let now = now_ms();
        let service = Service {
            id: NodeId::generate().to_string(),
            spec,
            version: 1,
            previous_spec: None,
            update_status: None,
            virtual_ips: Vec::new(),
            endpoint_ports: Vec::new(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.propose(Command::CreateService(service.clone()))
            .await?;
        Ok(self.stored_service_info(service))
    }

    /// `service` as stored (the apply allocated or kept its VIPs and ports), as the API shows
    /// it; `service` itself if it is gone meanwhile.
    fn stored_service_info(&self, service: Service) -> ServiceInfo {
        self.read(|state| {
            let stored = state.services.get(&service.id).unwrap_or(&service);
            self.service_info(state, stored)
        })
    }

    pub async fn update_service(
        &self,
        request: UpdateServiceRequest,
    ) -> Result<ServiceInfo, Error> {
        let (mut service, new_spec) = self.read(|state| {
            let service = resolve_service(state, &request.service)?.clone();
            let new_spec = updated_spec(state, &service, &request)?;
            Ok::<_, Error>((service, new_spec))
        })?;
        if new_spec != service.spec {
            let template_changed = !same_task_spec(&service.spec, &new_spec);
            service.previous_spec = Some(std::mem::replace(&mut service.spec, new_spec));
            service.version += 1;
            service.updated_at_ms = now_ms();
            if request.rollback {
                // A requested rollback rolls out with the rollback settings, as in Docker.
                service.update_status = Some(UpdateStatus {
                    state: UpdateState::RollbackStarted,
                    message: "manually requested rollback".to_string(),
                    started_at_ms: service.updated_at_ms,
                });
            } else if template_changed {
                // The orchestrator starts the rolling update when it sees the new version.
                service.update_status = None;
            }
            self.propose(Command::UpdateService(service.clone()))
                .await?;
            if !template_changed {
                // A scale or an update-policy change restarts nothing, as in Docker: the live
                // tasks simply carry the new version.
                let retagged: Vec<_> = self.read(|state| {
                    state
                        .tasks
                        .of_service(&service.id)
                        .filter(|t| !t.status.state.is_terminal())
                        .map(|t| {
                            let mut t = t.clone();
                            t.service_version = service.version;
                            t.spec = service.spec.clone();
                            t
                        })
                        .collect()
                });
                if !retagged.is_empty() {
                    self.propose(Command::PutTasks(retagged)).await?;
                }
            }
        }
        Ok(self.stored_service_info(service))
    }

    pub async fn remove_service(&self, request: ServiceRef) -> Result<Empty, Error> {
        let id = self
            .read(|state| Ok::<_, Error>(resolve_service(state, &request.service)?.id.clone()))?;
        self.propose(Command::RemoveService { id }).await?;
        Ok(Empty {})
    }

    pub async fn list_services(&self, _: Empty) -> Result<ListServicesResponse, Error> {
        Ok(self.read(|state| ListServicesResponse {
            services: state
                .services
                .values()
                .map(|s| self.service_info(state, s))
                .collect(),
        }))
    }

    /// A service as the API shows it; a global one with its task count from node eligibility.
    fn service_info(&self, state: &ClusterState, service: &Service) -> ServiceInfo {
        let eligible = match service.spec.mode {
            ServiceMode::Replicated { .. } => 0,
            ServiceMode::Global => {
                let period = heartbeat_period(state);
                let up =
                    |id: &str| id == self.node_id() || !self.active.liveness.is_down(id, period);
                state
                    .nodes
                    .values()
                    .filter(|n| n.availability == Availability::Active)
                    .filter(|n| satisfies(n, &service.spec.constraints))
                    .filter(|n| up(&n.id))
                    .count() as u64
            }
        };
        service_to_api(service, state, eligible)
    }

    pub async fn list_tasks(&self, request: ListTasksRequest) -> Result<ListTasksResponse, Error> {
        let mut tasks = self.read(|state| {
            let service = match request.service.as_str() {
                "" => None,
                s => Some(resolve_service(state, s)?.id.clone()),
            };
            let node = match request.node.as_str() {
                "" => None,
                n => Some(resolve_node(state, n)?.id.clone()),
            };
            // From the store's index when a service or node is named, not a walk of every task.
            let tasks: Box<dyn Iterator<Item = &Task>> = match (&service, &node) {
                (Some(service), _) => Box::new(state.tasks.of_service(service)),
                (None, Some(node)) => Box::new(state.tasks.on_node(node)),
                (None, None) => Box::new(state.tasks.values()),
            };
            Ok::<_, Error>(
                tasks
                    .filter(|t| node.as_ref().is_none_or(|n| t.node_id == *n))
                    .map(|t| task_to_api(t, state))
                    .collect::<Vec<_>>(),
            )
        })?;
        tasks.sort_by(task_rows_order);
        Ok(ListTasksResponse { tasks })
    }
}

/// The spec `request` asks `service` to have: its previous one for a rollback, else the
/// request's (a service keeps its name).
fn updated_spec(
    state: &ClusterState,
    service: &Service,
    request: &UpdateServiceRequest,
) -> Result<crate::cluster::ServiceSpec, Error> {
    if request.rollback {
        return service.previous_spec.clone().ok_or_else(|| {
            Error::refused(format!(
                "service {} has no previous spec to roll back to",
                service.spec.name
            ))
        });
    }
    let spec = request
        .spec
        .as_ref()
        .ok_or_else(|| Error::invalid("service update needs a spec"))?;
    let spec = spec_from_api(spec, state)?;
    if spec.name != service.spec.name {
        return Err(Error::invalid("a service cannot be renamed"));
    }
    Ok(spec)
}

/// The order `service ps` shows tasks in, as Docker does: by service, then by slot (replicated)
/// or node (global), newest first within each, so a slot's current task heads its history rows.
/// The node is no key of a replicated slot: a replacement on another node is the same slot.
fn task_rows_order(a: &TaskInfo, b: &TaskInfo) -> std::cmp::Ordering {
    let key = |t: &TaskInfo| {
        // Global tasks have no slot (0); their node is their slot.
        let node = if t.slot == 0 {
            t.node_id.clone()
        } else {
            String::new()
        };
        (
            t.service_name.clone(),
            t.slot,
            node,
            std::cmp::Reverse(t.created_at_ms),
        )
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(slot: u64, node_id: &str, created_at_ms: u64, state: &str) -> TaskInfo {
        TaskInfo {
            id: format!("{node_id}-{created_at_ms}"),
            service_name: "web".into(),
            slot,
            node_id: node_id.into(),
            created_at_ms,
            state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_drained_slots_replacement_heads_its_rows_whatever_the_node_ids() {
        // Slot 1 ran on node "zz" (drained, shut down) and now runs on "aa"; slot 2 the
        // other way round. Each slot shows its running task first, the old one under it.
        let mut tasks = [
            task(1, "zz", 100, "shutdown"),
            task(2, "aa", 100, "shutdown"),
            task(1, "aa", 200, "running"),
            task(2, "zz", 200, "running"),
        ];
        tasks.sort_by(task_rows_order);
        let rows: Vec<(u64, &str, &str)> = tasks
            .iter()
            .map(|t| (t.slot, t.node_id.as_str(), t.state.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                (1, "aa", "running"),
                (1, "zz", "shutdown"),
                (2, "zz", "running"),
                (2, "aa", "shutdown"),
            ]
        );
    }

    #[test]
    fn global_tasks_are_grouped_by_node_newest_first() {
        let mut tasks = [
            task(0, "bb", 100, "shutdown"),
            task(0, "aa", 100, "running"),
            task(0, "bb", 200, "running"),
        ];
        tasks.sort_by(task_rows_order);
        let rows: Vec<(&str, u64)> = tasks
            .iter()
            .map(|t| (t.node_id.as_str(), t.created_at_ms))
            .collect();
        assert_eq!(rows, [("aa", 100), ("bb", 200), ("bb", 100)]);
    }
}
