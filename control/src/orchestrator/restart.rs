//! The restart policy: whether a slot whose task stopped gets a new one, and when.
//!
//! The store keeps no restart counter, so attempts are counted from the slot's history: a
//! restart leaves the stopped task behind with desired state Shutdown and the status it
//! stopped with. History pruning keeps enough tasks for the count (see `history`).

use std::borrow::Cow;

use crate::cluster::{RestartCondition, RestartPolicy, Task, TaskState};

use super::{pass::same_task_spec, placement::Ctx};

/// Whether the stopped task `tasks[current]` should be replaced now. `false` also covers "not
/// yet" (the restart delay, or attempts used up within the window): the pass is told when to
/// ask again.
pub(super) fn should_restart(
    policy: &RestartPolicy,
    tasks: &[Cow<'_, Task>],
    current: usize,
    ctx: &Ctx<'_>,
) -> bool {
    let Some(task) = tasks.get(current) else {
        return false;
    };
    let state = task.status.state;
    let wanted = match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => is_failure(state),
        RestartCondition::Any => state.is_terminal(),
    };
    if !wanted || !ctx.reached(task.status.timestamp_ms.saturating_add(policy.delay_ms)) {
        return false;
    }
    if policy.max_attempts == 0 {
        return true;
    }
    let attempts = attempts(policy, tasks, current, ctx.now);
    if u64::try_from(attempts.len()).unwrap_or(u64::MAX) < policy.max_attempts {
        return true;
    }
    // Used up: the oldest attempt leaves the window the moment after it is `window_ms` old.
    if policy.window_ms > 0
        && let Some(oldest) = attempts.iter().map(|t| t.status.timestamp_ms).min()
    {
        ctx.wake_at(oldest.saturating_add(policy.window_ms).saturating_add(1));
    }
    false
}

/// Restarts of this slot's task within the window: earlier tasks with the same spec that
/// stopped on their own (not shut down by the orchestrator, which leaves Shutdown/Orphaned) and
/// were then replaced. Tasks of an older spec do not count: an update starts afresh.
fn attempts<'t>(
    policy: &RestartPolicy,
    tasks: &'t [Cow<'_, Task>],
    current: usize,
    now: u64,
) -> Vec<&'t Task> {
    let spec = &tasks[current].spec;
    let since = if policy.window_ms == 0 {
        0
    } else {
        now.saturating_sub(policy.window_ms)
    };
    tasks
        .iter()
        .enumerate()
        .filter(|(i, t)| {
            *i != current
                && t.desired_state != TaskState::Running
                && matches!(
                    t.status.state,
                    TaskState::Complete | TaskState::Failed | TaskState::Rejected
                )
                && t.status.timestamp_ms >= since
                && same_task_spec(&t.spec, spec)
        })
        .map(|(_, t)| t.as_ref())
        .collect()
}

pub(super) fn is_failure(state: TaskState) -> bool {
    matches!(state, TaskState::Failed | TaskState::Rejected)
}

/// How many terminal tasks a slot keeps: Docker's default task history (5), or more when the
/// restart policy counts more attempts than that from history.
pub(super) fn history_limit(policy: &RestartPolicy) -> usize {
    const TASK_HISTORY: usize = 5;
    if policy.condition == RestartCondition::None || policy.max_attempts == 0 {
        return TASK_HISTORY;
    }
    let needed = usize::try_from(policy.max_attempts)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    TASK_HISTORY.max(needed)
}

#[cfg(test)]
mod tests {
    use crate::cluster::{RestartCondition, RestartPolicy, TaskState};
    use crate::orchestrator::fixture::{Sim, replicated};

    fn sim_with(policy: RestartPolicy) -> Sim {
        let mut sim = Sim::new(2);
        let mut spec = replicated("job", 1);
        spec.restart = policy;
        sim.create("job", spec);
        sim.settle();
        sim
    }

