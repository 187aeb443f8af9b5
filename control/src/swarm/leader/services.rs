//! What the leader does for the service API: create, update (and roll back), remove, list
//! services and tasks. Placement and rollout are the orchestrator's job; these calls only
//! write the desired state.

use tonic::Status;

use super::{
    Active, ManagerRole, Swarm,
    convert::{service_to_api, spec_from_api, task_to_api},
    lifecycle::heartbeat_period,
    manager::{on_leader, resolve_node},
};
use crate::{
    api::{
        Empty, ListServicesResponse, ListTasksRequest, ListTasksResponse, ServiceInfo, ServiceRef,
        ServiceSpec as ApiServiceSpec, UpdateServiceRequest,
    },
    cluster::{Availability, ClusterState, Command, Service, UpdateState, UpdateStatus},
    identity::NodeId,
    orchestrator::{same_task_spec, satisfies},
};

impl Swarm {
    pub async fn create_service(&self, spec: ApiServiceSpec) -> Result<ServiceInfo, Status> {
        on_leader!(self, _active, manager, spec, create_service);
        let state = manager.state();
        let spec = spec_from_api(&spec, &state)?;
        if state.services.values().any(|s| s.spec.name == spec.name) {
            return Err(Status::already_exists(format!(
                "service {} already exists",
                spec.name
            )));
        }
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
        self.propose(manager, Command::CreateService(service.clone()))
            .await?;
        // As stored: the apply allocated the VIPs.
        let service = manager
            .state()
            .services
            .get(&service.id)
            .cloned()
            .unwrap_or(service);
        Ok(self.service_info(&_active, manager, &service))
    }

    pub async fn update_service(
        &self,
        request: UpdateServiceRequest,
    ) -> Result<ServiceInfo, Status> {
        on_leader!(self, _active, manager, request, update_service);
        let state = manager.state();
        let mut service = resolve_service(&state, &request.service)?.clone();
        let new_spec = if request.rollback {
            service.previous_spec.clone().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "service {} has no previous spec to roll back to",
                    service.spec.name
                ))
            })?
        } else {
            let spec = request
                .spec
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("service update needs a spec"))?;
            let spec = spec_from_api(spec, &state)?;
            if spec.name != service.spec.name {
                return Err(Status::invalid_argument("a service cannot be renamed"));
            }
            spec
        };
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
            self.propose(manager, Command::UpdateService(service.clone()))
                .await?;
            if !template_changed {
                // A scale or an update-policy change restarts nothing, as in Docker: the live
                // tasks simply carry the new version.
                let retagged: Vec<_> = state
                    .tasks
                    .values()
                    .filter(|t| t.service_id == service.id && !t.status.state.is_terminal())
                    .map(|t| {
                        let mut t = t.clone();
                        t.service_version = service.version;
                        t.spec = service.spec.clone();
                        t
                    })
                    .collect();
                if !retagged.is_empty() {
                    self.propose(manager, Command::PutTasks(retagged)).await?;
                }
            }
        }
        // As stored: the apply keeps or allocates the VIPs.
        let service = manager
            .state()
            .services
            .get(&service.id)
            .cloned()
            .unwrap_or(service);
        Ok(self.service_info(&_active, manager, &service))
    }

    pub async fn remove_service(&self, request: ServiceRef) -> Result<Empty, Status> {
        on_leader!(self, _active, manager, request, remove_service);
        let state = manager.state();
        let id = resolve_service(&state, &request.service)?.id.clone();
        self.propose(manager, Command::RemoveService { id }).await?;
        Ok(Empty {})
    }

    pub async fn list_services(&self) -> Result<ListServicesResponse, Status> {
        on_leader!(self, _active, manager, Empty {}, list_services);
        let state = manager.state();
        Ok(ListServicesResponse {
            services: state
                .services
                .values()
                .map(|s| self.service_info(&_active, manager, s))
                .collect(),
        })
    }

    /// A service as the API shows it, with its global task count from node eligibility.
    fn service_info(
        &self,
        active: &Active,
        manager: &ManagerRole,
        service: &Service,
    ) -> ServiceInfo {
        let state = manager.state();
        let period = heartbeat_period(&state);
        let eligible = state
            .nodes
            .values()
            .filter(|n| n.availability == Availability::Active)
            .filter(|n| satisfies(n, &service.spec.constraints))
            .filter(|n| n.id == self.node_id() || !active.liveness.is_down(&n.id, period))
            .count() as u64;
        service_to_api(service, &state, eligible)
    }

    pub async fn list_tasks(&self, request: ListTasksRequest) -> Result<ListTasksResponse, Status> {
        on_leader!(self, _active, manager, request, list_tasks);
        let state = manager.state();
        let service = match request.service.as_str() {
            "" => None,
            s => Some(resolve_service(&state, s)?.id.clone()),
        };
        let node = match request.node.as_str() {
            "" => None,
            n => Some(resolve_node(&state, n)?.id.clone()),
        };
        let mut tasks: Vec<_> = state
            .tasks
            .values()
            .filter(|t| service.as_ref().is_none_or(|s| t.service_id == *s))
            .filter(|t| node.as_ref().is_none_or(|n| t.node_id == *n))
            .map(|t| task_to_api(t, &state))
            .collect();
        tasks.sort_by(|a, b| {
            (
                &a.service_name,
                a.slot,
                &a.node_id,
                std::cmp::Reverse(a.created_at_ms),
            )
                .cmp(&(
                    &b.service_name,
                    b.slot,
                    &b.node_id,
                    std::cmp::Reverse(b.created_at_ms),
                ))
        });
        Ok(ListTasksResponse { tasks })
    }
}

/// Finds a service by ID, name, or unique ID prefix.
pub(super) fn resolve_service<'a>(
    state: &'a ClusterState,
    reference: &str,
) -> Result<&'a Service, Status> {
    if let Some(service) = state.services.get(reference) {
        return Ok(service);
    }
    if let Some(service) = state.services.values().find(|s| s.spec.name == reference) {
        return Ok(service);
    }
    let matches: Vec<&Service> = state
        .services
        .values()
        .filter(|s| !reference.is_empty() && s.id.starts_with(reference))
        .collect();
    match matches.as_slice() {
        [service] => Ok(service),
        [] => Err(Status::not_found(format!("service {reference} not found"))),
        _ => Err(Status::failed_precondition(format!(
            "service {reference} is ambiguous ({} matches)",
            matches.len()
        ))),
    }
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
