//! `GET /services/{id}/logs` and `GET /tasks/{id}/logs`, as dockerd answers them (moby
//! `daemon/cluster/services.go` `ServiceLogs` and `api/server/httputils/write_log_stream.go`):
//! query `follow`, `stdout`, `stderr`, `since`, `until`, `timestamps`, `tail`, `details`; the
//! answer in dockerd's multiplexed stream (shoal's services have no TTY), one frame per line:
//! `[timestamp ][details ]line`. The details are swarm's context,
//! `com.docker.swarm.node.id=N,com.docker.swarm.service.id=S,com.docker.swarm.task.id=T`,
//! which the docker CLI (it always asks for them) turns into its `name.slot.id@node |` prefix.
//!
//! A service's logs are those of each of its tasks that was placed on a node, asked of the
//! agent as the `shoal` CLI does (`TaskLogs`, here as timed lines); `tail` applies to each task,
//! as in swarm. Without `follow` the lines of all tasks come in time order; with it each task's
//! stream is forwarded as it comes.

use std::collections::HashMap;

use axum::{
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use shoal_control::{
    api::{LogChunk, TaskInfo, TaskLogsRequest},
    wire_limits::cluster_client,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Shared, errors::ApiError, lookup, node_state, services, services::is_true};
use crate::time_format;

/// dockerd's `types.MediaTypeMultiplexedStream`.
const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";
/// swarm's prefix of the context details (moby `daemon/cluster/services.go`).
const CONTEXT: &str = "com.docker.swarm";

/// Stream types of the multiplexed format (moby `pkg/stdcopy`).
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const SYSTEM_ERROR: u8 = 3;

/// What the query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    follow: bool,
    stdout: bool,
    stderr: bool,
    since: i64,
    until: i64,
    timestamps: bool,
    tail: Option<u64>,
    details: bool,
}

impl Options {
    fn parse(query: &HashMap<String, String>) -> Result<Options, ApiError> {
        let flag = |key: &str| query.get(key).is_some_and(|v| is_true(v));
        let options = Options {
            follow: flag("follow"),
            stdout: flag("stdout"),
            stderr: flag("stderr"),
            since: parse_timestamp(query.get("since").map_or("", String::as_str))?.unwrap_or(0),
            until: parse_timestamp(query.get("until").map_or("", String::as_str))?.unwrap_or(0),
            timestamps: flag("timestamps"),
            tail: parse_tail(query.get("tail").map_or("", String::as_str))?,
            details: flag("details"),
        };
        if !options.stdout && !options.stderr {
            // dockerd's words (moby `daemon/cluster/services.go`).
            return Err(ApiError::bad_request(
                "Bad parameters: you must choose at least one stream",
            ));
        }
        Ok(options)
    }
}

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/services/{id}/logs", axum::routing::get(service_logs))
        .route("/tasks/{id}/logs", axum::routing::get(task_logs))
}

async fn service_logs(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    node_state::manager(&engine).await?;
    let options = Options::parse(&query)?;
    let all = services::all(&engine).await?;
    let service = services::find(&all, &reference)?;
    let tasks = tasks(&engine, &service.id).await?;
    Ok(stream(&engine, tasks, options))
}

async fn task_logs(
    State(engine): State<Shared>,
    Path(reference): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    node_state::manager(&engine).await?;
    let options = Options::parse(&query)?;
    let all = tasks(&engine, "").await?;
    let task = lookup::find(&all, &reference, "task", |t| &t.id, |_| "")?;
    Ok(stream(&engine, vec![task.clone()], options))
}

/// The tasks of `service` (every task when empty) that were placed on a node: the others
/// never ran, so have no output.
async fn tasks(engine: &Shared, service: &str) -> Result<Vec<TaskInfo>, ApiError> {
    let mut tasks = super::tasks::of_service(engine, service).await?;
    tasks.retain(|t| !t.node_id.is_empty());
    Ok(tasks)
}

