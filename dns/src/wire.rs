//! The numbers every message shoal writes agrees on, whichever path writes it (`answer`, `fast`,
//! or `forward` asking upstream): record TTL and message sizes.

/// TTL of every record shoal answers, as Swarm's.
pub(crate) const TTL: u32 = 600;

/// The most we put in one UDP response whatever payload size the client advertises: more risks
/// fragmentation and buys nothing for the answers a task asks for.
pub(crate) const MAX_UDP_RESPONSE: u16 = 4096;

/// The UDP payload size our OPT record advertises (the DNS flag day 2020 value).
pub(crate) const ADVERTISED_PAYLOAD: u16 = 1232;
