//! Global services: one task on every node that can take one. A node that is drained, no
//! longer satisfies the constraints or has left loses its task; a Down or paused node keeps
//! the one it has (it is not replaced elsewhere: there is no elsewhere for a global task).

use crate::cluster::TaskState;

use super::{
    pass::{ServicePass, SlotKey, Target},
    restart::should_restart,
    update,
};

pub(super) fn reconcile(pass: &mut ServicePass<'_, '_>) {
    let constraints = pass.service.spec.constraints.clone();
    let ctx = pass.ctx;
    let gone: Vec<SlotKey<'_>> = pass
        .slots
        .keys()
        .copied()
        .filter(|k| !matches!(k, SlotKey::Node(id) if ctx.can_keep(id, &constraints)))
        .collect();
    for key in gone {
        pass.shutdown_all(key);
    }
    let kept: Vec<&str> = ctx
        .state
        .nodes
        .keys()
        .map(String::as_str)
        .filter(|id| ctx.can_keep(id, &constraints))
        .collect();
    for id in &kept {
        pass.retire_superseded(SlotKey::Node(id));
    }
    update::advance(pass);
    for id in kept {
        if !ctx.can_take_new(id, &constraints) {
            continue;
        }
        let key = SlotKey::Node(id);
        let current = pass
            .slots
            .get(&key)
            .and_then(|slot| slot.current().map(|index| (slot, index)));
        match current {
            None => {
                let (spec, version) = (pass.service.spec.clone(), pass.service.version);
                pass.create(key, spec, version, Target::Node(id));
            }
            // Pending: the node lacked room for its reservations; it may have some now.
            Some((slot, index)) if slot.tasks[index].status.state == TaskState::Pending => {
                pass.assign(key, index, Some(id));
            }
            Some((slot, index)) => {
                let task = &slot.tasks[index];
                if task.status.state.is_terminal()
                    && should_restart(&pass.service.spec.restart, &slot.tasks, index, ctx)
                {
                    let (spec, version) = pass.spec_for(task);
                    pass.shutdown(key, index);
                    pass.create(key, spec, version, Target::Node(id));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::{Availability, NodeResources, Role, TaskState};
    use crate::orchestrator::{
        fixture::{Sim, counts, global},
        parse_constraint,
    };

    #[test]
    fn a_node_without_room_keeps_its_task_pending_until_room_is_made() {
        let mut sim = Sim::new(2);
        for id in ["n1", "n2"] {
            sim.node_mut(id).resources = NodeResources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 1 << 30,
            };
        }
        let mut big = crate::orchestrator::fixture::replicated("big", 1);
        big.resources.reserve_nano_cpus = 1_500_000_000;
        sim.create("big", big);
        sim.settle();
        let big_node = sim.wanted("big")[0].node_id.clone();
        let mut agent = global("agent");
        agent.resources.reserve_nano_cpus = 1_000_000_000;
        sim.create("agent", agent);
        sim.settle();
        // One per node; the one on the big task's node waits there.
        assert_eq!(sim.per_node("agent"), counts(&[("n1", 1), ("n2", 1)]));
        let pending = sim
            .wanted("agent")
            .into_iter()
            .find(|t| t.status.state == TaskState::Pending)
            .unwrap();
        assert_eq!(pending.node_id, big_node);
        assert_eq!(
            pending.status.error,
            "no suitable node (insufficient resources on 1 node)"
        );
        // The big task goes: the global one takes that node, and only that node.
        sim.apply(&crate::cluster::Command::RemoveService {
            id: "big".to_string(),
        });
        sim.settle();
        assert!(
            sim.wanted("agent")
                .iter()
                .all(|t| t.status.state == TaskState::Running),
            "{:?}",
            sim.wanted("agent")
        );
    }

    #[test]
    fn follows_nodes_joining_draining_and_relabelled() {
        let mut sim = Sim::new(2);
        let mut spec = global("agent");
        spec.constraints = vec![parse_constraint("node.labels.role!=edge").unwrap()];
        sim.create("agent", spec);
        sim.settle();
        assert_eq!(sim.per_node("agent"), counts(&[("n1", 1), ("n2", 1)]));
        assert!(sim.wanted("agent").iter().all(|t| t.slot == 0));

        // A node joins: it gets one.
        sim.add_node("n3", Role::Worker);
        sim.settle();
        assert_eq!(
            sim.per_node("agent"),
            counts(&[("n1", 1), ("n2", 1), ("n3", 1)])
        );

        // Drained: its task stops and is not replaced anywhere.
        sim.node_mut("n2").availability = Availability::Drain;
        sim.settle();
        assert_eq!(sim.per_node("agent"), counts(&[("n1", 1), ("n3", 1)]));
        let stopped: Vec<_> = sim
            .tasks("agent")
            .into_iter()
            .filter(|t| t.node_id == "n2")
            .collect();
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].status.state, TaskState::Shutdown);

        // Back to active: a new task there.
        sim.node_mut("n2").availability = Availability::Active;
        sim.settle();
        assert_eq!(
            sim.per_node("agent"),
            counts(&[("n1", 1), ("n2", 1), ("n3", 1)])
        );

        // A label change that breaks the constraint.
        sim.node_mut("n3")
            .labels
            .insert("role".into(), "edge".into());
        sim.settle();
        assert_eq!(sim.per_node("agent"), counts(&[("n1", 1), ("n2", 1)]));

        // Removed node: its task is shut down and orphaned.
        let on_n1 = sim.wanted("agent")[0].id.clone();
        sim.remove_node("n1");
        sim.settle();
        assert_eq!(sim.per_node("agent"), counts(&[("n2", 1)]));
        assert_eq!(sim.state.tasks[&on_n1].status.state, TaskState::Orphaned);
    }

    #[test]
    fn down_or_paused_nodes_keep_their_task() {
        let mut sim = Sim::new(3);
        sim.create("agent", global("agent"));
        sim.settle();
        let all = counts(&[("n1", 1), ("n2", 1), ("n3", 1)]);
        sim.down.insert("n2".into());
        sim.node_mut("n3").availability = Availability::Pause;
        sim.settle();
        assert_eq!(sim.per_node("agent"), all);
        sim.down.clear();
        sim.settle();
        assert_eq!(sim.per_node("agent"), all);
        assert_eq!(sim.tasks("agent").len(), 3);

        // A new node that is down from the start gets nothing until it is up.
        sim.add_node("n4", Role::Worker);
        sim.down.insert("n4".into());
        sim.settle();
        assert_eq!(sim.per_node("agent").get("n4"), None);
        sim.down.clear();
        sim.settle();
        assert_eq!(sim.per_node("agent").get("n4"), Some(&1));
    }

    #[test]
    fn failed_global_task_restarts_on_its_node() {
        let mut sim = Sim::new(2);
        sim.create("agent", global("agent"));
        sim.settle();
        let first = sim.wanted("agent")[0].clone();
        sim.report(&first.id, TaskState::Failed);
        sim.settle();
        assert_eq!(sim.per_node("agent"), counts(&[("n1", 1), ("n2", 1)]));
        let now_on_n1: Vec<_> = sim
            .tasks("agent")
            .into_iter()
            .filter(|t| t.node_id == first.node_id)
            .collect();
        assert_eq!(now_on_n1.len(), 2);
    }
}
