//! Restart and update policies between the API and the model, with Docker's defaults.

use super::Error;
use crate::{
    api,
    cluster::{FailureAction, RestartCondition, RestartPolicy, UpdateConfig, UpdateOrder},
};

/// Docker's default update monitor period.
const DEFAULT_MONITOR_MS: u64 = 5_000;

pub(super) fn restart_from_api(r: Option<&api::RestartPolicyMsg>) -> Result<RestartPolicy, Error> {
    let Some(r) = r else {
        return Ok(RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 5_000,
            max_attempts: 0,
            window_ms: 0,
        });
    };
    let condition = match r.condition.as_str() {
        "" | "any" => RestartCondition::Any,
        "on-failure" => RestartCondition::OnFailure,
        "none" => RestartCondition::None,
        other => {
            return Err(Error::invalid(format!(
                "invalid restart condition {other:?}: expected none, on-failure or any"
            )));
        }
    };
    Ok(RestartPolicy {
        condition,
        delay_ms: r.delay_ms,
        max_attempts: r.max_attempts,
        window_ms: r.window_ms,
    })
}

pub(super) fn update_from_api(u: Option<&api::UpdateConfigMsg>) -> Result<UpdateConfig, Error> {
    let Some(u) = u else {
        return Ok(UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: DEFAULT_MONITOR_MS,
            max_failure_ratio_milli: 0,
            order: UpdateOrder::StopFirst,
        });
    };
    let failure_action = match u.failure_action.as_str() {
        "" | "pause" => FailureAction::Pause,
        "continue" => FailureAction::Continue,
        "rollback" => FailureAction::Rollback,
        other => {
            return Err(Error::invalid(format!(
                "invalid update failure action {other:?}: expected pause, continue or rollback"
            )));
        }
    };
    let order = match u.order.as_str() {
        "" | "stop-first" => UpdateOrder::StopFirst,
        "start-first" => UpdateOrder::StartFirst,
        other => {
            return Err(Error::invalid(format!(
                "invalid update order {other:?}: expected stop-first or start-first"
            )));
        }
    };
    if u.max_failure_ratio_milli > 1000 {
        return Err(Error::invalid(
            "the update max failure ratio must be between 0 and 1",
        ));
    }
    Ok(UpdateConfig {
        parallelism: u.parallelism,
        delay_ms: u.delay_ms,
        failure_action,
        monitor_ms: if u.monitor_ms == 0 {
            DEFAULT_MONITOR_MS
        } else {
            u.monitor_ms
        },
        max_failure_ratio_milli: u.max_failure_ratio_milli,
        order,
    })
}

pub(super) fn update_to_api(u: &UpdateConfig) -> api::UpdateConfigMsg {
    api::UpdateConfigMsg {
        parallelism: u.parallelism,
        delay_ms: u.delay_ms,
        failure_action: match u.failure_action {
            FailureAction::Pause => "pause",
            FailureAction::Continue => "continue",
            FailureAction::Rollback => "rollback",
        }
        .to_string(),
        monitor_ms: u.monitor_ms,
        max_failure_ratio_milli: u.max_failure_ratio_milli,
        order: match u.order {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
        .to_string(),
    }
}