/// The response: each task's lines, framed, as they come (`follow`) or sorted by time.
fn stream(engine: &Shared, tasks: Vec<TaskInfo>, options: Options) -> Response {
    let (body, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    let (frames, mut received) = mpsc::channel::<Frame>(64);
    for task in tasks {
        let channel = engine.channel.clone();
        tokio::spawn(read_task(channel, task, options.clone(), frames.clone()));
    }
    // The readers hold the only senders now: `received` ends when the last one is done.
    drop(frames);
    tokio::spawn(async move {
        if options.follow {
            // Returning drops `received`, which stops the readers (the client went away).
            while let Some(frame) = received.recv().await {
                if body.send(Ok(frame.bytes)).await.is_err() {
                    return;
                }
            }
        } else {
            let mut all = Vec::new();
            while let Some(frame) = received.recv().await {
                all.push(frame);
            }
            // Stable: each task's lines stay in their order at equal times.
            all.sort_by_key(|f| f.nanos);
            for frame in all {
                if body.send(Ok(frame.bytes)).await.is_err() {
                    return;
                }
            }
        }
    });
    (
        [(header::CONTENT_TYPE, MULTIPLEXED)],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

/// One line, framed for the client, with its time (for sorting).
struct Frame {
    nanos: i64,
    bytes: Bytes,
}

/// Sends `task`'s lines to `out` as frames, until its stream ends or `out` is closed. A task
/// whose node has no logs for it (gone, or never started it) has none; other failures end
/// its part with a system-error frame, as dockerd's "Error grabbing logs".
async fn read_task(
    channel: tonic::transport::Channel,
    task: TaskInfo,
    options: Options,
    out: mpsc::Sender<Frame>,
) {
    let request = TaskLogsRequest {
        task_id: task.id.clone(),
        follow: options.follow,
        lines: true,
        tail: options.tail,
        since_unix_nanos: options.since,
        until_unix_nanos: options.until,
    };
    let mut chunks = match cluster_client(channel).task_logs(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => return,
        Err(status) => {
            let _ = out.send(grabbing_error(&status)).await;
            return;
        }
    };
    let details = details(&task);
    loop {
        let next = tokio::select! {
            () = out.closed() => return,
            next = chunks.message() => next,
        };
        match next {
            Ok(Some(chunk)) => {
                if let Some(frame) = line_frame(&chunk, &details, &options)
                    && out.send(frame).await.is_err()
                {
                    return;
                }
            }
            Ok(None) => return,
            Err(status) => {
                let _ = out.send(grabbing_error(&status)).await;
                return;
            }
        }
    }
}

/// swarm's context details of `task`'s lines: keys sorted and query-escaped, as dockerd
/// writes log attributes (IDs need no escaping).
fn details(task: &TaskInfo) -> String {
    format!(
        "{CONTEXT}.node.id={},{CONTEXT}.service.id={},{CONTEXT}.task.id={}",
        task.node_id, task.service_id, task.id
    )
}

/// One line as dockerd writes it: `[timestamp ][details ]line`, in a frame of its stream;
/// `None` for a stream the client did not ask for.
fn line_frame(chunk: &LogChunk, details: &str, options: &Options) -> Option<Frame> {
    let (kind, wanted) = match chunk.stream.as_str() {
        "stderr" => (STDERR, options.stderr),
        _ => (STDOUT, options.stdout),
    };
    if !wanted {
        return None;
    }
    let mut line = Vec::with_capacity(chunk.data.len() + details.len() + 32);
    if options.timestamps {
        line.extend_from_slice(rfc3339_nano(chunk.time_unix_nanos).as_bytes());
        line.push(b' ');
    }
    if options.details {
        line.extend_from_slice(details.as_bytes());
        line.push(b' ');
    }
    line.extend_from_slice(&chunk.data);
    Some(Frame {
        nanos: chunk.time_unix_nanos,
        bytes: frame(kind, &line),
    })
}

fn grabbing_error(status: &tonic::Status) -> Frame {
    let text = format!(
        "Error grabbing logs: {}\n",
        status.message().replace('\n', " ")
    );
    Frame {
        nanos: i64::MAX,
        bytes: frame(SYSTEM_ERROR, text.as_bytes()),
    }
}

/// A frame of the multiplexed stream: stream type, three zero bytes, the payload's length
/// (big-endian u32), the payload.
fn frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut bytes = Vec::with_capacity(8 + payload.len());
    bytes.extend_from_slice(&[kind, 0, 0, 0]);
    // A line is at most 16 KiB (the node splits longer ones), far below u32::MAX.
    bytes.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    bytes.extend_from_slice(payload);
    Bytes::from(bytes)
}

/// dockerd's `RFC3339NanoFixed` in UTC: `2024-05-06T07:08:09.000000123Z`.
fn rfc3339_nano(unix_nanos: i64) -> String {
    let nanos = unix_nanos.max(0);
    let secs = time_format::rfc3339((nanos / 1_000_000_000) as u64);
    format!(
        "{}.{:09}Z",
        secs.trim_end_matches('Z'),
        nanos % 1_000_000_000
    )
}

/// A `since` or `until` value as dockerd reads it (moby `api/types/time`
/// `ParseTimestamps`): unix seconds, optionally `.` and a fraction; empty is `None`.
pub fn parse_timestamp(value: &str) -> Result<Option<i64>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::bad_request(format!(
            "invalid timestamp {value:?}: expected unix seconds[.nanoseconds]"
        ))
    };
    let (secs, fraction) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().map_err(|_| invalid())?;
    let nanos: i64 = if fraction.is_empty() {
        0
    } else if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    } else {
        // Scaled as dockerd does: "5" is half a second.
        format!("{fraction:0<9}").parse().map_err(|_| invalid())?
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .map(Some)
        .ok_or_else(invalid)
}

