//! One received message in, one decision out: drop it, reply at once (from the records, or an
//! error), or forward it; and the encoding of every response the server sends.
//!
//! Nothing here does I/O, so the UDP loop can call [`Answerer::handle`] inline for every
//! datagram. Parsing uses hickory-server's [`Request`] and encoding its
//! [`MessageResponseBuilder`], whose encoder truncates (and sets TC) at the size we give it.

use std::net::SocketAddr;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::seq::SliceRandom;
use tracing::debug;

use crate::forward::QueryFlags;
use crate::records::{Records, Resolution};
use crate::stats::{Counters, bump};
use crate::wire::{ADVERTISED_PAYLOAD, MAX_UDP_RESPONSE, TTL};

/// How the message reached us; decides the response size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReceivedOver {
    Udp,
    Tcp,
}

/// What to do with one received message.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send nothing: not a query, or too short to answer.
    Drop,
    /// Send these bytes back to the client.
    Reply(Vec<u8>),
    /// Ask the upstream resolvers; [`Pending`] builds the client's response afterwards.
    Forward(Box<Pending>),
}

/// Everything one task's query is answered against.
pub(crate) struct Answerer<'a> {
    /// The records as of this query.
    pub(crate) records: &'a Records,
    /// The task's networks, in attachment order.
    pub(crate) scope: &'a [String],
    /// Node-wide counters.
    pub(crate) counters: &'a Counters,
    /// False when no upstream is configured: unknown names get SERVFAIL at once.
    pub(crate) can_forward: bool,
}

impl Answerer<'_> {
    /// Decides what `bytes`, received from `src` over `received_over`, gets. Never panics.
    pub(crate) fn handle(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        received_over: ReceivedOver,
    ) -> Action {
        let counters = self.counters;
        let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else {
            bump(&counters.malformed);
            return Action::Drop;
        };
        if header.message_type == MessageType::Response {
            // Answering responses invites reflection loops between resolvers.
            bump(&counters.malformed);
            return Action::Drop;
        }
        if header.op_code != OpCode::Query {
            bump(&counters.malformed);
            return reply(header_only(&header.metadata, ResponseCode::NotImp));
        }
        if header.counts.queries != 1 {
            // Checked before parsing: a count of 65535 would make the parser reserve for it.
            bump(&counters.malformed);
            return reply(header_only(&header.metadata, ResponseCode::FormErr));
        }
        let protocol = match received_over {
            ReceivedOver::Udp => Protocol::Udp,
            ReceivedOver::Tcp => Protocol::Tcp,
        };
        let request = match Request::from_bytes(bytes.to_vec(), src, protocol) {
            Ok(request) => request,
            Err(err) => {
                debug!(%src, cause = %err, "malformed query");
                bump(&counters.malformed);
                return reply(header_only(&header.metadata, ResponseCode::FormErr));
            }
        };
        let pending = Pending {
            request,
            received_over,
        };
        if pending
            .request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > 0)
        {
            bump(&counters.malformed);
            return reply(pending.respond(ResponseCode::BADVERS, false, &[], counters));
        }
        let Some(query) = pending.request.queries.queries().first() else {
            bump(&counters.malformed);
            return reply(header_only(&header.metadata, ResponseCode::FormErr));
        };
        if query.query_class() != DNSClass::IN {
            bump(&counters.refused);
            return reply(pending.respond(ResponseCode::Refused, false, &[], counters));
        }

        let qname = query.name().to_ascii();
        let qtype = query.query_type();
        let owner = query.original().name();
        if qtype == RecordType::PTR
            && let Some(target) = self.records.resolve_ptr(self.scope, &qname)
        {
            bump(&counters.answered_local);
            let record = Record::from_rdata(owner.clone(), TTL, RData::PTR(PTR(target.clone())));
            return reply(pending.respond(ResponseCode::NoError, true, &[record], counters));
        }
        match self.records.resolve(self.scope, &qname) {
            Resolution::Found { ips, shuffle } => {
                bump(&counters.answered_local);
                let answers = match qtype {
                    RecordType::A | RecordType::ANY => a_records(owner, ips, shuffle),
                    // v4-only networks: the name exists, it just has no such data (NODATA).
                    _ => Vec::new(),
                };
                reply(pending.respond(ResponseCode::NoError, true, &answers, counters))
            }
            Resolution::NxDomain => {
                bump(&counters.nxdomain);
                reply(pending.respond(ResponseCode::NXDomain, true, &[], counters))
            }
            Resolution::Forward if !self.can_forward => reply(pending.servfail(counters)),
            Resolution::Forward => Action::Forward(Box::new(pending)),
        }
    }
}

