//! Rolling updates and rollbacks.
//!
//! The orchestrator remembers nothing between passes, so the update's progress is read back
//! from the store every time:
//! - `Service.update_status` is the only state kept on purpose. It belongs to the current spec
//!   when its `started_at_ms` equals the service's `updated_at_ms` (both are set together:
//!   here when an update starts or rolls back; any later spec change moves `updated_at_ms`).
//! - A slot is *dirty* when its current task runs another spec than the service's.
//! - The update's own tasks are the up-to-date ones created since `started_at_ms`. A batch is
//!   finished when no up-to-date task is still on its way to Running (so a task that cannot
//!   be placed holds the update, as in Docker), and finished *at* the newest Running or stop
//!   timestamp among the update's own tasks.
//!
//! Transitions, for a status that belongs to the current spec:
//! - Updating / RollbackStarted: a batch of `parallelism` dirty slots is replaced once the
//!   previous batch is finished and `delay_ms` has passed; failures within `monitor_ms` beyond
//!   the tolerated ratio lead to Paused / RollbackPaused, or to a rollback (a new version with
//!   the previous spec, status RollbackStarted); when every slot runs the current spec, is up
//!   and past its monitor period: Completed / RollbackCompleted.
//! - Paused / RollbackPaused: nothing, until the service changes again.
//! - Completed / RollbackCompleted: slots that become updatable later (a global service's
//!   node that comes back) are still replaced.
//!
//! A status that belongs to an older spec (or none) is replaced by Updating as soon as a slot
//! is dirty.

use crate::cluster::{
    FailureAction, TaskState, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus,
};

use super::{
    pass::{ServicePass, SlotKey, Target},
    restart::is_failure,
};

/// Starts, re-dates, pauses or rolls back the update, from the tasks as the pass found them.
/// Runs before anything else, because a rollback changes the spec everything else works from.
pub(super) fn status(pass: &mut ServicePass<'_, '_>) {
    let service = &pass.service;
    let current = service
        .update_status
        .as_ref()
        .filter(|s| s.started_at_ms == service.updated_at_ms);
    let Some(current) = current else {
        let in_progress = service.update_status.as_ref().map(|s| s.state);
        let state = if has_dirty_slot(pass) {
            UpdateState::Updating
        } else if let Some(s @ (UpdateState::Updating | UpdateState::RollbackStarted)) = in_progress
        {
            // The spec changed without touching what tasks run (a scale): the update goes on
            // under the new date, so that it can complete.
            s
        } else {
            return;
        };
        let message = match state {
            UpdateState::Updating => "update in progress".to_string(),
            _ => service
                .update_status
                .as_ref()
                .map(|s| s.message.clone())
                .unwrap_or_default(),
        };
        let started_at_ms = service.updated_at_ms;
        pass.service.update_status = Some(UpdateStatus {
            state,
            message,
            started_at_ms,
        });
        return;
    };
    let started = current.started_at_ms;
    let rolling_back = match current.state {
        UpdateState::Updating => false,
        UpdateState::RollbackStarted => true,
        _ => return,
    };
    let config = config(pass);
    if config.failure_action == FailureAction::Continue {
        return;
    }
    let Some(failed_task) = failure_beyond_ratio(pass, started, &config) else {
        return;
    };
    let mut service = pass.service.clone();
    let now = pass.ctx.now;
    match (
        config.failure_action,
        rolling_back,
        service.previous_spec.take(),
    ) {
        (FailureAction::Rollback, false, Some(previous)) => {
            let failed_spec = std::mem::replace(&mut service.spec, previous);
            service.previous_spec = Some(failed_spec);
            service.version += 1;
            service.updated_at_ms = now;
            service.update_status = Some(UpdateStatus {
                state: UpdateState::RollbackStarted,
                message: format!(
                    "update rolled back due to failure or early termination of task {failed_task}"
                ),
                started_at_ms: now,
            });
            pass.set_service(service);
        }
        // Pause; and a rollback that fails, or has nothing to roll back to, stops where it is.
        (_, _, previous) => {
            service.previous_spec = previous;
            let (state, what) = if rolling_back {
                (UpdateState::RollbackPaused, "rollback")
            } else {
                (UpdateState::Paused, "update")
            };
            service.update_status = Some(UpdateStatus {
                state,
                message: format!(
                    "{what} paused due to failure or early termination of task {failed_task}"
                ),
                started_at_ms: started,
            });
            pass.service = service;
        }
    }
}

