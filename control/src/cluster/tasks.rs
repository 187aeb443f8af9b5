//! The store's tasks by ID, with an index of them by node: the dispatcher answers each node's
//! beat with that node's tasks, and walking every task of the swarm for them (20,000 at
//! 10,000 services) was most of a beat's cost.
//!
//! The index is kept by the only ways to change the tasks ([`Tasks::insert`],
//! [`Tasks::remove`], [`Tasks::retain`], [`Tasks::update`]), so it cannot fall out of step;
//! reads go to the map itself ([`Tasks`] derefs to it). It is not stored: the tasks serialize
//! as the map alone, as they always have, and the index is built again when they are read.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Deref,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::service::Task;

/// Tasks by task ID, current and history, indexed by node.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    by_id: BTreeMap<String, Task>,
    /// The IDs of the tasks on each node (a task with no node yet is in no entry).
    by_node: HashMap<String, BTreeSet<String>>,
}

impl Tasks {
    /// Adds or replaces the task `id`; returns the one it replaced.
    pub fn insert(&mut self, id: String, task: Task) -> Option<Task> {
        self.index(&id, &task.node_id);
        let old = self.by_id.insert(id.clone(), task);
        if let Some(old) = &old {
            self.unindex_if_moved(&id, &old.node_id);
        }
        old
    }

    pub fn remove(&mut self, id: &str) -> Option<Task> {
        let old = self.by_id.remove(id)?;
        self.unindex(id, &old.node_id);
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
        let node_before = task.node_id.clone();
        let out = change(task);
        let node_after = task.node_id.clone();
        if node_after != node_before {
            self.index(id, &node_after);
            self.unindex(id, &node_before);
        }
        Some(out)
    }

    /// Changes every task in place; the index follows those that moved.
    pub fn update_each(&mut self, mut change: impl FnMut(&mut Task)) {
        let mut moved = Vec::new();
        for (id, task) in &mut self.by_id {
            let node_before = task.node_id.clone();
            change(task);
            if task.node_id != node_before {
                moved.push((id.clone(), node_before, task.node_id.clone()));
            }
        }
        for (id, before, after) in moved {
            self.index(&id, &after);
            self.unindex(&id, &before);
        }
    }

    /// The tasks on `node_id` (any state), in ID order.
    pub fn on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    fn index(&mut self, id: &str, node_id: &str) {
        if !node_id.is_empty() {
            self.by_node
                .entry(node_id.to_string())
                .or_default()
                .insert(id.to_string());
        }
    }

    fn unindex(&mut self, id: &str, node_id: &str) {
        if let Some(ids) = self.by_node.get_mut(node_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_node.remove(node_id);
            }
        }
    }

    /// After `id` was replaced: out of its old node's entry unless it is still on that node.
    fn unindex_if_moved(&mut self, id: &str, old_node: &str) {
        if self.by_id.get(id).is_none_or(|now| now.node_id != old_node) {
            self.unindex(id, old_node);
        }
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

    use super::Tasks;
    use crate::cluster::{Task, TaskState};
    use crate::orchestrator::fixture::{replicated, status};

    fn task(id: &str, node: &str) -> Task {
        Task {
            id: id.into(),
            service_id: "web".into(),
            slot: 1,
            node_id: node.into(),
            service_version: 1,
            spec: replicated("web", 1),
            networks: Vec::new(),
            desired_state: TaskState::Running,
            status: status(TaskState::Assigned, 0),
            created_at_ms: 0,
        }
    }

    fn on(tasks: &Tasks, node: &str) -> Vec<String> {
        tasks.on_node(node).map(|t| t.id.clone()).collect()
    }

    /// The index is the one a walk of every task gives.
    fn check(tasks: &Tasks) {
        let mut walked: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for task in tasks.values().filter(|t| !t.node_id.is_empty()) {
            walked
                .entry(&task.node_id)
                .or_default()
                .push(task.id.clone());
        }
        for (node, ids) in &walked {
            assert_eq!(&on(tasks, node), ids, "node {node}");
        }
        assert_eq!(tasks.by_node.len(), walked.len(), "{:?}", tasks.by_node);
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
                    tasks.update(&id, |t| t.node_id = node.to_string());
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
        }
        assert!(!tasks.is_empty());
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