fn reply(bytes: Option<Vec<u8>>) -> Action {
    bytes.map_or(Action::Drop, Action::Reply)
}

fn a_records(owner: &Name, ips: &[std::net::Ipv4Addr], shuffle: bool) -> Vec<Record> {
    let mut records: Vec<Record> = ips
        .iter()
        .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))))
        .collect();
    if shuffle {
        records.shuffle(&mut rand::rng());
    }
    records
}

/// A response with only a header (no question echoed), for messages whose question we could not
/// read. `None` only if encoding a bare header fails, which it cannot in practice.
fn header_only(request: &Metadata, rcode: ResponseCode) -> Option<Vec<u8>> {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = rcode;
    metadata.recursion_available = true;
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
    .to_bytes()
    .ok()
}

/// A parsed query that has not been answered yet (it is being forwarded).
#[derive(Debug)]
pub(crate) struct Pending {
    request: Request,
    received_over: ReceivedOver,
}

impl Pending {
    /// The client's question, as asked (case preserved). Always `Some`: [`Answerer::handle`]
    /// builds a `Pending` only for a request with exactly one question.
    pub(crate) fn question(&self) -> Option<&Query> {
        self.request.queries.queries().first().map(|q| q.original())
    }

    /// What the upstream query carries over from the client's: RD, CD, and EDNS with its DO
    /// bit if the client used EDNS.
    pub(crate) fn upstream_flags(&self) -> QueryFlags {
        let metadata = &self.request.metadata;
        QueryFlags {
            recursion_desired: metadata.recursion_desired,
            checking_disabled: metadata.checking_disabled,
            edns_dnssec_ok: self.request.edns.as_ref().map(|e| e.flags().dnssec_ok),
        }
    }

    /// The upstream's answer, relayed under the client's ID and question; `None` only if it
    /// cannot be encoded even as SERVFAIL.
    pub(crate) fn relay(&self, upstream: &Message, counters: &Counters) -> Option<Vec<u8>> {
        let mut metadata = self.metadata(upstream.metadata.response_code, false);
        metadata.recursion_available = upstream.metadata.recursion_available;
        // Set only when the upstream truncated and its TCP retry failed: say so to the client.
        metadata.truncation = upstream.metadata.truncation;
        self.encode(
            metadata,
            &upstream.answers,
            &upstream.authorities,
            &upstream.additionals,
            counters,
        )
    }

    /// SERVFAIL: no upstream answered in time, or none is configured.
    pub(crate) fn servfail(&self, counters: &Counters) -> Option<Vec<u8>> {
        bump(&counters.upstream_failures);
        self.respond(ResponseCode::ServFail, false, &[], counters)
    }

    /// REFUSED: too many forwards pending for this task.
    pub(crate) fn refused(&self, counters: &Counters) -> Option<Vec<u8>> {
        bump(&counters.refused);
        self.respond(ResponseCode::Refused, false, &[], counters)
    }

    fn metadata(&self, rcode: ResponseCode, authoritative: bool) -> Metadata {
        let mut metadata = Metadata::response_from_request(&self.request.metadata);
        metadata.response_code = rcode;
        metadata.authoritative = authoritative;
        metadata.recursion_available = true;
        metadata
    }

    fn respond(
        &self,
        rcode: ResponseCode,
        authoritative: bool,
        answers: &[Record],
        counters: &Counters,
    ) -> Option<Vec<u8>> {
        self.encode(
            self.metadata(rcode, authoritative),
            answers,
            &[],
            &[],
            counters,
        )
    }