/// Replaces the next batch of dirty slots, if the update may move on.
pub(super) fn advance(pass: &mut ServicePass<'_, '_>) {
    let Some(status) = pass.service.update_status.clone() else {
        return;
    };
    if matches!(
        status.state,
        UpdateState::Paused | UpdateState::RollbackPaused
    ) {
        return;
    }
    let config = config(pass);
    let started = status.started_at_ms;
    let scope = pass.update_scope();
    let mut dirty = Vec::new();
    let mut in_flight = false;
    let mut finished_at = None;
    for key in scope {
        let Some(task) = pass.current(key) else {
            continue;
        };
        if pass.is_dirty(task) {
            // Slots whose task is not serving anyway go first: replacing them costs nothing.
            dirty.push((pass.serving(task), key));
        } else if !task.status.state.is_terminal() && task.status.state != TaskState::Running {
            in_flight = true;
        } else if task.created_at_ms >= started {
            finished_at = finished_at.max(Some(task.status.timestamp_ms));
        }
    }
    if dirty.is_empty() || in_flight {
        return;
    }
    if finished_at.is_some_and(|at| !pass.ctx.reached(at.saturating_add(config.delay_ms))) {
        return;
    }
    dirty.sort();
    let batch = match usize::try_from(config.parallelism) {
        Ok(0) | Err(_) => dirty.len(),
        Ok(n) => n.min(dirty.len()),
    };
    for (_, key) in dirty.into_iter().take(batch) {
        replace(pass, key, config.order);
    }
}

/// Marks the update Completed / RollbackCompleted once every slot runs the current spec, is
/// Running (or stopped for good) and has outlived its monitor period, and no older task is
/// still wanted running. Judged on the state the pass leaves behind.
pub(super) fn complete(pass: &mut ServicePass<'_, '_>) {
    let Some(status) = pass
        .service
        .update_status
        .as_ref()
        .filter(|s| s.started_at_ms == pass.service.updated_at_ms)
    else {
        return;
    };
    let (state, message) = match status.state {
        UpdateState::Updating => (UpdateState::Completed, "update completed"),
        UpdateState::RollbackStarted => (UpdateState::RollbackCompleted, "rollback completed"),
        _ => return,
    };
    let monitor = config(pass).monitor_ms;
    let ctx = pass.ctx;
    let started = status.started_at_ms;
    for key in pass.update_scope() {
        let Some(slot) = pass.slots.get(&key) else {
            return;
        };
        let Some(task) = slot.current_task() else {
            return;
        };
        let settled = task.status.state == TaskState::Running || task.status.state.is_terminal();
        let monitored =
            task.created_at_ms < started || ctx.reached(task.created_at_ms.saturating_add(monitor));
        let alone = slot
            .tasks
            .iter()
            .filter(|t| t.desired_state == TaskState::Running)
            .count()
            == 1;
        if pass.is_dirty(task) || !settled || !monitored || !alone {
            return;
        }
    }
    pass.service.update_status = Some(UpdateStatus {
        state,
        message: message.to_string(),
        started_at_ms: started,
    });
}

