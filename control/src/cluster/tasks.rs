//! The store's tasks by ID, with an index of them by node and by service, and what the tasks
//! on each node hold of it: the dispatcher answers each node's beat with that node's tasks,
//! and walking every task of the swarm for them (20,000 at 10,000 services) was most of a
//! beat's cost; the orchestrator passes over the services a change touched, with their tasks,
//! and places new ones by what each node holds.
//!
//! The indexes are kept by the only ways to change the tasks ([`Tasks::insert`],
//! [`Tasks::remove`], [`Tasks::retain`], [`Tasks::update`], [`Tasks::update_each`]), so they
//! cannot fall out of step; reads go to the map itself ([`Tasks`] derefs to it). They are not
//! stored: the tasks serialize as the map alone, as they always have, and the indexes are
//! built again when they are read.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    ops::Deref,
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    held::{Held, change_held},
    service::Task,
};

/// Tasks by task ID, current and history, indexed by node and by service.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    by_id: BTreeMap<String, Task>,
    /// The IDs of the tasks on each node (a task with no node yet is in no entry).
    by_node: Index,
    /// The IDs of each service's tasks.
    by_service: Index,
    /// What the tasks that occupy each node ([`Task::occupies_node`]) hold of it.
    usage: HashMap<String, NodeUsage>,
    /// The addresses the tasks hold on each network (a stopped task keeps its addresses while
    /// it is stored), by network ID.
    held: HashMap<String, Held>,
    /// Those the live tasks (not stopped) hold.
    live: HashMap<String, Held>,
    /// The last change to each node's tasks (see [`Tasks::changed_on`]).
    changes: HashMap<String, u64>,
}

/// Numbers for [`Tasks::changed_on`], one counter for the process: two copies of the tasks
/// changed apart never give a node the same number for different tasks.
static CHANGES: AtomicU64 = AtomicU64::new(1);

/// What the tasks that occupy a node hold of it: how many, and what they reserve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeUsage {
    pub tasks: usize,
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

impl NodeUsage {
    fn of(task: &Task) -> NodeUsage {
        let wants = &task.spec.resources;
        NodeUsage {
            tasks: 1,
            nano_cpus: wants.reserve_nano_cpus,
            memory_bytes: wants.reserve_memory_bytes,
        }
    }

    fn add(&mut self, other: NodeUsage) {
        self.tasks += other.tasks;
        self.nano_cpus = self.nano_cpus.saturating_add(other.nano_cpus);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
    }

    fn sub(&mut self, other: NodeUsage) {
        self.tasks = self.tasks.saturating_sub(other.tasks);
        self.nano_cpus = self.nano_cpus.saturating_sub(other.nano_cpus);
        self.memory_bytes = self.memory_bytes.saturating_sub(other.memory_bytes);
    }
}

/// Task IDs by a key.
type Index = HashMap<String, BTreeSet<String>>;

impl Tasks {
    /// Adds or replaces the task `id`; returns the one it replaced.
    pub fn insert(&mut self, id: String, task: Task) -> Option<Task> {
        let keys = Keys::of(&task);
        note_change(&mut self.changes, &task.node_id);
        let old = self.by_id.insert(id.clone(), task);
        if let Some(old) = &old {
            note_change(&mut self.changes, &old.node_id);
        }
        self.reindex(&id, old.as_ref().map(Keys::of), Some(keys));
        old
    }

    pub fn remove(&mut self, id: &str) -> Option<Task> {
        let old = self.by_id.remove(id)?;
        note_change(&mut self.changes, &old.node_id);
        self.reindex(id, Some(Keys::of(&old)), None);
        Some(old)
    }

