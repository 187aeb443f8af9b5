//! The common UDP query answered straight from its bytes: one question of class IN, no
//! compression, no EDNS options, for a name the records answer (A, ANY, NODATA) or own
//! (NXDOMAIN), with a response that fits the client's size.
//!
//! Every byte of the response is the one [`crate::answer::Answerer`] would send (hickory's
//! encoding, compression and all: the first answer's owner is written out as the client spelled
//! it, the others point at it); anything else, and anything this module is not sure of, is left
//! to it: a `false` from [`answer`] has bumped no counter. The tests below compare the two for
//! many names, types, flags and malformed inputs. On the benchmark's queries, parsing with
//! hickory and encoding with its builder were about half of the serving thread's user time.

use std::net::Ipv4Addr;

use rand::seq::SliceRandom;

use crate::records::{Records, Resolution};
use crate::stats::{Counters, bump};
use crate::wire::{ADVERTISED_PAYLOAD, MAX_UDP_RESPONSE, TTL};

/// Answers beyond this take the general path (hickory stops compressing names after 120).
const MAX_ANSWERS: usize = 64;

/// The longest name in wire form (labels and the root byte), as hickory enforces it.
const MAX_NAME: usize = 255;

const HEADER: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_OPT: u16 = 41;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
/// An OPT record without options: root name, type, class, TTL, RDLENGTH.
const OPT_LEN: usize = 11;
/// An A record whose owner is a compression pointer.
const POINTED_A_LEN: usize = 2 + 10 + 4;

/// What the fast path needs from a query it can answer.
struct Query<'a> {
    /// The request's header bytes: ID, flags.
    header: &'a [u8],
    /// Name, type and class, as sent (echoed in the response).
    question: &'a [u8],
    /// The name as sent, in wire form (the owner of the answers).
    owner: &'a [u8],
    qtype: u16,
    /// The client's OPT record: its payload size and DO bit.
    edns: Option<(u16, bool)>,
}

/// Writes the response to `query` (a UDP datagram) into `out` and bumps its counter, or returns
/// `false`, having counted nothing, for the general path to decide.
pub(crate) fn answer(
    records: &Records,
    scope: &[String],
    query: &[u8],
    counters: &Counters,
    out: &mut Vec<u8>,
) -> bool {
    let mut name = [0u8; MAX_NAME];
    let Some((q, name_len)) = parse(query, &mut name) else {
        return false;
    };
    if q.qtype == TYPE_PTR {
        return false;
    }
    let Some(name) = name
        .get(..name_len)
        .and_then(|n| std::str::from_utf8(n).ok())
    else {
        return false;
    };
    let (rcode, ips, shuffle) = match records.resolve(scope, name) {
        Resolution::Found { ips, shuffle } if matches!(q.qtype, TYPE_A | TYPE_ANY) => {
            (0, ips, shuffle)
        }
        // v4-only networks: the name exists, it just has no such data (NODATA).
        Resolution::Found { .. } => (0, &[][..], false),
        Resolution::NxDomain => (3, &[][..], false),
        Resolution::Forward => return false,
    };
    if !write(&q, rcode, ips, shuffle, out) {
        return false;
    }
    if rcode == 0 {
        bump(&counters.answered_local);
    } else {
        bump(&counters.nxdomain);
    }
    true
}