/// `tail`: empty or `all` is every line; a count is the last so many (a negative one, which
/// the docker CLI documents as "all", too).
fn parse_tail(value: &str) -> Result<Option<u64>, ApiError> {
    match value {
        "" | "all" => Ok(None),
        _ => match value.parse::<i64>() {
            Ok(n) => Ok(u64::try_from(n).ok()),
            Err(_) => Err(ApiError::bad_request(format!(
                "tail value must be a positive integer or \"all\": {value:?}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_as_dockerd_reads_them() {
        let o = Options::parse(&query(&[
            ("stdout", "1"),
            ("since", "1700000000.5"),
            ("tail", "3"),
            ("timestamps", "true"),
        ]))
        .unwrap();
        assert!(o.stdout && !o.stderr && o.timestamps && !o.follow);
        assert_eq!(o.since, 1_700_000_000_500_000_000);
        assert_eq!(o.tail, Some(3));
        let none = Options::parse(&query(&[])).unwrap_err();
        assert_eq!(
            none.message,
            "Bad parameters: you must choose at least one stream"
        );
        assert!(Options::parse(&query(&[("stdout", "1"), ("tail", "x")])).is_err());
        assert!(Options::parse(&query(&[("stdout", "1"), ("since", "1m")])).is_err());
        assert_eq!(parse_tail("all").unwrap(), None);
        assert_eq!(parse_tail("-1").unwrap(), None);
        assert_eq!(
            parse_timestamp("12.000000001").unwrap(),
            Some(12_000_000_001)
        );
        assert!(parse_timestamp("1.0000000001").is_err());
    }

    #[test]
    fn lines_framed_as_dockerd_writes_them() {
        let chunk = LogChunk {
            stream: "stderr".into(),
            data: b"oops\n".to_vec(),
            time_unix_nanos: 1_700_000_000_000_000_123,
        };
        let task = TaskInfo {
            id: "t1".into(),
            service_id: "s1".into(),
            node_id: "n1".into(),
            ..Default::default()
        };
        let options = Options::parse(&query(&[
            ("stderr", "1"),
            ("timestamps", "1"),
            ("details", "1"),
        ]))
        .unwrap();
        let frame = line_frame(&chunk, &details(&task), &options).unwrap().bytes;
        let payload = "2023-11-14T22:13:20.000000123Z com.docker.swarm.node.id=n1,\
                       com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 oops\n";
        assert_eq!(&frame[..4], &[STDERR, 0, 0, 0]);
        assert_eq!(
            u32::from_be_bytes(frame[4..8].try_into().unwrap()) as usize,
            payload.len()
        );
        assert_eq!(&frame[8..], payload.as_bytes());
        let stdout_only = Options::parse(&query(&[("stdout", "1")])).unwrap();
        assert!(line_frame(&chunk, "", &stdout_only).is_none());
    }
}