    /// Keeps only the tasks `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &Task) -> bool) {
        let gone: Vec<String> = self
            .by_id
            .iter()
            .filter(|(id, task)| !keep(id, task))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }

    /// Changes the task `id` in place, if there is one; the index follows its node.
    pub fn update<T>(&mut self, id: &str, change: impl FnOnce(&mut Task) -> T) -> Option<T> {
        let task = self.by_id.get_mut(id)?;
        let before = Keys::of(task);
        let out = change(task);
        let after = Keys::of(task);
        for node in [&before.node, &after.node].into_iter().flatten() {
            note_change(&mut self.changes, node);
        }
        if after != before {
            self.reindex(id, Some(before), Some(after));
        }
        Some(out)
    }

    /// Changes every task in place; the indexes follow those whose node or service changed.
    pub fn update_each(&mut self, mut change: impl FnMut(&mut Task)) {
        let mut moved = Vec::new();
        for (id, task) in &mut self.by_id {
            let before = Keys::of(task);
            change(task);
            let after = Keys::of(task);
            for node in [&before.node, &after.node].into_iter().flatten() {
                note_change(&mut self.changes, node);
            }
            if after != before {
                moved.push((id.clone(), before, after));
            }
        }
        for (id, before, after) in moved {
            self.reindex(&id, Some(before), Some(after));
        }
    }

    /// The tasks on `node_id` (any state), in ID order.
    pub fn on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.indexed(&self.by_node, node_id)
    }

    /// The tasks of `service_id` (any state), in ID order.
    pub fn of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.indexed(&self.by_service, service_id)
    }

    /// A number that changes whenever a task on `node_id` changes, comes or goes (0: none
    /// ever did in this copy of the tasks), and that no other node's tasks, nor another copy
    /// of these changed since, had in this process: a node whose number is the one it had
    /// has the same tasks. The leader skips sending the unchanged assignments by it.
    pub fn changed_on(&self, node_id: &str) -> u64 {
        self.changes.get(node_id).copied().unwrap_or(0)
    }

    /// What the tasks that occupy `node_id` hold of it.
    pub fn usage_of(&self, node_id: &str) -> NodeUsage {
        self.usage.get(node_id).copied().unwrap_or_default()
    }

    /// The addresses (as `u32`) the stored tasks hold on `network_id`.
    pub fn held_on(&self, network_id: &str) -> &Held {
        self.held.get(network_id).unwrap_or(Held::empty())
    }

    /// The addresses the live tasks (not stopped) hold on `network_id`.
    pub fn live_on(&self, network_id: &str) -> &Held {
        self.live.get(network_id).unwrap_or(Held::empty())
    }

    fn indexed<'a>(&'a self, index: &'a Index, key: &str) -> impl Iterator<Item = &'a Task> + 'a {
        index
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    /// Moves task `id` in the indexes from where `before` put it to where `after` does.
    fn reindex(&mut self, id: &str, before: Option<Keys>, after: Option<Keys>) {
        let before = before.unwrap_or_default();
        let after = after.unwrap_or_default();
        move_in(&mut self.by_node, id, before.node, after.node);
        move_in(&mut self.by_service, id, before.service, after.service);
        if before.addresses != after.addresses {
            for (add, addresses) in [(false, before.addresses), (true, after.addresses)] {
                for (network, ip, live) in addresses {
                    let ip = u32::from(ip);
                    if live {
                        change_held(&mut self.live, network.clone(), ip, add);
                    }
                    change_held(&mut self.held, network, ip, add);
                }
            }
        }
        if before.usage != after.usage {
            if let Some((node, usage)) = before.usage
                && let Some(held) = self.usage.get_mut(&node)
            {
                held.sub(usage);
                if held.tasks == 0 {
                    self.usage.remove(&node);
                }
            }
            if let Some((node, usage)) = after.usage {
                self.usage.entry(node).or_default().add(usage);
            }
        }
    }
}

/// Where a task is indexed: its node (none while it has none), its service, what it holds of
/// its node if it occupies it, and its addresses (network, address, whether it is live).
#[derive(Default, PartialEq, Eq)]
struct Keys {
    node: Option<String>,
    service: Option<String>,
    usage: Option<(String, NodeUsage)>,
    addresses: Vec<(String, Ipv4Addr, bool)>,
}

impl Keys {
    fn of(task: &Task) -> Keys {
        let key = |k: &str| (!k.is_empty()).then(|| k.to_string());
        Keys {
            node: key(&task.node_id),
            service: key(&task.service_id),
            usage: task
                .occupies_node()
                .then(|| (task.node_id.clone(), NodeUsage::of(task))),
            addresses: task
                .networks
                .iter()
                .map(|a| {
                    let live = !task.status.state.is_terminal();
                    (a.network.id.clone(), a.addr.addr(), live)
                })
                .collect(),
        }
    }
}

/// Gives `node_id` (none: no node) a new number in `changes`.
fn note_change(changes: &mut HashMap<String, u64>, node_id: &str) {
    if node_id.is_empty() {
        return;
    }
    let next = CHANGES.fetch_add(1, Ordering::Relaxed);
    match changes.get_mut(node_id) {
        Some(n) => *n = next,
        None => {
            changes.insert(node_id.to_string(), next);
        }
    }
}

