//! Asking the upstream resolvers: UDP from a fresh connected socket per attempt, TCP when the
//! UDP reply is truncated, upstreams in order within one time budget per query.
//!
//! A fresh socket per attempt gets a kernel-chosen random source port, and `connect()` makes the
//! kernel drop datagrams from anyone but that upstream; a random ID and an exact question match
//! then guard against the rest of spoofing. Replies that do not match are ignored, not fatal.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Message, MessageType, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};
use tracing::debug;

use crate::wire::ADVERTISED_PAYLOAD;

/// Receive buffer for upstream UDP replies. We advertise [`ADVERTISED_PAYLOAD`] upstream, so a
/// well-behaved upstream never sends more; a longer datagram is cut and fails to parse.
const UDP_REPLY_BUFFER: usize = 4096;

/// Why a query got no usable upstream answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("no upstream resolver is configured")]
    NoUpstreams,
    #[error("the query could not be encoded")]
    Encode {
        #[source]
        source: ProtoError,
    },
    #[error("upstream {upstream} did not answer in time over {transport}")]
    Timeout {
        upstream: SocketAddr,
        transport: &'static str,
    },
    #[error("upstream {upstream} over {transport}")]
    Io {
        upstream: SocketAddr,
        transport: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What the upstream query carries over from the client's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueryFlags {
    pub(crate) recursion_desired: bool,
    pub(crate) checking_disabled: bool,
    /// `Some(DO)` when the client used EDNS; then so do we, advertising our payload size.
    pub(crate) edns_dnssec_ok: Option<bool>,
}

/// Resolves `question` with the first upstream that answers before `deadline`.
///
/// Each upstream gets an equal share of what remains of the budget, so a dead first upstream
/// cannot starve the others; one that fails fast (port unreachable) hands its share on at once.
/// A truncated UDP reply is retried over TCP to the same upstream with the whole remaining
/// budget; if that fails the truncated reply is kept as a last resort.
pub(crate) async fn forward(
    upstreams: &[SocketAddr],
    question: &Query,
    flags: QueryFlags,
    deadline: Instant,
) -> Result<Message, ForwardError> {
    let mut query =
        upstream_query(question, flags).map_err(|source| ForwardError::Encode { source })?;
    let mut last = ForwardError::NoUpstreams;
    let mut truncated = None;
    for (i, &upstream) in upstreams.iter().enumerate() {
        let now = Instant::now();
        if now >= deadline {
            last = ForwardError::Timeout {
                upstream,
                transport: "udp",
            };
            break;
        }
        let id: u16 = rand::random();
        set_id(&mut query, id);
        let share = share_deadline(now, deadline, upstreams.len() - i);
        match udp_exchange(upstream, &query, id, question, share).await {
            Ok(reply) if reply.metadata.truncation => {
                match tcp_exchange(upstream, &query, id, question, deadline).await {
                    Ok(full) => return Ok(full),
                    Err(err) => {
                        debug!(%upstream, cause = %err, "TCP retry of a truncated reply failed");
                        truncated.get_or_insert(reply);
                        last = err;
                    }
                }
            }
            Ok(reply) => return Ok(reply),
            Err(err) => {
                debug!(%upstream, cause = %err, "upstream attempt failed");
                last = err;
            }
        }
    }
    truncated.ok_or(last)
}

/// The end of this attempt's share: what remains of the budget, split evenly among the
/// `remaining` upstreams (this one included).
fn share_deadline(now: Instant, deadline: Instant, remaining: usize) -> Instant {
    let left = deadline.saturating_duration_since(now);
    let parts = u32::try_from(remaining.max(1)).unwrap_or(u32::MAX);
    now + left / parts
}

/// The query we send: the client's question, RD and CD, and EDNS only if the client used it.
fn upstream_query(question: &Query, flags: QueryFlags) -> Result<Vec<u8>, ProtoError> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = flags.recursion_desired;
    msg.metadata.checking_disabled = flags.checking_disabled;
    msg.add_query(question.clone());
    if let Some(dnssec_ok) = flags.edns_dnssec_ok {
        let mut edns = Edns::new();
        edns.set_max_payload(ADVERTISED_PAYLOAD);
        edns.set_dnssec_ok(dnssec_ok);
        msg.set_edns(edns);
    }
    msg.to_vec()
}

fn set_id(query: &mut [u8], id: u16) {
    if let Some(head) = query.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
}

/// Whether `bytes` is the reply to our query `id` for `question`.
fn parse_reply(bytes: &[u8], id: u16, question: &Query) -> Option<Message> {
    let reply = Message::from_vec(bytes).ok()?;
    let same_question = match &reply.queries[..] {
        [q] => {
            q.name() == question.name()
                && q.query_type() == question.query_type()
                && q.query_class() == question.query_class()
        }
        _ => false,
    };
    (reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && same_question)
        .then_some(reply)
}