/// The settings of what is under way: the rollback's while rolling back.
fn config(pass: &ServicePass<'_, '_>) -> UpdateConfig {
    let rolling_back = pass.service.update_status.as_ref().is_some_and(|s| {
        matches!(
            s.state,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    });
    if rolling_back {
        pass.service.spec.rollback
    } else {
        pass.service.spec.update
    }
}

fn has_dirty_slot(pass: &ServicePass<'_, '_>) -> bool {
    pass.update_scope()
        .into_iter()
        .any(|key| pass.current(key).is_some_and(|t| pass.is_dirty(t)))
}

/// The first failed task, when the update's failures exceed the tolerated ratio of the slots
/// it has updated. A failure is an up-to-date task created since the update started that
/// failed or was rejected within `monitor_ms` of its creation.
fn failure_beyond_ratio(
    pass: &ServicePass<'_, '_>,
    started: u64,
    config: &UpdateConfig,
) -> Option<String> {
    let mut updated: u64 = 0;
    let mut failed: u64 = 0;
    let mut first: Option<(u64, &str)> = None;
    for slot in pass.slots.values() {
        let mut slot_updated = false;
        let mut slot_failed = false;
        for task in &slot.tasks {
            if pass.is_dirty(task) || task.created_at_ms < started {
                continue;
            }
            slot_updated = true;
            let at = task.status.timestamp_ms;
            if is_failure(task.status.state)
                && at >= started
                && at.saturating_sub(task.created_at_ms) <= config.monitor_ms
            {
                slot_failed = true;
                let candidate = (at, task.id.as_str());
                first = Some(first.map_or(candidate, |f| f.min(candidate)));
            }
        }
        updated += u64::from(slot_updated);
        failed += u64::from(slot_failed);
    }
    let tolerated = u128::from(config.max_failure_ratio_milli) * u128::from(updated);
    if failed == 0 || u128::from(failed) * 1000 <= tolerated {
        return None;
    }
    first.map(|(_, id)| id.to_string())
}

/// Replaces a dirty slot's task with one running the current spec: stop-first shuts the old
/// one down now; start-first keeps it until the new one is Running (see
/// `ServicePass::retire_superseded`), unless it is not serving anyway.
fn replace<'a>(pass: &mut ServicePass<'a, '_>, key: SlotKey<'a>, order: UpdateOrder) {
    let Some(slot) = pass.slots.get(&key) else {
        return;
    };
    let Some(index) = slot.current() else {
        return;
    };
    let old = &slot.tasks[index];
    let start_first = order == UpdateOrder::StartFirst && pass.serving(old);
    let target = match key {
        SlotKey::Node(node) => Target::Node(node),
        // Stop-first keeps the slot where it was when that node may take it.
        SlotKey::Slot(_) => Target::Spread {
            prefer: (!start_first).then(|| old.node_id.clone()),
        },
    };
    if !start_first {
        pass.shutdown(key, index);
    }
    let spec = pass.service.spec.clone();
    let version = pass.service.version;
    pass.create(key, spec, version, target);
}

#[cfg(test)]
mod tests {
    use crate::cluster::{FailureAction, TaskState, UpdateOrder, UpdateState};
    use crate::orchestrator::fixture::{Sim, counts, global, replicated};

    /// A service of `replicas` on as many nodes, running, then updated to a new command.
    fn updated(replicas: u64, configure: impl FnOnce(&mut crate::cluster::ServiceSpec)) -> Sim {
        let mut sim = Sim::new(usize::try_from(replicas).unwrap());
        let mut spec = replicated("web", replicas);
        configure(&mut spec);
        sim.create("web", spec);
        sim.settle();
        sim.now += 60_000;
        sim.update("web", |s| s.command = vec!["new".into()]);
        sim
    }

    /// Settles, then lets `ms` pass one second at a time.
    fn run_for(sim: &mut Sim, ms: u64) {
        sim.settle();
        for _ in 0..ms / 1_000 {
            sim.now += 1_000;
            sim.settle();
        }
    }

