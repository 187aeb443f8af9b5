//! Task history: stopped tasks stay in the store for `service ps` and for counting restart
//! attempts, but only the newest few per slot (per node for global services).

use crate::cluster::TaskState;

use super::{pass::ServicePass, restart::history_limit};

/// Drops the oldest terminal tasks of each slot beyond the limit. The current task is never
/// dropped, even when it has stopped (it still stands for the slot), nor is a task that is
/// still stopping: its node has yet to see that it must stop.
pub(super) fn prune(pass: &mut ServicePass<'_, '_>) {
    let limit = history_limit(&pass.service.spec.restart);
    for slot in pass.slots.values_mut() {
        let terminal = slot
            .tasks
            .iter()
            .filter(|t| t.status.state.is_terminal())
            .count();
        let mut excess = terminal.saturating_sub(limit);
        if excess == 0 {
            continue;
        }
        let mut kept = Vec::with_capacity(slot.tasks.len());
        // Oldest first, so the first prunable ones are the ones to drop.
        for task in slot.tasks.drain(..) {
            let prunable =
                task.desired_state != TaskState::Running && task.status.state.is_terminal();
            if excess > 0 && prunable {
                excess -= 1;
                pass.removed.push(task.id.clone());
            } else {
                kept.push(task);
            }
        }
        slot.tasks = kept;
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::TaskState;
    use crate::orchestrator::fixture::{Sim, global, replicated};

    #[test]
    fn keeps_five_stopped_tasks_per_slot() {
        let mut sim = Sim::new(2);
        sim.create("web", replicated("web", 2));
        sim.create("agent", global("agent"));
        sim.settle();
        for round in 0..8 {
            sim.now += 1_000;
            let ids: Vec<String> = sim
                .wanted("web")
                .into_iter()
                .chain(sim.wanted("agent"))
                .map(|t| t.id.clone())
                .collect();
            for id in ids {
                sim.report(&id, TaskState::Failed);
            }
            sim.settle();
            let expected = (round + 1).min(5);
            for slot in [1, 2] {
                let stopped = sim
                    .tasks("web")
                    .into_iter()
                    .filter(|t| t.slot == slot && t.status.state.is_terminal())
                    .count();
                assert_eq!(stopped, expected, "slot {slot}, round {round}");
            }
            for node in ["n1", "n2"] {
                let stopped = sim
                    .tasks("agent")
                    .into_iter()
                    .filter(|t| t.node_id == node && t.status.state.is_terminal())
                    .count();
                assert_eq!(stopped, expected, "node {node}, round {round}");
            }
        }
        // The newest ones are the ones kept.
        let oldest_kept = sim
            .tasks("web")
            .into_iter()
            .filter(|t| t.slot == 1 && t.status.state.is_terminal())
            .map(|t| t.created_at_ms)
            .min()
            .unwrap();
        assert_eq!(oldest_kept, sim.now - 5_000);
    }
}