    /// Encodes a response echoing the client's question (as it sent it), with an OPT record if
    /// it sent one, truncated to its UDP payload size.
    fn encode(
        &self,
        metadata: Metadata,
        answers: &[Record],
        authorities: &[Record],
        additionals: &[Record],
        counters: &Counters,
    ) -> Option<Vec<u8>> {
        let request = &self.request;
        let edns = request.edns.as_ref().map(|client| {
            let mut ours = Edns::new();
            ours.set_max_payload(ADVERTISED_PAYLOAD);
            ours.set_dnssec_ok(client.flags().dnssec_ok);
            ours
        });
        let max_size = match self.received_over {
            ReceivedOver::Udp => request.max_payload().min(MAX_UDP_RESPONSE),
            ReceivedOver::Tcp => u16::MAX,
        };
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max_size);
        match response.destructive_emit(&mut encoder) {
            Ok(info) => {
                if info.truncation {
                    bump(&counters.truncated);
                }
                Some(buf)
            }
            Err(err) => {
                debug!(id = metadata.id, cause = %err, "response did not encode; SERVFAIL");
                header_only(&request.metadata, ResponseCode::ServFail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Message;

    use super::*;
    use crate::records::{EndpointRecord, NetworkInfo};

    fn records() -> Records {
        Records::new(
            vec![NetworkInfo {
                id: "n1".into(),
                name: "front".into(),
            }],
            vec![
                EndpointRecord {
                    network_id: "n1".into(),
                    task_id: "t1".into(),
                    ip: Ipv4Addr::new(10, 0, 1, 3),
                    service: "web".into(),
                    vip: Some(Ipv4Addr::new(10, 0, 1, 2)),
                    aliases: vec!["web.1.t1".into(), "web.1".into()],
                    service_aliases: Vec::new(),
                },
                EndpointRecord {
                    network_id: "n1".into(),
                    task_id: "t2".into(),
                    ip: Ipv4Addr::new(10, 0, 1, 4),
                    service: "db".into(),
                    vip: None,
                    aliases: vec!["db.1.t2".into()],
                    service_aliases: Vec::new(),
                },
            ],
        )
    }

    struct Fixture {
        records: Records,
        scope: Vec<String>,
        counters: Counters,
        can_forward: bool,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                records: records(),
                scope: vec!["n1".into()],
                counters: Counters::default(),
                can_forward: true,
            }
        }

        fn handle(&self, bytes: &[u8], received_over: ReceivedOver) -> Action {
            Answerer {
                records: &self.records,
                scope: &self.scope,
                counters: &self.counters,
                can_forward: self.can_forward,
            }
            .handle(bytes, "127.0.0.1:5353".parse().unwrap(), received_over)
        }

        fn reply(&self, bytes: &[u8]) -> Message {
            match self.handle(bytes, ReceivedOver::Udp) {
                Action::Reply(out) => Message::from_vec(&out).unwrap(),
                other => panic!("expected a reply, got {other:?}"),
            }
        }
    }

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut msg = Message::query();
        msg.metadata.id = 0x1234;
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        msg
    }

    fn bytes(msg: &Message) -> Vec<u8> {
        msg.to_vec().unwrap()
    }

    fn a_answers(msg: &Message) -> Vec<Ipv4Addr> {
        msg.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_query_gets_an_authoritative_answer_with_the_clients_id_and_case() {
        let f = Fixture::new();
        let resp = f.reply(&bytes(&query("WeB.", RecordType::A)));
        assert_eq!(resp.metadata.id, 0x1234);
        assert_eq!(resp.metadata.message_type, MessageType::Response);
        assert!(resp.metadata.authoritative);
        assert!(resp.metadata.recursion_desired);
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_answers(&resp), vec![Ipv4Addr::new(10, 0, 1, 2)]);
        assert_eq!(resp.answers[0].ttl, TTL);
        assert_eq!(resp.answers[0].name.to_ascii(), "WeB.");
        assert_eq!(resp.queries[0].name().to_ascii(), "WeB.");
        assert_eq!(f.counters.snapshot().answered_local, 1);
    }