    fn new_tasks(sim: &Sim) -> Vec<String> {
        let mut ids: Vec<String> = sim
            .wanted("web")
            .into_iter()
            .filter(|t| t.service_version == 2)
            .map(|t| t.id.clone())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn replaces_one_at_a_time_with_the_delay_between_batches() {
        let mut sim = updated(3, |s| {
            s.update.delay_ms = 10_000;
            s.update.monitor_ms = 5_000;
        });
        sim.step();
        assert_eq!(sim.update_state("web"), Some(UpdateState::Updating));
        assert_eq!(
            sim.service("web").update_status.as_ref().unwrap().message,
            "update in progress"
        );
        // Stop-first: in the same pass the old task is told to stop and the new one created,
        // on the same node.
        let old = sim
            .tasks("web")
            .into_iter()
            .find(|t| t.slot == 1 && t.service_version == 1)
            .unwrap();
        assert_eq!(old.desired_state, TaskState::Shutdown);
        assert_eq!(sim.current("web", 1).service_version, 2);
        assert_eq!(sim.current("web", 1).node_id, old.node_id);
        assert_eq!(sim.current("web", 2).service_version, 1);

        // Not Running yet: the next batch waits however long it takes.
        sim.now += 30_000;
        sim.step();
        assert_eq!(sim.current("web", 2).service_version, 1);
        sim.nodes_act();
        // Running now: the delay counts from here.
        let running_at = sim.now;
        sim.step();
        assert_eq!(
            sim.wake(),
            Some(running_at + 10_000),
            "the next batch's time"
        );
        sim.now += 9_999;
        sim.step();
        assert_eq!(sim.current("web", 2).service_version, 1);
        sim.now += 1;
        sim.step();
        assert_eq!(sim.current("web", 2).service_version, 2);
        assert_eq!(sim.current("web", 3).service_version, 1);
        sim.nodes_act();
        sim.now += 10_000;
        sim.step();
        assert_eq!(sim.current("web", 3).service_version, 2);
        sim.nodes_act();
        // Everything runs the new spec, but the last task is still being monitored.
        let created_at = sim.current("web", 3).created_at_ms;
        sim.step();
        assert_eq!(
            sim.wake(),
            Some(created_at + 5_000),
            "its monitor period's end"
        );
        sim.now += 4_999;
        sim.step();
        assert_eq!(sim.update_state("web"), Some(UpdateState::Updating));
        sim.now += 1;
        sim.step();
        let status = sim.service("web").update_status.clone().unwrap();
        assert_eq!(
            (status.state, status.message.as_str()),
            (UpdateState::Completed, "update completed")
        );
        assert_eq!(
            sim.per_node("web"),
            counts(&[("n1", 1), ("n2", 1), ("n3", 1)])
        );
        assert_eq!(sim.running_versions("web"), [(2, 3)].into());
    }

    #[test]
    fn parallelism_zero_replaces_everything_at_once() {
        let mut sim = updated(3, |s| s.update.parallelism = 0);
        sim.step();
        assert_eq!(new_tasks(&sim).len(), 3);
    }

    #[test]
    fn start_first_keeps_the_old_task_until_the_new_one_runs() {
        let mut sim = updated(2, |s| s.update.order = UpdateOrder::StartFirst);
        sim.step();
        let slot1: Vec<_> = sim
            .wanted("web")
            .into_iter()
            .filter(|t| t.slot == 1)
            .collect();
        assert_eq!(slot1.len(), 2, "old and new both wanted running");
        let old = slot1
            .iter()
            .find(|t| t.service_version == 1)
            .unwrap()
            .id
            .clone();
        assert_eq!(sim.state.tasks[&old].status.state, TaskState::Running);
        assert_eq!(sim.current("web", 2).service_version, 1);

        sim.nodes_act();
        sim.step();
        // The new one runs: the old one goes, and the next slot starts its replacement.
        assert_eq!(sim.state.tasks[&old].desired_state, TaskState::Shutdown);
        assert_eq!(sim.current("web", 1).service_version, 2);
        assert_eq!(
            sim.wanted("web")
                .into_iter()
                .filter(|t| t.slot == 2)
                .count(),
            2
        );
        run_for(&mut sim, 10_000);
        assert_eq!(sim.update_state("web"), Some(UpdateState::Completed));
        assert_eq!(sim.running_versions("web"), [(2, 2)].into());
    }

    #[test]
    fn failure_pauses_the_update_until_the_service_changes_again() {
        let mut sim = updated(3, |_| {});
        sim.step();
        let new = new_tasks(&sim);
        sim.now += 1_000;
        sim.report(&new[0], TaskState::Failed);
        sim.step();
        let status = sim.service("web").update_status.clone().unwrap();
        assert_eq!(status.state, UpdateState::Paused);
        assert_eq!(
            status.message,
            format!(
                "update paused due to failure or early termination of task {}",
                new[0]
            )
        );
        run_for(&mut sim, 60_000);
        // Paused: the failed slot is restarted (restart policy), the others are not updated.
        assert_eq!(sim.update_state("web"), Some(UpdateState::Paused));
        assert_eq!(sim.running_versions("web"), [(1, 2), (2, 1)].into());

        sim.update("web", |s| s.force_update += 1);
        run_for(&mut sim, 60_000);
        assert_eq!(sim.update_state("web"), Some(UpdateState::Completed));
        assert_eq!(sim.running_versions("web"), [(3, 3)].into());
    }

    #[test]
    fn failure_with_continue_goes_on() {
        let mut sim = updated(3, |s| s.update.failure_action = FailureAction::Continue);
        sim.step();
        let new = new_tasks(&sim);
        sim.now += 1_000;
        sim.report(&new[0], TaskState::Failed);
        run_for(&mut sim, 30_000);
        assert_eq!(sim.update_state("web"), Some(UpdateState::Completed));
        assert_eq!(sim.running_versions("web"), [(2, 3)].into());
    }

    #[test]
    fn failures_within_the_tolerated_ratio_or_after_the_monitor_period_do_not_pause() {
        let mut sim = updated(2, |s| {
            s.update.max_failure_ratio_milli = 500;
            s.update.monitor_ms = 5_000;
        });
        let t0 = sim.now;
        sim.step();
        sim.nodes_act();
        sim.now += 1_000;
        sim.step();
        let new = new_tasks(&sim);
        assert_eq!(new.len(), 2);
        let (first, second) = if sim.state.tasks[&new[0]].slot == 1 {
            (new[0].clone(), new[1].clone())
        } else {
            (new[1].clone(), new[0].clone())
        };
        // The first fails 5.5 s after it was created (past its monitor period), the second
        // 4.5 s after (within it): one failed slot of two updated is not more than half.
        sim.now = t0 + 5_500;
        sim.report(&first, TaskState::Failed);
        sim.report(&second, TaskState::Failed);
        sim.step();
        assert_eq!(sim.update_state("web"), Some(UpdateState::Updating));
        // Both restarted; the first slot's new task fails early: now two of two.
        sim.nodes_act();
        sim.now += 1_000;
        let restarted = sim.current("web", 1).id.clone();
        assert_ne!(restarted, first);
        sim.report(&restarted, TaskState::Failed);
        sim.step();
        assert_eq!(sim.update_state("web"), Some(UpdateState::Paused));
    }

    #[test]
    fn failure_rolls_back_with_the_rollback_settings() {
        let mut sim = updated(3, |s| {
            s.update.failure_action = FailureAction::Rollback;
            s.rollback.parallelism = 0;
        });
        let original = sim.service("web").previous_spec.clone().unwrap();
        sim.step();
        sim.nodes_act();
        sim.step();
        let new = new_tasks(&sim);
        assert_eq!(new.len(), 2);
        sim.now += 1_000;
        sim.report(&new[1], TaskState::Failed);
        sim.step();
        let service = sim.service("web").clone();
        assert_eq!(service.version, 3);
        assert_eq!(service.spec, original);
        assert_eq!(service.previous_spec.as_ref().unwrap().command, ["new"]);
        let status = service.update_status.unwrap();
        assert_eq!(status.state, UpdateState::RollbackStarted);
        assert_eq!(
            status.message,
            format!(
                "update rolled back due to failure or early termination of task {}",
                new[1]
            )
        );
        // The rollback's parallelism (0: all at once) replaces both updated slots now; the
        // slot that was never updated runs the restored spec already and is left alone.
        let v3: Vec<_> = sim
            .wanted("web")
            .into_iter()
            .filter(|t| t.service_version == 3)
            .collect();
        assert_eq!(v3.len(), 2);
        assert!(v3.iter().all(|t| t.spec == original));
        assert_eq!(sim.current("web", 3).service_version, 1);

        run_for(&mut sim, 10_000);
        let status = sim.service("web").update_status.clone().unwrap();
        assert_eq!(
            (status.state, status.message.as_str()),
            (UpdateState::RollbackCompleted, "rollback completed")
        );
        assert!(
            sim.wanted("web")
                .iter()
                .all(|t| t.spec.command == original.command)
        );
        assert!(
            sim.wanted("web")
                .iter()
                .all(|t| t.status.state == TaskState::Running)
        );
    }

    #[test]
    fn global_update_skips_down_nodes_until_they_return() {
        let mut sim = Sim::new(3);
        sim.create("agent", global("agent"));
        sim.settle();
        sim.down.insert("n3".into());
        sim.update("agent", |s| s.command = vec!["new".into()]);
        let mut rounds = 0;
        while sim.update_state("agent") != Some(UpdateState::Completed) {
            sim.now += 1_000;
            sim.settle();
            rounds += 1;
            assert!(rounds < 60);
            // One node at a time.
            let wanted = sim.wanted("agent");
            assert!(
                wanted
                    .iter()
                    .filter(|t| t.status.state != TaskState::Running && t.node_id != "n3")
                    .count()
                    <= 1
            );
        }
        let on = |sim: &Sim, node: &str| {
            sim.wanted("agent")
                .into_iter()
                .find(|t| t.node_id == node)
                .unwrap()
                .service_version
        };
        assert_eq!((on(&sim, "n1"), on(&sim, "n2"), on(&sim, "n3")), (2, 2, 1));
        sim.down.clear();
        sim.settle();
        assert_eq!(on(&sim, "n3"), 2);
        assert_eq!(
            sim.per_node("agent"),
            counts(&[("n1", 1), ("n2", 1), ("n3", 1)])
        );
    }
}
