//! `GET /events`, as dockerd answers it (moby `api/server/router/system/system_routes.go`
//! `getEvents`, `daemon/events/filter.go`): newline-delimited JSON messages (`Type`, `Action`,
//! `Actor {ID, Attributes}`, `scope`, `time`, `timeNano`), first those kept since `since`,
//! then live ones until `until` (or the client goes); an `until` in the past ends the stream
//! after the kept ones. `filters` as dockerd's: `type`, `event`, `scope`, `label`, and by ID
//! or name (prefix) `service`, `node`, `network`, `secret`, `config` (and its keys for local
//! objects, which match nothing here).
//!
//! The events are the swarm's: what the managers applied (the agent's `Events` call, answered
//! by this manager's own copy of the Raft log). A worker, like dockerd on one, sees no swarm
//! events: its stream stays empty until `until`.

use std::{collections::HashMap, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use shoal_control::{
    api::{ClusterEvent, EventsRequest},
    wire_limits::cluster_client,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Shared, errors::ApiError, filters::QueryFilters, logs::parse_timestamp, node_state};

/// The filter keys dockerd accepts for events.
const KEYS: &[&str] = &[
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
    "volume",
];

/// Keys matched against the actor's ID or name (prefix), whatever the event's type.
const BY_NAME: &[&str] = &[
    "config",
    "container",
    "daemon",
    "image",
    "network",
    "node",
    "plugin",
    "secret",
    "service",
    "volume",
];

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/events", axum::routing::get(events))
}

async fn events(
    State(engine): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let raw_since = query.get("since").map_or("", String::as_str);
    let raw_until = query.get("until").map_or("", String::as_str);
    let since = parse_timestamp(raw_since)?;
    let until = parse_timestamp(raw_until)?;
    if let (Some(since), Some(until)) = (since, until)
        && until < since
    {
        return Err(ApiError::bad_request(format!(
            "`since` time ({raw_since}) cannot be after `until` time ({raw_until})"
        )));
    }
    let filters = QueryFilters::parse(query.get("filters").map(String::as_str), KEYS)?;
    let now = now_nanos();
    let past_only = until.is_some_and(|until| until < now);
    let info = node_state::read(&engine).await?;
    let (body, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    if node_state::require_manager(&info).is_ok() {
        let request = EventsRequest {
            since_unix_nanos: since,
            follow: !past_only,
        };
        let mut stream = cluster_client(engine.channel.clone())
            .events(request)
            .await?
            .into_inner();
        tokio::spawn(async move {
            // A past `until` needs no timer: the manager ends a stream that does not follow,
            // and a timer already due would race the kept events still on their way.
            let deadline = until
                .filter(|_| !past_only)
                .map(|u| tokio::time::Instant::now() + until_in(u));
            loop {
                let next = tokio::select! {
                    // What has arrived goes out before a deadline that is also due.
                    biased;
                    () = body.closed() => return,
                    next = stream.message() => next,
                    () = sleep_until(deadline) => return,
                };
                let Ok(Some(event)) = next else {
                    // The manager ended the stream (its log is gone, or the client fell
                    // behind): so does this one, as dockerd's would on shutdown.
                    return;
                };
                if until.is_some_and(|u| event.time_unix_nanos > u) {
                    return;
                }
                if !matches(&event, &filters) {
                    continue;
                }
                if body.send(Ok(Bytes::from(message(&event)))).await.is_err() {
                    return;
                }
            }
        });
    } else if !past_only {
        // No swarm events on this node: hold the stream open until `until` or the client goes.
        tokio::spawn(async move {
            let deadline = until.map(|u| tokio::time::Instant::now() + until_in(u));
            tokio::select! {
                () = body.closed() => {}
                () = sleep_until(deadline) => {}
            }
        });
    }
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// One event as dockerd encodes it (`events.Message`), with its newline.
fn message(event: &ClusterEvent) -> String {
    let attributes: serde_json::Map<String, serde_json::Value> = event
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().into()))
        .collect();
    let json = serde_json::json!({
        "Type": event.r#type,
        "Action": event.action,
        "Actor": { "ID": event.id, "Attributes": attributes },
        "scope": "swarm",
        "time": event.time_unix_nanos.div_euclid(1_000_000_000),
        "timeNano": event.time_unix_nanos,
    });
    format!("{json}\n")
}