async fn udp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    question: &Query,
    deadline: Instant,
) -> Result<Message, ForwardError> {
    let io_err = |source| ForwardError::Io {
        upstream,
        transport: "udp",
        source,
    };
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io_err)?;
    socket.connect(upstream).await.map_err(io_err)?;
    socket.send(query).await.map_err(io_err)?;
    let mut buf = vec![0u8; UDP_REPLY_BUFFER];
    loop {
        let received = timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| ForwardError::Timeout {
                upstream,
                transport: "udp",
            })?;
        // ECONNREFUSED here is the ICMP port unreachable: fail fast, try the next upstream.
        let len = received.map_err(io_err)?;
        if let Some(reply) = buf.get(..len).and_then(|b| parse_reply(b, id, question)) {
            return Ok(reply);
        }
        debug!(%upstream, "ignored a UDP reply that does not match the query");
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    question: &Query,
    deadline: Instant,
) -> Result<Message, ForwardError> {
    let io_err = |source| ForwardError::Io {
        upstream,
        transport: "tcp",
        source,
    };
    let exchange = async {
        let len = u16::try_from(query.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query over 65535 bytes"))?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        let mut stream = TcpStream::connect(upstream).await?;
        stream.write_all(&framed).await?;
        loop {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply).await?;
            if let Some(reply) = parse_reply(&reply, id, question) {
                return Ok(reply);
            }
            debug!(%upstream, "ignored a TCP reply that does not match the query");
        }
    };
    match timeout_at(deadline, exchange).await {
        Ok(result) => result.map_err(io_err),
        Err(_) => Err(ForwardError::Timeout {
            upstream,
            transport: "tcp",
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_proto::op::OpCode;
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    fn question() -> Query {
        Query::query(Name::from_ascii("Example.com.").unwrap(), RecordType::A)
    }

    fn reply(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
        let mut msg = Message::response(id, OpCode::Query);
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        msg.to_vec().unwrap()
    }

    #[test]
    fn only_the_reply_to_our_id_and_question_is_accepted() {
        let q = question();
        assert!(parse_reply(&reply(7, "example.COM.", RecordType::A), 7, &q).is_some());
        assert!(parse_reply(&reply(8, "example.com.", RecordType::A), 7, &q).is_none());
        assert!(parse_reply(&reply(7, "example.org.", RecordType::A), 7, &q).is_none());
        assert!(parse_reply(&reply(7, "example.com.", RecordType::AAAA), 7, &q).is_none());
        assert!(parse_reply(&[0, 7, 0x80], 7, &q).is_none());
        // A query with our id is not a reply.
        let mut query = Message::query();
        query.metadata.id = 7;
        query.add_query(q.clone());
        assert!(parse_reply(&query.to_vec().unwrap(), 7, &q).is_none());
    }

    #[test]
    fn budget_is_split_evenly_among_remaining_upstreams() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(3);
        assert_eq!(
            share_deadline(now, deadline, 3),
            now + Duration::from_secs(1)
        );
        assert_eq!(share_deadline(now, deadline, 1), deadline);
        assert_eq!(share_deadline(now, deadline, 0), deadline);
        assert_eq!(share_deadline(deadline, now, 2), deadline);
    }

    #[test]
    fn upstream_query_mirrors_client_flags_and_edns() {
        let flags = QueryFlags {
            recursion_desired: true,
            checking_disabled: true,
            edns_dnssec_ok: Some(true),
        };
        let mut bytes = upstream_query(&question(), flags).unwrap();
        set_id(&mut bytes, 0xabcd);
        let msg = Message::from_vec(&bytes).unwrap();
        assert_eq!(msg.metadata.id, 0xabcd);
        assert!(msg.metadata.recursion_desired && msg.metadata.checking_disabled);
        let edns = msg.edns.expect("EDNS mirrors the client's");
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), ADVERTISED_PAYLOAD);

        let plain = upstream_query(
            &question(),
            QueryFlags {
                edns_dnssec_ok: None,
                ..flags
            },
        )
        .unwrap();
        assert!(Message::from_vec(&plain).unwrap().edns.is_none());
    }

    #[tokio::test]
    async fn no_upstreams_is_an_error_at_once() {
        let flags = QueryFlags {
            recursion_desired: true,
            checking_disabled: false,
            edns_dnssec_ok: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let err = forward(&[], &question(), flags, deadline)
            .await
            .unwrap_err();
        assert!(matches!(err, ForwardError::NoUpstreams), "{err}");
    }
}
