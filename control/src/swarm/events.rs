//! `Events`: the swarm events this manager applied (its Raft state machine's [`EventLog`]),
//! streamed to the caller: the kept ones it asked for, then each new one while it follows.
//!
//! Each manager answers from its own log: every manager applies the same entries, so any of
//! them tells the same story, and no call goes to the leader. A worker keeps no log and is
//! refused (the Engine API answers for it as dockerd on a worker would).
//!
//! [`EventLog`]: crate::raft::store::EventLog

use std::pin::Pin;

use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Status;

use super::{Swarm, error::Error};
use crate::{
    api::{ClusterEvent, EventsRequest, KeyValue},
    cluster::events::Event,
};

pub type EventStream = Pin<Box<dyn Stream<Item = Result<ClusterEvent, Status>> + Send + 'static>>;

impl Swarm {
    pub async fn events(&self, request: EventsRequest) -> Result<EventStream, Error> {
        let active = self.active().await?;
        let manager = active.manager.as_ref().ok_or(Error::NotAManager)?;
        let subscription = manager
            .state_machine
            .events()
            .subscribe(request.since_unix_nanos);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for event in subscription.history {
                if tx.send(Ok(message(event))).await.is_err() {
                    return;
                }
            }
            if !request.follow {
                return;
            }
            let mut live = subscription.live;
            loop {
                let next = tokio::select! {
                    () = tx.closed() => return,
                    next = live.recv() => next,
                };
                let sent = match next {
                    Ok(event) => tx.send(Ok(message(event))).await,
                    // The membership ended (leave, demotion): its log is gone.
                    Err(RecvError::Closed) => return,
                    Err(RecvError::Lagged(missed)) => {
                        // Ending beats a stream that silently skips events.
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "the event stream fell {missed} events behind and was cut off"
                            ))))
                            .await;
                        return;
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

fn message(event: Event) -> ClusterEvent {
    ClusterEvent {
        r#type: event.kind.to_string(),
        action: event.action.to_string(),
        id: event.id,
        attributes: event
            .attributes
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
        time_unix_nanos: event.time_unix_nanos,
    }
}