/// Whether `event` passes `filters`, as dockerd's `events.Filter.Include`: every key given
/// must match (its values are alternatives); `label` values must all match.
fn matches(event: &ClusterEvent, filters: &QueryFilters) -> bool {
    let attribute = |key: &str| {
        event
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_str())
    };
    let name = attribute("name").unwrap_or("");
    let by_name = BY_NAME.iter().all(|key| {
        filters.allow(key, |v| {
            event.id == v || name == v || event.id.starts_with(v) || name.starts_with(v)
        })
    });
    by_name
        && filters.allow("type", |v| v == event.r#type)
        && filters.allow("event", |v| v == event.action)
        && filters.allow("scope", |v| v == "swarm")
        && filters.get("label").iter().all(|label| {
            let (key, value) = label
                .split_once('=')
                .map_or((label.as_str(), None), |(k, v)| (k, Some(v)));
            attribute(key).is_some_and(|found| value.is_none_or(|v| v == found))
        })
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// How long until the unix time `until` (nanoseconds); zero when it is past.
fn until_in(until: i64) -> Duration {
    Duration::from_nanos(u64::try_from(until.saturating_sub(now_nanos())).unwrap_or(0))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use shoal_control::api::KeyValue;

    use super::*;

    fn event(kind: &str, action: &str, id: &str, name: &str) -> ClusterEvent {
        ClusterEvent {
            r#type: kind.into(),
            action: action.into(),
            id: id.into(),
            attributes: vec![KeyValue {
                key: "name".into(),
                value: name.into(),
            }],
            time_unix_nanos: 1_700_000_000_123_456_789,
        }
    }

    fn filters(json: &str) -> QueryFilters {
        QueryFilters::parse(Some(json), KEYS).unwrap()
    }

    #[test]
    fn filters_as_dockerds() {
        let web = event("service", "create", "abc123", "web");
        let node = event("node", "update", "n1", "host1");
        assert!(matches(&web, &filters("{}")));
        assert!(matches(&web, &filters(r#"{"type":{"service":true}}"#)));
        assert!(!matches(&node, &filters(r#"{"type":{"service":true}}"#)));
        assert!(matches(&web, &filters(r#"{"service":{"web":true}}"#)));
        assert!(matches(&web, &filters(r#"{"service":{"abc":true}}"#)));
        assert!(
            !matches(&node, &filters(r#"{"service":{"web":true}}"#)),
            "a name filter holds for every event type, as dockerd's"
        );
        assert!(matches(
            &web,
            &filters(r#"{"event":{"create":true,"remove":true}}"#)
        ));
        assert!(!matches(&web, &filters(r#"{"event":{"update":true}}"#)));
        assert!(!matches(&web, &filters(r#"{"scope":{"local":true}}"#)));
        assert!(matches(&web, &filters(r#"{"label":{"name=web":true}}"#)));
        assert!(!matches(&web, &filters(r#"{"label":{"com.x":true}}"#)));
        assert!(QueryFilters::parse(Some(r#"{"color":{"red":true}}"#), KEYS).is_err());
    }

    #[test]
    fn messages_as_dockerd_encodes_them() {
        let text = message(&event("service", "remove", "abc123", "web"));
        assert!(text.ends_with('\n'));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["Type"], "service");
        assert_eq!(json["Action"], "remove");
        assert_eq!(json["Actor"]["ID"], "abc123");
        assert_eq!(json["Actor"]["Attributes"]["name"], "web");
        assert_eq!(json["scope"], "swarm");
        assert_eq!(json["time"], 1_700_000_000);
        assert_eq!(json["timeNano"], 1_700_000_000_123_456_789_i64);
    }
}