    #[test]
    fn aaaa_mx_and_unknown_types_for_known_names_are_empty_noerror() {
        let f = Fixture::new();
        for qtype in [RecordType::AAAA, RecordType::MX, RecordType::Unknown(65280)] {
            let resp = f.reply(&bytes(&query("web.", qtype)));
            assert_eq!(
                resp.metadata.response_code,
                ResponseCode::NoError,
                "{qtype}"
            );
            assert!(resp.answers.is_empty(), "{qtype}: {:?}", resp.answers);
            assert!(resp.metadata.authoritative);
        }
    }

    #[test]
    fn any_gets_the_a_records() {
        let f = Fixture::new();
        let resp = f.reply(&bytes(&query("db.", RecordType::ANY)));
        assert_eq!(a_answers(&resp), vec![Ipv4Addr::new(10, 0, 1, 4)]);
    }

    #[test]
    fn ptr_for_task_and_vip() {
        let f = Fixture::new();
        let resp = f.reply(&bytes(&query("3.1.0.10.in-addr.arpa.", RecordType::PTR)));
        match &resp.answers[..] {
            [r] => assert_eq!(
                r.data,
                RData::PTR(PTR(Name::from_ascii("web.1.t1.front.").unwrap()))
            ),
            other => panic!("expected one PTR, got {other:?}"),
        }
        let resp = f.reply(&bytes(&query("2.1.0.10.in-addr.arpa.", RecordType::PTR)));
        assert_eq!(
            resp.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("web.front.").unwrap()))
        );
    }

    #[test]
    fn unknown_ptr_and_foreign_names_are_forwarded() {
        let f = Fixture::new();
        for (name, qtype) in [
            ("9.9.9.9.in-addr.arpa.", RecordType::PTR),
            ("example.com.", RecordType::A),
        ] {
            match f.handle(&bytes(&query(name, qtype)), ReceivedOver::Udp) {
                Action::Forward(p) => {
                    assert_eq!(
                        p.question().map(|q| q.name().to_ascii()).as_deref(),
                        Some(name)
                    )
                }
                other => panic!("{name}: expected forward, got {other:?}"),
            }
        }
    }

    #[test]
    fn forward_without_upstreams_is_servfail_at_once() {
        let mut f = Fixture::new();
        f.can_forward = false;
        let resp = f.reply(&bytes(&query("example.com.", RecordType::A)));
        assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(f.counters.snapshot().upstream_failures, 1);
    }

    #[test]
    fn owned_missing_names_are_authoritative_nxdomain() {
        let f = Fixture::new();
        for name in ["nosuch.", "tasks.nosuch.", "nosuch.front."] {
            let resp = f.reply(&bytes(&query(name, RecordType::A)));
            assert_eq!(
                resp.metadata.response_code,
                ResponseCode::NXDomain,
                "{name}"
            );
            assert!(resp.metadata.authoritative);
        }
        assert_eq!(f.counters.snapshot().nxdomain, 3);
    }

    #[test]
    fn wrong_class_is_refused_other_opcodes_notimp_two_questions_formerr() {
        let f = Fixture::new();
        let mut chaos = query("version.bind.", RecordType::TXT);
        chaos.queries[0].query_class = DNSClass::CH;
        assert_eq!(
            f.reply(&bytes(&chaos)).metadata.response_code,
            ResponseCode::Refused
        );

        let mut notify = query("web.", RecordType::A);
        notify.metadata.op_code = OpCode::Notify;
        let resp = f.reply(&bytes(&notify));
        assert_eq!(resp.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(resp.metadata.op_code, OpCode::Notify);

        let mut two = query("web.", RecordType::A);
        two.add_query(Query::query(
            Name::from_ascii("db.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            f.reply(&bytes(&two)).metadata.response_code,
            ResponseCode::FormErr
        );
        let snap = f.counters.snapshot();
        assert_eq!((snap.refused, snap.malformed), (1, 2));
    }

    #[test]
    fn edns_is_echoed_and_newer_versions_get_badvers() {
        let f = Fixture::new();
        let mut q = query("web.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        q.set_edns(edns.clone());
        let resp = f.reply(&bytes(&q));
        assert_eq!(
            resp.edns.as_ref().map(|e| e.max_payload()),
            Some(ADVERTISED_PAYLOAD)
        );

        edns.set_version(1);
        q.set_edns(edns);
        let resp = f.reply(&bytes(&q));
        // BADVERS shares code 16 with BADSIG, which is what the decoder names it.
        assert_eq!(u16::from(resp.metadata.response_code), 16);
        assert!(resp.answers.is_empty());
    }

    #[test]
    fn short_messages_and_responses_are_dropped_and_counted() {
        let f = Fixture::new();
        assert!(matches!(
            f.handle(&[1, 2, 3], ReceivedOver::Udp),
            Action::Drop
        ));
        let mut response = query("web.", RecordType::A);
        response.metadata.message_type = MessageType::Response;
        assert!(matches!(
            f.handle(&bytes(&response), ReceivedOver::Udp),
            Action::Drop
        ));
        assert_eq!(f.counters.snapshot().malformed, 2);
    }

    #[test]
    fn header_that_parses_with_a_bad_body_gets_formerr_with_its_id() {
        let f = Fixture::new();
        // id 0xbeef, RD, qdcount 1, and no question.
        let msg = [0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let resp = f.reply(&msg);
        assert_eq!(resp.metadata.id, 0xbeef);
        assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(f.counters.snapshot().malformed, 1);
    }

    #[test]
    fn large_dnsrr_answers_truncate_over_udp_only() {
        let endpoints = (0..100u8)
            .map(|i| EndpointRecord {
                network_id: "n1".into(),
                task_id: format!("t{i}"),
                ip: Ipv4Addr::new(10, 0, 2, i),
                service: "big".into(),
                vip: None,
                aliases: vec![],
                service_aliases: Vec::new(),
            })
            .collect();
        let mut f = Fixture::new();
        f.records = Records::new(
            vec![NetworkInfo {
                id: "n1".into(),
                name: "front".into(),
            }],
            endpoints,
        );
        let q = bytes(&query("big.", RecordType::A));
        let Action::Reply(udp) = f.handle(&q, ReceivedOver::Udp) else {
            panic!("expected a UDP reply");
        };
        assert!(udp.len() <= 512, "UDP response is {} bytes", udp.len());
        let udp = Message::from_vec(&udp).unwrap();
        assert!(udp.metadata.truncation);
        assert!(udp.answers.len() < 100);
        let Action::Reply(tcp) = f.handle(&q, ReceivedOver::Tcp) else {
            panic!("expected a TCP reply");
        };
        let tcp = Message::from_vec(&tcp).unwrap();
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 100);
        assert_eq!(f.counters.snapshot().truncated, 1);
    }

    #[test]
    fn relay_keeps_upstream_rcode_ra_and_sections_under_the_client_id() {
        let f = Fixture::new();
        let Action::Forward(pending) = f.handle(
            &bytes(&query("Example.COM.", RecordType::A)),
            ReceivedOver::Udp,
        ) else {
            panic!("expected forward");
        };
        let mut upstream = Message::response(0x9999, OpCode::Query);
        upstream.metadata.recursion_available = true;
        upstream.metadata.response_code = ResponseCode::NXDomain;
        upstream.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        upstream.add_authority(Record::from_rdata(
            Name::from_ascii("com.").unwrap(),
            60,
            RData::A(A(Ipv4Addr::new(1, 2, 3, 4))),
        ));
        let resp = Message::from_vec(&pending.relay(&upstream, &f.counters).unwrap()).unwrap();
        assert_eq!(resp.metadata.id, 0x1234);
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        assert!(resp.metadata.recursion_available);
        assert!(!resp.metadata.authoritative);
        assert_eq!(resp.authorities.len(), 1);
        assert_eq!(resp.queries[0].name().to_ascii(), "Example.COM.");
    }
}
