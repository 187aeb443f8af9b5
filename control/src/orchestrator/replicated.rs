//! Replicated services: slots 1..=replicas, each with one task wanted running, spread over the
//! eligible nodes.

use crate::cluster::TaskState;

use super::{
    pass::{ServicePass, SlotKey, Target},
    restart::should_restart,
    update,
};

pub(super) fn reconcile(pass: &mut ServicePass<'_, '_>, replicas: u64) {
    // Scaled down: slots beyond the count stop. Slot 0 is a global task's, not ours.
    let extra: Vec<SlotKey<'_>> = pass
        .slots
        .keys()
        .copied()
        .filter(|k| matches!(k, SlotKey::Slot(n) if *n == 0 || *n > replicas))
        .collect();
    for key in extra {
        pass.shutdown_all(key);
    }
    for n in 1..=replicas {
        pass.retire_superseded(SlotKey::Slot(n));
    }
    // The update goes before the slot repairs below, so that a slot it replaces is not first
    // restarted or moved with the old spec.
    update::advance(pass);
    for n in 1..=replicas {
        repair(pass, SlotKey::Slot(n));
    }
}

/// Gives a slot a task that can run: a first one, a restart after its task stopped, a node
/// for a pending one, or a move off a node that is down, drained, gone or no longer
/// satisfies the constraints. A moved task does not come back when its node does: the
/// replacement is the slot's task from then on.
fn repair<'a>(pass: &mut ServicePass<'a, '_>, key: SlotKey<'a>) {
    let spread = || Target::Spread { prefer: None };
    let Some(slot) = pass.slots.get(&key) else {
        let (spec, version) = (pass.service.spec.clone(), pass.service.version);
        pass.create(key, spec, version, spread());
        return;
    };
    let Some(index) = slot.current() else {
        let (spec, version) = (pass.service.spec.clone(), pass.service.version);
        pass.create(key, spec, version, spread());
        return;
    };
    let task = &slot.tasks[index];
    let replace = if task.status.state.is_terminal() {
        should_restart(&pass.service.spec.restart, &slot.tasks, index, pass.ctx)
    } else if task.node_id.is_empty() {
        if task.status.state <= TaskState::Pending {
            pass.assign(key, index, None);
        }
        return;
    } else {
        !pass.keeps(task)
    };
    if replace {
        let (spec, version) = pass.spec_for(task);
        pass.shutdown(key, index);
        pass.create(key, spec, version, spread());
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::{Availability, NodeResources, Role, ServiceMode, TaskState};
    use crate::orchestrator::{
        fixture::{Sim, counts, replicated},
        parse_constraint,
    };

    fn scale(sim: &mut Sim, id: &str, replicas: u64) {
        sim.update(id, |s| s.mode = ServiceMode::Replicated { replicas });
    }

    #[test]
    fn scales_up_with_spread_and_back_down() {
        let mut sim = Sim::new(3);
        sim.create("web", replicated("web", 1));
        sim.settle();
        assert_eq!(sim.per_node("web"), counts(&[("n1", 1)]));
        let first = sim.current("web", 1).id.clone();
        assert_eq!(sim.current("web", 1).status.state, TaskState::Running);

        scale(&mut sim, "web", 5);
        sim.step();
        assert_eq!(
            sim.per_node("web"),
            counts(&[("n1", 2), ("n2", 2), ("n3", 1)])
        );
        // New tasks start Assigned, at the pass's time, wanted Running.
        let new = sim.current("web", 5);
        assert_eq!(new.status.state, TaskState::Assigned);
        assert_eq!(new.created_at_ms, sim.now);
        assert_eq!(new.service_version, 2);
        sim.settle();
        // Scaling is not a spec change for tasks: slot 1 keeps its task, no update status.
        assert_eq!(sim.current("web", 1).id, first);
        assert_eq!(sim.update_state("web"), None);

        scale(&mut sim, "web", 1);
        sim.settle();
        assert_eq!(sim.wanted("web").len(), 1);
        assert_eq!(sim.current("web", 1).id, first);
        for task in sim.tasks("web").into_iter().filter(|t| t.slot > 1) {
            assert_eq!(task.desired_state, TaskState::Shutdown);
            assert_eq!(task.status.state, TaskState::Shutdown);
        }
    }

    #[test]
    fn spread_counts_other_services_on_ties() {
        let mut sim = Sim::new(3);
        sim.create("a", replicated("a", 2));
        sim.settle();
        assert_eq!(sim.per_node("a"), counts(&[("n1", 1), ("n2", 1)]));
        sim.create("b", replicated("b", 1));
        sim.settle();
        assert_eq!(sim.per_node("b"), counts(&[("n3", 1)]));
    }

    #[test]
    fn obeys_constraints() {
        let mut sim = Sim::new(3);
        let mut spec = replicated("db", 3);
        spec.constraints = vec![parse_constraint("node.role==manager").unwrap()];
        sim.create("db", spec);
        sim.settle();
        assert_eq!(sim.per_node("db"), counts(&[("n1", 3)]));

        // Nothing satisfies the constraint: pending, with the reason.
        let mut spec = replicated("x", 1);
        spec.constraints = vec![parse_constraint("node.labels.gpu==yes").unwrap()];
        sim.create("x", spec);
        sim.settle();
        let task = sim.current("x", 1);
        assert_eq!(
            (task.node_id.as_str(), task.status.state),
            ("", TaskState::Pending)
        );
        assert_eq!(
            task.status.error,
            "no suitable node (scheduling constraints not satisfied on 3 nodes)"
        );

        // A label appears: the pending task is assigned there.
        sim.node_mut("n2").labels.insert("gpu".into(), "yes".into());
        sim.settle();
        let task = sim.current("x", 1);
        assert_eq!(task.node_id, "n2");
        assert_eq!(task.status.state, TaskState::Running);

        // The label goes: the task moves off... to nowhere, so it waits pending again.
        sim.node_mut("n2").labels.clear();
        sim.settle();
        assert_eq!(sim.per_node("x"), counts(&[("", 1)]));
    }

    #[test]
    fn reservations_are_set_against_each_nodes_capacity() {
        let mut sim = Sim::new(2);
        for id in ["n1", "n2"] {
            sim.node_mut(id).resources = NodeResources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 1 << 30,
            };
        }
        let mut spec = replicated("db", 3);
        spec.resources.reserve_memory_bytes = 600 << 20;
        sim.create("db", spec);
        sim.settle();
        // One 600 MiB task per 1 GiB node; the third waits, saying why as Docker does.
        assert_eq!(sim.per_node("db"), counts(&[("n1", 1), ("n2", 1), ("", 1)]));
        let pending = sim
            .wanted("db")
            .into_iter()
            .find(|t| t.node_id.is_empty())
            .unwrap();
        assert_eq!(pending.status.state, TaskState::Pending);
        assert_eq!(
            pending.status.error,
            "no suitable node (insufficient resources on 2 nodes)"
        );
        // Reservations of other services count; tasks without any always fit.
        let mut cpu = replicated("cpu", 1);
        cpu.resources.reserve_nano_cpus = 2_000_000_000;
        sim.create("cpu", cpu);
        sim.create("free", replicated("free", 2));
        sim.settle();
        assert_eq!(sim.per_node("cpu").values().sum::<usize>(), 1);
        assert!(!sim.per_node("cpu").contains_key(""));
        assert!(!sim.per_node("free").contains_key(""));
        // Scaling down frees room: the pending task is placed.
        sim.update("db", |s| s.mode = ServiceMode::Replicated { replicas: 2 });
        sim.settle();
        assert_eq!(sim.per_node("db"), counts(&[("n1", 1), ("n2", 1)]));
        // A node that reported no capacity (an older agent) is not limited.
        sim.add_node("n3", Role::Worker);
        sim.update("db", |s| s.mode = ServiceMode::Replicated { replicas: 4 });
        sim.settle();
        assert_eq!(
            sim.per_node("db"),
            counts(&[("n1", 1), ("n2", 1), ("n3", 2)])
        );
    }

    #[test]
    fn a_stale_retag_does_not_unplace_a_task_placed_meanwhile() {
        let mut sim = Sim::new(2);
        let mut spec = replicated("web", 3);
        spec.max_replicas_per_node = 1;
        sim.create("web", spec);
        sim.settle();
        // `service update` re-tags the live tasks from the state it read: this one Pending.
        let mut stale = sim
            .wanted("web")
            .into_iter()
            .find(|t| t.node_id.is_empty())
            .unwrap()
            .clone();
        stale.service_version += 1;
        // Meanwhile a node joins and the orchestrator places it there.
        sim.add_node("n3", Role::Worker);
        sim.settle();
        sim.apply(&crate::cluster::Command::PutTasks(vec![stale.clone()]));
        let now = &sim.state.tasks[&stale.id];
        assert_eq!(now.node_id, "n3");
        assert_eq!(now.status.state, TaskState::Running);
        assert_eq!(now.service_version, stale.service_version);
    }

    #[test]
    fn max_replicas_per_node_leaves_the_rest_pending() {
        let mut sim = Sim::new(2);
        let mut spec = replicated("web", 3);
        spec.max_replicas_per_node = 1;
        sim.create("web", spec);
        sim.settle();
        assert_eq!(
            sim.per_node("web"),
            counts(&[("n1", 1), ("n2", 1), ("", 1)])
        );
        let pending = sim
            .wanted("web")
            .into_iter()
            .find(|t| t.node_id.is_empty())
            .unwrap()
            .clone();
        assert_eq!(pending.status.state, TaskState::Pending);
        assert_eq!(
            pending.status.error,
            "no suitable node (max replicas per node limit exceed)"
        );

        // A third node: the pending task goes there, and only there.
        sim.add_node("n3", Role::Worker);
        sim.settle();
        assert_eq!(
            sim.per_node("web"),
            counts(&[("n1", 1), ("n2", 1), ("n3", 1)])
        );

        // Raising the limit restarts nothing; scaling up may then double up.
        sim.update("web", |s| {
            s.max_replicas_per_node = 2;
            s.mode = ServiceMode::Replicated { replicas: 6 };
        });
        sim.settle();
        assert_eq!(
            sim.per_node("web"),
            counts(&[("n1", 2), ("n2", 2), ("n3", 2)])
        );
        assert_eq!(sim.update_state("web"), None);

        // With other reasons, the most frequent comes first, as in Docker.
        sim.node_mut("n3").availability = Availability::Drain;
        sim.update("web", |s| s.mode = ServiceMode::Replicated { replicas: 5 });
        sim.settle();
        let pending = sim
            .wanted("web")
            .into_iter()
            .find(|t| t.node_id.is_empty())
            .unwrap()
            .clone();
        assert_eq!(
            pending.status.error,
            "no suitable node (max replicas per node limit exceed; 1 node not available for new tasks)"
        );
    }

    #[test]
    fn drain_moves_tasks_and_reactivation_does_not_bring_them_back() {
        let mut sim = Sim::new(3);
        sim.create("web", replicated("web", 3));
        sim.settle();
        assert_eq!(
            sim.per_node("web"),
            counts(&[("n1", 1), ("n2", 1), ("n3", 1)])
        );
        let on_n2 = sim
            .wanted("web")
            .into_iter()
            .find(|t| t.node_id == "n2")
            .unwrap()
            .id
            .clone();

        sim.node_mut("n2").availability = Availability::Drain;
        sim.step();
        let old = &sim.state.tasks[&on_n2];
        assert_eq!(old.desired_state, TaskState::Shutdown);
        let replacement = sim.current("web", old.slot);
        assert_ne!(replacement.node_id, "n2");
        assert_eq!(replacement.service_version, 1);
        sim.settle();
        assert_eq!(sim.state.tasks[&on_n2].status.state, TaskState::Shutdown);
        assert_eq!(sim.per_node("web").get("n2"), None);

        sim.node_mut("n2").availability = Availability::Active;
        sim.settle();
        assert_eq!(sim.per_node("web").get("n2"), None);
        assert_eq!(sim.wanted("web").len(), 3);
    }

    #[test]
    fn pause_keeps_tasks_but_takes_no_new_ones() {
        let mut sim = Sim::new(2);
        sim.create("web", replicated("web", 2));
        sim.settle();
        sim.node_mut("n2").availability = Availability::Pause;
        sim.settle();
        assert_eq!(sim.per_node("web"), counts(&[("n1", 1), ("n2", 1)]));
        scale(&mut sim, "web", 4);
        sim.settle();
        assert_eq!(sim.per_node("web"), counts(&[("n1", 3), ("n2", 1)]));
    }

    #[test]
    fn down_node_tasks_are_rescheduled_and_do_not_move_back() {
        let mut sim = Sim::new(3);
        sim.create("web", replicated("web", 3));
        sim.settle();
        let on_n3 = sim
            .wanted("web")
            .into_iter()
            .find(|t| t.node_id == "n3")
            .unwrap()
            .id
            .clone();

        sim.down.insert("n3".into());
        sim.settle();
        let old = &sim.state.tasks[&on_n3];
        assert_eq!(old.desired_state, TaskState::Shutdown);
        // Its node is down: nobody reported it stopped.
        assert_eq!(old.status.state, TaskState::Running);
        assert_eq!(sim.per_node("web"), counts(&[("n1", 2), ("n2", 1)]));

        sim.down.clear();
        sim.settle();
        assert_eq!(sim.state.tasks[&on_n3].status.state, TaskState::Shutdown);
        assert_eq!(sim.per_node("web"), counts(&[("n1", 2), ("n2", 1)]));
    }

    #[test]
    fn no_eligible_node_leaves_tasks_pending_until_one_appears() {
        let mut sim = Sim::new(2);
        sim.node_mut("n1").availability = Availability::Drain;
        sim.down.insert("n2".into());
        sim.create("web", replicated("web", 2));
        sim.step();
        for task in sim.wanted("web") {
            assert_eq!(task.node_id, "");
            assert_eq!(task.status.state, TaskState::Pending);
            assert_eq!(
                task.status.error,
                "no suitable node (2 nodes not available for new tasks)"
            );
        }
        // Still nothing: no change, no commands (the step checks idempotence).
        sim.now += 10_000;
        assert!(sim.pass().is_empty());

        sim.add_node("n3", Role::Worker);
        sim.step();
        for task in sim.wanted("web") {
            assert_eq!(task.node_id, "n3");
            assert_eq!(task.status.state, TaskState::Assigned);
            assert_eq!(task.status.error, "");
        }
        sim.settle();
        assert_eq!(sim.running_versions("web"), [(1, 2)].into());
    }

    #[test]
    fn removed_node_tasks_are_orphaned_and_replaced() {
        let mut sim = Sim::new(2);
        sim.create("web", replicated("web", 2));
        sim.settle();
        let on_n2 = sim
            .wanted("web")
            .into_iter()
            .find(|t| t.node_id == "n2")
            .unwrap()
            .id
            .clone();
        sim.remove_node("n2");
        sim.settle();
        let old = &sim.state.tasks[&on_n2];
        assert_eq!(
            (old.desired_state, old.status.state),
            (TaskState::Shutdown, TaskState::Orphaned)
        );
        assert_eq!(sim.per_node("web"), counts(&[("n1", 2)]));
    }
}