/// Moves `id` in `index` from the entry `from` to the entry `to` (either may be none).
fn move_in(index: &mut Index, id: &str, from: Option<String>, to: Option<String>) {
    if from == to {
        return;
    }
    if let Some(from) = from
        && let Some(ids) = index.get_mut(&from)
    {
        ids.remove(id);
        if ids.is_empty() {
            index.remove(&from);
        }
    }
    if let Some(to) = to {
        index.entry(to).or_default().insert(id.to_string());
    }
}

impl Deref for Tasks {
    type Target = BTreeMap<String, Task>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

/// Equal when they hold the same tasks (the index follows from them).
impl PartialEq for Tasks {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id
    }
}

impl Eq for Tasks {}

impl FromIterator<(String, Task)> for Tasks {
    fn from_iter<I: IntoIterator<Item = (String, Task)>>(tasks: I) -> Self {
        let mut all = Tasks::default();
        for (id, task) in tasks {
            all.insert(id, task);
        }
        all
    }
}

impl<'a> IntoIterator for &'a Tasks {
    type Item = (&'a String, &'a Task);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Task>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_id.iter()
    }
}

/// As the map: the stored form is what it was before the index.
impl Serialize for Tasks {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_id.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tasks {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, Task>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use std::net::Ipv4Addr;

    use super::{NodeUsage, Tasks};
    use crate::cluster::{NetworkAttachment, Task, TaskState, network::Network};
    use crate::orchestrator::fixture::{replicated, status};

    fn task(id: &str, node: &str) -> Task {
        let mut spec = replicated("web", 1);
        spec.resources.reserve_nano_cpus = 1_000 * id.len() as u64;
        spec.resources.reserve_memory_bytes = 7;
        Task {
            id: id.into(),
            service_id: format!("s{}", id.len() % 3),
            slot: 1,
            node_id: node.into(),
            service_version: 1,
            spec,
            networks: Vec::new(),
            desired_state: TaskState::Running,
            status: status(TaskState::Assigned, 0),
            created_at_ms: 0,
        }
    }

    /// An attachment to network `net` with address 10.0.0.`last`.
    fn attachment(net: u64, last: u64) -> NetworkAttachment {
        NetworkAttachment {
            network: Network {
                id: format!("net{net}"),
                name: format!("net{net}"),
                driver: "overlay".into(),
                subnet: "10.0.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 0, 0, 1),
                vni: 4097,
                attachable: false,
                internal: false,
                ingress: false,
                created_at_ms: 0,
                labels: Default::default(),
                options: Default::default(),
            },
            addr: format!("10.0.0.{last}/24").parse().unwrap(),
            vip: None,
        }
    }

    fn on(tasks: &Tasks, node: &str) -> Vec<String> {
        tasks.on_node(node).map(|t| t.id.clone()).collect()
    }

    /// The indexes and the usage are what a walk of every task gives.
    fn check(tasks: &Tasks) {
        let mut nodes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut services: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut usage: BTreeMap<&str, NodeUsage> = BTreeMap::new();
        for task in tasks.values() {
            if !task.node_id.is_empty() {
                nodes
                    .entry(&task.node_id)
                    .or_default()
                    .push(task.id.clone());
            }
            services
                .entry(&task.service_id)
                .or_default()
                .push(task.id.clone());
            if task.occupies_node() {
                let held = usage.entry(&task.node_id).or_default();
                held.tasks += 1;
                held.nano_cpus += task.spec.resources.reserve_nano_cpus;
                held.memory_bytes += task.spec.resources.reserve_memory_bytes;
            }
        }
        for (node, ids) in &nodes {
            assert_eq!(&on(tasks, node), ids, "node {node}");
        }
        for (service, ids) in &services {
            let of: Vec<String> = tasks.of_service(service).map(|t| t.id.clone()).collect();
            assert_eq!(&of, ids, "service {service}");
        }
        for (node, held) in &usage {
            assert_eq!(tasks.usage_of(node), *held, "node {node}");
        }
        assert_eq!(tasks.by_node.len(), nodes.len(), "{:?}", tasks.by_node);
        assert_eq!(tasks.by_service.len(), services.len());
        assert_eq!(tasks.usage.len(), usage.len(), "{:?}", tasks.usage);
        // Address -> (stored tasks holding it, live ones).
        let mut addresses: BTreeMap<(String, Ipv4Addr), (usize, usize)> = BTreeMap::new();
        for task in tasks.values() {
            for a in &task.networks {
                let used = addresses
                    .entry((a.network.id.clone(), a.addr.addr()))
                    .or_default();
                used.0 += 1;
                used.1 += usize::from(!task.status.state.is_terminal());
            }
        }
        for ((network, ip), used) in &addresses {
            let ip32 = u32::from(*ip);
            let indexed = (
                tasks.held_on(network).holders(ip32),
                tasks.live_on(network).holders(ip32),
            );
            assert_eq!(indexed, *used, "{network} {ip}");
        }
        // Nothing else is held: a network's entry goes with its last address.
        let networks = |held: &std::collections::HashMap<String, super::Held>| {
            held.keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
        };
        let expected: std::collections::BTreeSet<String> =
            addresses.keys().map(|(n, _)| n.clone()).collect();
        assert_eq!(networks(&tasks.held), expected);
        for network in &expected {
            let subnet = u32::from(Ipv4Addr::new(10, 0, 0, 0));
            let held = tasks.held_on(network);
            let free = super::super::held::lowest_free(subnet..=subnet + 255, &[held]);
            let first = (subnet..=subnet + 255)
                .find(|n| !addresses.contains_key(&(network.clone(), Ipv4Addr::from(*n))));
            assert_eq!(free, first, "{network}");
        }
    }