/// The query, if it is one the fast path answers, and its name lowercased in presentation form
/// (no trailing dot) in `name`, with its length.
fn parse<'a>(msg: &'a [u8], name: &mut [u8; MAX_NAME]) -> Option<(Query<'a>, usize)> {
    let header = msg.get(..HEADER)?;
    let word = |at: usize| {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    // QR clear, opcode QUERY; one question, nothing else but maybe an OPT record.
    if header[2] & 0xf8 != 0 || word(4)? != 1 || word(6)? != 0 || word(8)? != 0 || word(10)? > 1 {
        return None;
    }
    let mut at = HEADER;
    let mut len = 0;
    loop {
        let label = usize::from(*msg.get(at)?);
        if label == 0 {
            break;
        }
        // Longer than 63: a pointer or a reserved label type.
        if label > 63 {
            return None;
        }
        let bytes = msg.get(at + 1..at + 1 + label)?;
        // Only bytes hickory writes unescaped (a `-` is escaped first in a label), so the name
        // is the same string the general path resolves.
        let plain =
            |(i, b): (usize, &u8)| b.is_ascii_alphanumeric() || *b == b'_' || (*b == b'-' && i > 0);
        if !bytes.iter().enumerate().all(plain) {
            return None;
        }
        if len > 0 {
            *name.get_mut(len)? = b'.';
            len += 1;
        }
        let dst = name.get_mut(len..len + label)?;
        for (d, b) in dst.iter_mut().zip(bytes) {
            *d = b.to_ascii_lowercase();
        }
        len += label;
        at += 1 + label;
    }
    let name_end = at + 1;
    // The root is never ours; longer than hickory accepts goes where it is refused.
    if len == 0 || name_end - HEADER > MAX_NAME {
        return None;
    }
    let qtype = word(name_end)?;
    if word(name_end + 2)? != CLASS_IN {
        return None;
    }
    let question_end = name_end + 4;
    let edns = match word(10)? {
        0 => None,
        _ => Some(parse_opt(msg.get(question_end..)?)?),
    };
    let end = question_end + if edns.is_some() { OPT_LEN } else { 0 };
    if msg.len() != end {
        return None;
    }
    Some((
        Query {
            header,
            question: msg.get(HEADER..question_end)?,
            owner: msg.get(HEADER..name_end)?,
            qtype,
            edns,
        },
        len,
    ))
}

/// An OPT record of version 0 without options: its payload size and DO bit.
fn parse_opt(rr: &[u8]) -> Option<(u16, bool)> {
    let rr = rr.get(..OPT_LEN)?;
    let word = |at: usize| u16::from_be_bytes([rr[at], rr[at + 1]]);
    // Root owner, type OPT, [class = payload], [TTL = extended rcode, version, flags], RDLENGTH.
    if rr[0] != 0 || word(1) != TYPE_OPT || rr[6] != 0 || word(9) != 0 {
        return None;
    }
    Some((word(3), word(7) & 0x8000 != 0))
}

/// The response, authoritative, with `rcode` and an A record per address; `false` if it would
/// not fit the client's size (the general path truncates it) or has too many answers.
fn write(q: &Query<'_>, rcode: u8, ips: &[Ipv4Addr], shuffle: bool, out: &mut Vec<u8>) -> bool {
    if ips.len() > MAX_ANSWERS {
        return false;
    }
    let limit = match q.edns {
        Some((payload, _)) => usize::from(payload.clamp(512, MAX_UDP_RESPONSE)),
        None => 512,
    };
    let answers = match ips.len() {
        0 => 0,
        n => q.owner.len() + 14 + (n - 1) * POINTED_A_LEN,
    };
    let opt = if q.edns.is_some() { OPT_LEN } else { 0 };
    let size = HEADER + q.question.len() + answers + opt;
    // hickory writes an owner out in full before replacing it by a pointer: leave it room.
    if size + q.owner.len() > limit {
        return false;
    }
    let mut order = [Ipv4Addr::UNSPECIFIED; MAX_ANSWERS];
    let Some(order) = order.get_mut(..ips.len()) else {
        return false;
    };
    order.copy_from_slice(ips);
    if shuffle {
        order.shuffle(&mut rand::rng());
    }
    let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes();

    out.clear();
    out.extend_from_slice(&q.header[..2]);
    // QR, opcode QUERY, AA, RD as asked; RA, CD as asked, rcode.
    out.push(0x80 | 0x04 | (q.header[2] & 0x01));
    out.push(0x80 | (q.header[3] & 0x10) | rcode);
    out.extend_from_slice(&count(1));
    out.extend_from_slice(&count(order.len()));
    out.extend_from_slice(&count(0));
    out.extend_from_slice(&count(usize::from(q.edns.is_some())));
    out.extend_from_slice(q.question);
    let first = out.len();
    for (i, ip) in order.iter().enumerate() {
        if i == 0 {
            out.extend_from_slice(q.owner);
        } else {
            // `first` is under 300: it fits a pointer's 14 bits.
            out.extend_from_slice(&(0xc000 | (first as u16)).to_be_bytes());
        }
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    if let Some((_, dnssec_ok)) = q.edns {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&ADVERTISED_PAYLOAD.to_be_bytes());
        // Extended rcode (NOERROR and NXDOMAIN have none), version 0, DO as asked, no options.
        out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    debug_assert_eq!(out.len(), size);
    true
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message, OpCode, Query};
    use hickory_proto::rr::{DNSClass, Name, RecordType};

    use super::*;
    use crate::DnsCounters;
    use crate::answer::{Action, Answerer, ReceivedOver};
    use crate::records::{EndpointRecord, NetworkInfo};

    /// front (n1): `web` (VIP 10.0.1.2, 3 tasks), dnsrr `db` (4), `solo` (1), `big` (40),
    /// `huge` (100), and a 63-byte service name (30); Back (n2): `web` (VIP 10.0.2.2, 1 task).
    fn records() -> Records {
        let long = "s".repeat(63);
        let mut endpoints = Vec::new();
        let services: [(&str, &str, u8, u8, Option<Ipv4Addr>); 7] = [
            ("n1", "web", 3, 1, Some(Ipv4Addr::new(10, 0, 1, 2))),
            ("n1", "db", 4, 2, None),
            ("n1", "solo", 1, 3, None),
            ("n1", "big", 40, 4, None),
            ("n1", "huge", 100, 5, None),
            ("n1", &long, 30, 6, None),
            ("n2", "web", 1, 7, Some(Ipv4Addr::new(10, 0, 2, 2))),
        ];
        for (net, service, tasks, subnet, vip) in services {
            for slot in 1..=tasks {
                let task = format!("t{subnet}x{slot}");
                endpoints.push(EndpointRecord {
                    network_id: net.into(),
                    task_id: task.clone(),
                    ip: Ipv4Addr::new(10, 0, subnet, 10 + slot),
                    service: service.into(),
                    vip,
                    aliases: vec![
                        format!("{service}.{slot}.{task}"),
                        format!("{service}.{slot}"),
                    ],
                    service_aliases: Vec::new(),
                });
            }
        }
        let net = |id: &str, name: &str| NetworkInfo {
            id: id.into(),
            name: name.into(),
        };
        Records::new(vec![net("n1", "front"), net("n2", "Back")], endpoints)
    }

    fn scope() -> Vec<String> {
        vec!["n1".into(), "n2".into()]
    }

    /// What each path made of one datagram, and what each counted.
    struct Outcome {
        fast: Option<Vec<u8>>,
        fast_counted: DnsCounters,
        slow: Action,
        slow_counted: DnsCounters,
    }

    fn both(records: &Records, query: &[u8]) -> Outcome {
        let scope = scope();
        let (fast_counters, slow_counters) = (Counters::default(), Counters::default());
        let mut out = vec![0xaa; 7];
        let fast = answer(records, &scope, query, &fast_counters, &mut out).then_some(out);
        let slow = Answerer {
            records,
            scope: &scope,
            counters: &slow_counters,
            can_forward: true,
        }
        .handle(query, "127.0.0.1:5353".parse().unwrap(), ReceivedOver::Udp);
        Outcome {
            fast,
            fast_counted: fast_counters.snapshot(),
            slow,
            slow_counted: slow_counters.snapshot(),
        }
    }

    /// Checks that a fast answer, if any, is the general path's, byte for byte (shuffled A
    /// records compared as sets), counted the same; returns whether there was one.
    fn check(records: &Records, query: &[u8]) -> bool {
        let o = both(records, query);
        let Some(fast) = o.fast else {
            assert_eq!(o.fast_counted, DnsCounters::default(), "{query:02x?}");
            return false;
        };
        let Action::Reply(slow) = o.slow else {
            panic!("fast answered {query:02x?}, the general path: {:?}", o.slow);
        };
        assert_eq!(sorted_a(&fast), sorted_a(&slow), "query {query:02x?}");
        assert_eq!(o.fast_counted, o.slow_counted, "query {query:02x?}");
        true
    }

    /// `msg` with the data of its A answers in ascending order (they may be shuffled).
    fn sorted_a(msg: &[u8]) -> Vec<u8> {
        let mut msg = msg.to_vec();
        let skip_name = |at: &mut usize, msg: &[u8]| loop {
            let len = msg[*at];
            if len & 0xc0 == 0xc0 {
                *at += 2;
                return;
            }
            *at += 1 + usize::from(len);
            if len == 0 {
                return;
            }
        };
        let mut at = HEADER;
        skip_name(&mut at, &msg);
        at += 4;
        let mut spots = Vec::new();
        for _ in 0..u16::from_be_bytes([msg[6], msg[7]]) {
            skip_name(&mut at, &msg);
            let rdlen = usize::from(u16::from_be_bytes([msg[at + 8], msg[at + 9]]));
            if msg[at..at + 2] == TYPE_A.to_be_bytes() && rdlen == 4 {
                spots.push(at + 10);
            }
            at += 10 + rdlen;
        }
        let mut data: Vec<[u8; 4]> = spots
            .iter()
            .map(|&s| msg[s..s + 4].try_into().unwrap())
            .collect();
        data.sort_unstable();
        for (&s, d) in spots.iter().zip(data) {
            msg[s..s + 4].copy_from_slice(&d);
        }
        msg
    }

    fn query(name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut msg = Message::query();
        msg.metadata.id = 0xbeef;
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some((payload, dnssec_ok)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            e.set_dnssec_ok(dnssec_ok);
            msg.set_edns(e);
        }
        msg.to_vec().unwrap()
    }

    /// Names the records answer or own (in several spellings), and a few they do not.
    fn names() -> Vec<String> {
        let mut names: Vec<String> = [
            "web",
            "WEB",
            "wEb.",
            "tasks.web",
            "Tasks.WEB.",
            "db",
            "tasks.db",
            "solo",
            "big",
            "tasks.big",
            "huge",
            "web.front",
            "web.back",
            "WEB.BACK.",
            "tasks.web.Back",
            "web.1",
            "web.2.t1x2",
            "web.2.t1x2.front",
            "db.4",
            "db.back",
            "nosuch",
            "tasks.nosuch",
            "nosuch.front",
            "a.b.front",
            "x_y",
            "we-b",
            "example.com",
            "tasks.a.b",
            "web.7",
            "3.1.0.10.in-addr.arpa",
            "12.2.0.10.in-addr.arpa",
        ]
        .map(String::from)
        .to_vec();
        let long = "s".repeat(63);
        names.push(long.clone());
        names.push(format!("tasks.{long}"));
        names.push(format!("{}.1.t6x1.front", long.to_uppercase()));
        // Up to the 255-byte limit: 3 x 63-byte labels, then up to 61 more.
        for extra in [1, 30, 58, 59, 60, 61] {
            names.push(format!("{long}.{long}.{long}.{}", "e".repeat(extra)));
        }
        names
    }

    const QTYPES: [RecordType; 13] = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::MX,
        RecordType::TXT,
        RecordType::PTR,
        RecordType::CNAME,
        RecordType::SOA,
        RecordType::SRV,
        RecordType::NS,
        RecordType::OPT,
        RecordType::AXFR,
        RecordType::Unknown(65280),
    ];

    const EDNS: [Option<(u16, bool)>; 6] = [
        None,
        Some((512, false)),
        Some((1232, false)),
        Some((4096, true)),
        Some((100, false)),
        Some((65535, true)),
    ];

    #[test]
    fn fast_answers_are_the_general_paths_for_names_types_and_edns() {
        let records = records();
        let mut answered = 0;
        for name in names() {
            for qtype in QTYPES {
                for edns in EDNS {
                    if check(&records, &query(&name, qtype, edns)) {
                        answered += 1;
                    }
                }
            }
        }
        // Most of them are for the fast path: make sure it ran.
        assert!(answered > 1500, "only {answered} fast answers");
    }

    #[test]
    fn the_usual_queries_take_the_fast_path() {
        let records = records();
        for name in [
            "web",
            "Tasks.Web",
            "db",
            "web.1.t1x1",
            "db.back",
            "nosuch",
            "big",
        ] {
            for (qtype, edns) in [
                (RecordType::A, None),
                (RecordType::AAAA, None),
                (RecordType::A, Some((1232, false))),
                (RecordType::ANY, Some((4096, true))),
            ] {
                let q = query(name, qtype, edns);
                // `big` (40 addresses) needs more than 512 bytes.
                let fits = name != "big" || edns.is_some() || qtype != RecordType::A;
                assert_eq!(check(&records, &q), fits, "{name} {qtype} {edns:?}");
            }
        }
    }

    #[test]
    fn header_flags_and_ids_are_the_general_paths() {
        let records = records();
        for name in ["web", "nosuch", "db"] {
            for edns in [None, Some((1232, true))] {
                let base = query(name, RecordType::A, edns);
                for flags in [0x00u8, 0x01, 0x02, 0x04, 0x07] {
                    for flags2 in [0x00u8, 0x10, 0x20, 0x40, 0x80, 0x0f, 0xff] {
                        let mut q = base.clone();
                        q[0] = flags2;
                        q[1] = flags;
                        q[2] = flags;
                        q[3] = flags2;
                        assert!(check(&records, &q), "{name} {flags:02x} {flags2:02x}");
                    }
                }
            }
        }
    }

    #[test]
    fn big_answers_near_the_clients_size_match_or_fall_back() {
        let records = records();
        let (mut fast, mut fell_back) = (0, 0);
        let long = "S".repeat(63);
        for name in ["big", "tasks.big", "huge", "Big.1.t4x1.front", &long] {
            for payload in (512..=1232).chain([4096]) {
                match check(
                    &records,
                    &query(name, RecordType::A, Some((payload, false))),
                ) {
                    true => fast += 1,
                    false => fell_back += 1,
                }
            }
        }
        assert!(fast > 20 && fell_back > 20, "{fast} fast, {fell_back} not");
        // `huge` has more addresses than the fast path writes.
        let q = query("huge", RecordType::A, Some((4096, false)));
        assert!(both(&records, &q).fast.is_none());
    }

    /// A raw query: header with `counts` (qd, an, ns, ar), then `body`.
    fn raw(flags: [u8; 2], counts: [u16; 4], body: &[u8]) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, flags[0], flags[1]];
        for c in counts {
            q.extend_from_slice(&c.to_be_bytes());
        }
        q.extend_from_slice(body);
        q
    }

    #[test]
    fn what_the_fast_path_leaves_to_the_general_one() {
        let records = records();
        let web_a = [&b"\x03web\x00"[..], &[0, 1, 0, 1]].concat();
        let opt = |version: u8, rdata: &[u8]| {
            let mut rr = vec![0, 0, 41, 4, 0xd0, 0, version, 0, 0];
            rr.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
            rr.extend_from_slice(rdata);
            rr
        };
        // Over 255 bytes: 3 x 63 + 62 bytes of labels, 4 length bytes and the root.
        let mut over = Vec::new();
        for label in [63, 63, 63, 62] {
            over.push(label);
            over.extend(std::iter::repeat_n(b's', usize::from(label)));
        }
        over.extend_from_slice(&[0, 0, 1, 0, 1]);
        // Sent as the one question of an RD query with nothing else.
        let questions: [(&str, &[u8]); 12] = [
            ("truncated question", &web_a[..6]),
            ("trailing byte", &[&web_a[..], &[0]].concat()),
            ("pointer", &[0xc0, 12, 0, 1, 0, 1]),
            ("root", &[0, 0, 1, 0, 1]),
            ("class CH", b"\x03web\x00\x00\x01\x00\x03"),
            ("class ANY", b"\x03web\x00\x00\x01\x00\xff"),
            ("escaped dot", b"\x04w.eb\x00\x00\x01\x00\x01"),
            ("leading dash", b"\x04-web\x00\x00\x01\x00\x01"),
            ("wildcard", b"\x01*\x03web\x00\x00\x01\x00\x01"),
            ("non-ascii", b"\x03w\xe9b\x00\x00\x01\x00\x01"),
            ("space", b"\x03w b\x00\x00\x01\x00\x01"),
            ("a 256-byte name", &over),
        ];
        // Sent after `web A` as its one additional record.
        let additionals: [(&str, &[u8]); 5] = [
            ("no OPT", &[]),
            ("EDNS 1", &opt(1, &[])),
            ("EDNS option", &opt(0, &[0, 10, 0, 0])),
            (
                "OPT not at the root",
                &[&b"\x01a"[..], &opt(0, &[])].concat(),
            ),
            (
                "A in additionals",
                &[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4],
            ),
        ];
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("short", vec![0x12, 0x34, 1, 0, 0, 1]),
            ("response", raw([0x81, 0], [1, 0, 0, 0], &web_a)),
            ("notify", raw([0x20, 0], [1, 0, 0, 0], &web_a)),
            ("two questions", raw([1, 0], [2, 0, 0, 0], &web_a.repeat(2))),
            ("no question", raw([1, 0], [0, 0, 0, 0], &[])),
            ("an answer", raw([1, 0], [1, 1, 0, 0], &web_a)),
            ("an authority", raw([1, 0], [1, 0, 1, 0], &web_a)),
            ("two additionals", raw([1, 0], [1, 0, 0, 2], &web_a)),
            ("ptr", query("3.1.0.10.in-addr.arpa", RecordType::PTR, None)),
            ("forwarded", query("example.com", RecordType::A, None)),
        ];
        cases.extend(questions.map(|(what, q)| (what, raw([1, 0], [1, 0, 0, 0], q))));
        cases.extend(
            additionals.map(|(what, rr)| (what, raw([1, 0], [1, 0, 0, 1], &[&web_a, rr].concat()))),
        );
        for (what, q) in cases {
            let o = both(&records, &q);
            assert!(o.fast.is_none(), "{what}: answered by the fast path");
            assert_eq!(o.fast_counted, DnsCounters::default(), "{what}");
        }
    }

    /// Deterministic xorshift, so that a failure can be replayed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn mangled_queries_are_answered_by_the_general_path_or_alike() {
        let records = records();
        let seeds: Vec<Vec<u8>> = [
            ("web", None),
            ("tasks.db", Some((1232, true))),
            ("nosuch.front", None),
            ("Web.1.T1x1", Some((512, false))),
        ]
        .iter()
        .map(|(name, edns)| query(name, RecordType::A, *edns))
        .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut answered = 0;
        for _ in 0..50_000 {
            let mut q = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(3) {
                match rng.below(8) {
                    0 => q.truncate(rng.below(q.len())),
                    1 => q.push(rng.below(256) as u8),
                    _ => {
                        let at = rng.below(q.len());
                        q[at] = rng.below(256) as u8;
                    }
                }
                if q.is_empty() {
                    break;
                }
            }
            if check(&records, &q) {
                answered += 1;
            }
        }
        assert!(answered > 1000, "only {answered} mangled queries answered");
    }

    #[test]
    fn shuffled_names_vary_their_order_and_fixed_ones_do_not() {
        let records = records();
        let mut orders = std::collections::HashSet::new();
        for _ in 0..200 {
            let o = both(&records, &query("db", RecordType::A, None));
            orders.insert(o.fast.unwrap());
        }
        assert!(
            orders.len() > 1,
            "db's 4 addresses always came in one order"
        );
        let vip = both(&records, &query("web", RecordType::A, None)).fast;
        for _ in 0..20 {
            assert_eq!(both(&records, &query("web", RecordType::A, None)).fast, vip);
        }
    }

    #[test]
    fn answers_decode_with_the_clients_case_ttl_and_flags() {
        let records = records();
        let q = query("WeB.BaCk", RecordType::A, Some((1232, true)));
        let out = both(&records, &q).fast.unwrap();
        let msg = Message::from_vec(&out).unwrap();
        assert_eq!(msg.metadata.id, 0xbeef);
        assert!(msg.metadata.authoritative && msg.metadata.recursion_available);
        assert_eq!(msg.metadata.op_code, OpCode::Query);
        assert_eq!(msg.answers.len(), 1);
        assert_eq!(msg.answers[0].name.to_ascii(), "WeB.BaCk.");
        assert_eq!(msg.answers[0].ttl, TTL);
        assert_eq!(msg.answers[0].dns_class, DNSClass::IN);
        let edns = msg.edns.unwrap();
        assert_eq!(edns.max_payload(), ADVERTISED_PAYLOAD);
        assert!(edns.flags().dnssec_ok);
    }
}