    fn policy(condition: RestartCondition) -> RestartPolicy {
        RestartPolicy {
            condition,
            delay_ms: 0,
            max_attempts: 0,
            window_ms: 0,
        }
    }

    /// Ends the slot's task with `state`, runs the cluster; whether a new task replaced it.
    fn end_task(sim: &mut Sim, state: TaskState) -> bool {
        let id = sim.current("job", 1).id.clone();
        sim.report(&id, state);
        sim.settle();
        sim.current("job", 1).id != id
    }

    #[test]
    fn condition_none_never_restarts() {
        let mut sim = sim_with(policy(RestartCondition::None));
        assert!(!end_task(&mut sim, TaskState::Complete));
        let mut sim = sim_with(policy(RestartCondition::None));
        assert!(!end_task(&mut sim, TaskState::Failed));
        // The stopped task stays the slot's own: nothing to do, pass after pass.
        sim.now += 60_000;
        assert!(sim.pass().is_empty());
    }

    #[test]
    fn on_failure_restarts_only_failures() {
        let mut sim = sim_with(policy(RestartCondition::OnFailure));
        assert!(!end_task(&mut sim, TaskState::Complete));
        let mut sim = sim_with(policy(RestartCondition::OnFailure));
        assert!(end_task(&mut sim, TaskState::Failed));
        assert!(end_task(&mut sim, TaskState::Rejected));
        assert_eq!(sim.current("job", 1).status.state, TaskState::Running);
    }

    #[test]
    fn any_restarts_after_completion_too() {
        let mut sim = sim_with(policy(RestartCondition::Any));
        assert!(end_task(&mut sim, TaskState::Complete));
        assert!(end_task(&mut sim, TaskState::Failed));
        let stopped: Vec<_> = sim
            .tasks("job")
            .into_iter()
            .filter(|t| t.desired_state == TaskState::Shutdown)
            .collect();
        assert_eq!(stopped.len(), 2);
    }

    #[test]
    fn waits_the_delay_after_the_task_stopped() {
        let mut sim = sim_with(RestartPolicy {
            delay_ms: 5_000,
            ..policy(RestartCondition::Any)
        });
        let id = sim.current("job", 1).id.clone();
        sim.report(&id, TaskState::Failed);
        let failed_at = sim.now;
        sim.settle();
        assert_eq!(
            sim.wake(),
            Some(failed_at + 5_000),
            "a pass when the delay is over"
        );
        sim.now += 4_999;
        sim.settle();
        assert_eq!(sim.current("job", 1).id, id);
        // The delay counts from the failure, not from the last pass.
        sim.now -= 4_999;
        sim.now += 5_000;
        sim.settle();
        assert_ne!(sim.current("job", 1).id, id);
    }

    #[test]
    fn stops_after_max_attempts_within_the_window() {
        let mut sim = sim_with(RestartPolicy {
            max_attempts: 2,
            ..policy(RestartCondition::Any)
        });
        assert!(end_task(&mut sim, TaskState::Failed));
        assert!(end_task(&mut sim, TaskState::Failed));
        assert!(!end_task(&mut sim, TaskState::Failed));
        sim.now += 3_600_000;
        sim.settle();
        assert_eq!(sim.current("job", 1).status.state, TaskState::Failed);

        let mut sim = sim_with(RestartPolicy {
            max_attempts: 1,
            window_ms: 60_000,
            ..policy(RestartCondition::Any)
        });
        let first_failed_at = sim.now;
        assert!(end_task(&mut sim, TaskState::Failed));
        sim.now += 1_000;
        assert!(!end_task(&mut sim, TaskState::Failed));
        assert_eq!(
            sim.wake(),
            Some(first_failed_at + 60_001),
            "a pass when the first attempt has left the window"
        );
        // Once the earlier restart is out of the window, it may restart again.
        sim.now += 60_000;
        sim.settle();
        assert_eq!(sim.current("job", 1).status.state, TaskState::Running);
    }
}