    #[test]
    fn the_node_index_follows_every_change() {
        let mut tasks = Tasks::default();
        let mut seed: u64 = 42;
        let mut random = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let nodes = ["", "n1", "n2", "n3"];
        for _ in 0..2_000 {
            let before = on_each_node(&tasks);
            let id = format!("t{}", random(40));
            let node = nodes[random(4) as usize];
            match random(5) {
                0 | 1 => {
                    tasks.insert(id.clone(), task(&id, node));
                }
                2 => {
                    tasks.remove(&id);
                }
                3 => {
                    let states = [TaskState::Pending, TaskState::Running, TaskState::Failed];
                    let state = states[random(3) as usize];
                    let desired = states[random(2) as usize + 1];
                    let networks: Vec<NetworkAttachment> = (0..random(3))
                        .map(|_| attachment(random(2), random(6)))
                        .collect();
                    tasks.update(&id, |t| {
                        t.node_id = node.to_string();
                        if random(3) == 0 {
                            t.service_id = format!("s{}", random(3));
                        }
                        t.status.state = state;
                        t.desired_state = desired;
                        if !networks.is_empty() {
                            t.networks = networks;
                        }
                    });
                }
                4 if random(4) == 0 => {
                    let from = nodes[random(4) as usize];
                    tasks.update_each(|t| {
                        if t.node_id == from {
                            t.node_id = node.to_string();
                        }
                    });
                }
                _ => {
                    let gone = nodes[random(4) as usize];
                    tasks.retain(|_, t| t.node_id != gone || random(2) == 0);
                }
            }
            check(&tasks);
            // A node whose number is the one it had has the same tasks.
            for (node, (number, had)) in &before {
                if tasks.changed_on(node) == *number {
                    assert_eq!(&on_each_node(&tasks)[node].1, had, "{node}");
                }
            }
        }
        assert!(!tasks.is_empty());
        // Two copies changed apart never share a number for different tasks.
        let mut copy = tasks.clone();
        let (id, task) = copy.iter().find(|(_, t)| !t.node_id.is_empty()).unwrap();
        let (id, node) = (id.clone(), task.node_id.clone());
        assert_eq!(copy.changed_on(&node), tasks.changed_on(&node));
        copy.update(&id, |t| t.status.state = TaskState::Failed);
        tasks.update(&id, |t| t.status.state = TaskState::Complete);
        assert_ne!(copy.changed_on(&node), tasks.changed_on(&node));
    }

    /// Each node's number and tasks.
    fn on_each_node(tasks: &Tasks) -> BTreeMap<String, (u64, Vec<Task>)> {
        ["n1", "n2", "n3"]
            .into_iter()
            .map(|node| {
                let on: Vec<Task> = tasks.on_node(node).cloned().collect();
                (node.to_string(), (tasks.changed_on(node), on))
            })
            .collect()
    }

    #[test]
    fn stored_as_the_map_alone_and_indexed_again_when_read() {
        let tasks: Tasks = [("a", "n1"), ("b", "n2"), ("c", "n1"), ("d", "")]
            .into_iter()
            .map(|(id, node)| (id.to_string(), task(id, node)))
            .collect();
        let map: BTreeMap<String, Task> =
            tasks.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let encoded = crate::format::to_cbor(&tasks).unwrap();
        assert_eq!(encoded, crate::format::to_cbor(&map).unwrap());
        let read: Tasks = crate::format::from_cbor(&encoded).unwrap();
        assert_eq!(read, tasks);
        assert_eq!(on(&read, "n1"), ["a", "c"]);
        assert_eq!(on(&read, "n2"), ["b"]);
        check(&read);
    }
}
