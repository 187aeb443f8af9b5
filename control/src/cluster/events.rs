//! [`Event`]: what an applied [`Command`] changed, in Docker's words for swarm events (moby
//! `daemon/cluster/convert` and swarmkit's watch events): an object type, an action, the
//! object's ID and attributes (its `name`, and for updates what changed).
//!
//! Derived from the command and the state *before* it applies (a removed object's name is
//! only there), and kept only when the command applied: a rejected one changed nothing.

use super::{ClusterState, Command, Service, ServiceMode, objects::ObjectCommand};

/// One change to a swarm object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// "service", "node", "network", "secret" or "config".
    pub kind: &'static str,
    /// "create", "update" or "remove".
    pub action: &'static str,
    pub id: String,
    /// Docker's `Actor.Attributes`, `name` first.
    pub attributes: Vec<(String, String)>,
    /// When this manager applied it (unix time, nanoseconds).
    pub time_unix_nanos: i64,
}

impl Event {
    fn new(kind: &'static str, action: &'static str, id: &str, name: &str) -> Event {
        Event {
            kind,
            action,
            id: id.to_string(),
            attributes: vec![("name".to_string(), name.to_string())],
            time_unix_nanos: 0,
        }
    }

    fn with(mut self, key: &str, value: &str) -> Event {
        self.attributes.push((key.to_string(), value.to_string()));
        self
    }
}

/// The events `command` makes when it applies to `before`. Commands that change no object
/// Docker reports (tasks, keys, certificates) make none.
pub fn of(command: &Command, before: &ClusterState) -> Vec<Event> {
    let node_name = |id: &str| before.nodes.get(id).map(|n| n.hostname.clone());
    let event = match command {
        Command::Init { node, .. } | Command::AddNode(node) => {
            Event::new("node", "create", &node.id, &node.hostname)
        }
        Command::UpdateNode {
            id, availability, ..
        } => {
            let Some(name) = node_name(id) else {
                return Vec::new();
            };
            let event = Event::new("node", "update", id, &name);
            match availability {
                Some(a) if before.nodes.get(id).map(|n| n.availability) != Some(*a) => {
                    event.with("availability.new", a.as_str())
                }
                _ => event,
            }
        }
        Command::SetRole { id, role } => match node_name(id) {
            Some(name) => Event::new("node", "update", id, &name).with("role.new", role.as_str()),
            None => return Vec::new(),
        },
        Command::RemoveNode { id, .. } => match node_name(id) {
            Some(name) => Event::new("node", "remove", id, &name),
            None => return Vec::new(),
        },
        Command::CreateService(service) => {
            Event::new("service", "create", &service.id, &service.spec.name)
        }
        Command::UpdateService(service) => service_update(service, before),
        Command::RemoveService { id } => match before.services.get(id) {
            Some(service) => Event::new("service", "remove", id, &service.spec.name),
            None => return Vec::new(),
        },
        Command::CreateNetwork(network) => {
            Event::new("network", "create", &network.id, &network.name)
                .with("type", &network.driver)
        }
        Command::RemoveNetwork { id } => match before.networks.get(id) {
            Some(network) => {
                Event::new("network", "remove", id, &network.name).with("type", &network.driver)
            }
            None => return Vec::new(),
        },
        Command::Objects(ObjectCommand::Create { kind, object }) => {
            Event::new(kind.as_str(), "create", &object.id, &object.name)
        }
        Command::Objects(ObjectCommand::Remove { kind, id }) => {
            match before.objects(*kind).get(id) {
                Some(object) => Event::new(kind.as_str(), "remove", id, &object.name),
                None => return Vec::new(),
            }
        }
        Command::Objects(ObjectCommand::Update { kind, id, .. }) => {
            match before.objects(*kind).get(id) {
                Some(object) => Event::new(kind.as_str(), "update", id, &object.name),
                None => return Vec::new(),
            }
        }
        _ => return Vec::new(),
    };
    vec![event]
}

/// A service update, with what changed as dockerd's `logServiceEvent` names it: the
/// replicas, the rolling update's state, the program (Docker's image).
fn service_update(service: &Service, before: &ClusterState) -> Event {
    let mut event = Event::new("service", "update", &service.id, &service.spec.name);
    let Some(old) = before.services.get(&service.id) else {
        return event;
    };
    if let (ServiceMode::Replicated { replicas: was }, ServiceMode::Replicated { replicas: now }) =
        (&old.spec.mode, &service.spec.mode)
        && was != now
    {
        event = event
            .with("replicas.old", &was.to_string())
            .with("replicas.new", &now.to_string());
    }
    let state = |s: &Service| s.update_status.as_ref().map(|u| u.state.as_str());
    match (state(old), state(service)) {
        (None, Some(new)) => event = event.with("updatestate.new", new),
        (Some(was), Some(new)) if was != new => {
            event = event
                .with("updatestate.old", was)
                .with("updatestate.new", new);
        }
        _ => {}
    }
    let program = |s: &Service| s.spec.command.first().cloned().unwrap_or_default();
    if program(old) != program(service) {
        event = event
            .with("image.old", &program(old))
            .with("image.new", &program(service));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::fixture;

    #[test]
    fn a_removed_services_name_comes_from_before() {
        let mut state = ClusterState::default();
        let service = fixture::new_service("s1", fixture::replicated("web", 2), 0);
        let created = of(&Command::CreateService(service.clone()), &state);
        assert_eq!(created[0].action, "create");
        assert_eq!(created[0].attributes, [("name".into(), "web".into())]);
        state.services.insert(service.id.clone(), service.clone());
        let mut scaled = service.clone();
        scaled.spec.mode = ServiceMode::Replicated { replicas: 3 };
        let updated = of(&Command::UpdateService(scaled), &state);
        assert_eq!(
            updated[0].attributes[1..],
            [
                ("replicas.old".to_string(), "2".to_string()),
                ("replicas.new".to_string(), "3".to_string())
            ]
        );
        let removed = of(
            &Command::RemoveService {
                id: service.id.clone(),
            },
            &state,
        );
        assert_eq!((removed[0].kind, removed[0].action), ("service", "remove"));
        assert_eq!(removed[0].attributes[0].1, "web");
        assert!(of(&Command::RemoveService { id: "nope".into() }, &state).is_empty());
    }
}
