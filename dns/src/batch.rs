//! UDP datagrams a batch at a time: one `recvmmsg` takes up to [`BATCH`] queued queries, one
//! `sendmmsg` sends their responses (nix's safe wrappers; the crate forbids unsafe code).
//!
//! nix's message headers hold raw pointers, so they are not `Send` and cannot live in a UDP
//! loop's future (spawned on the runtime). Each thread keeps one [`Scratch`] per address family
//! in a thread-local instead, borrowed only between two awaits: every task's loop on the serving
//! thread shares it, so its buffers are paid once per thread, not per task.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::debug;

/// Datagrams taken per `recvmmsg`; the loop goes back to the runtime between batches.
pub(crate) const BATCH: usize = 32;

/// Largest query datagram we read. Real queries are a few dozen bytes; a longer datagram is
/// cut, fails to parse, and gets FORMERR.
pub(crate) const UDP_QUERY_BUFFER: usize = 4096;

/// Responses that could not be sent without blocking, with their destinations, for the caller
/// to send once the socket is writable.
pub(crate) type Unsent = Vec<(Vec<u8>, SocketAddr)>;

/// What one call of [`serve_ready`] did.
pub(crate) struct Served {
    /// A whole batch was received: more may be queued, and the caller should let other tasks
    /// run before the next.
    pub(crate) full: bool,
    pub(crate) unsent: Unsent,
}

thread_local! {
    /// Index 0 serves IPv4 sockets, 1 IPv6: the kernel keeps the address length of the last
    /// datagram in a header, so one family's headers must not receive the other's.
    static SCRATCH: RefCell<[Option<Box<Scratch>>; 2]> = const { RefCell::new([None, None]) };
}

/// Receives what is queued on `socket` (up to [`BATCH`] datagrams) and calls `answer` on each
/// with its sender and a buffer for the response; `answer` returns whether it wrote one. Then
/// sends the responses; those the socket would not take without blocking are returned.
///
/// Call when the socket is readable (a spurious wake-up receives nothing); `ipv6` is the
/// socket's family. Only errors of the receive are returned; a failed send is logged.
pub(crate) fn serve_ready(
    socket: &UdpSocket,
    ipv6: bool,
    answer: impl FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> bool,
) -> io::Result<Served> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slots) => slots[usize::from(ipv6)]
            .get_or_insert_with(Scratch::new)
            .serve(socket, answer),
        // Only if `answer` itself served a socket, which it does not.
        Err(_) => Scratch::new().serve(socket, answer),
    })
}

/// Buffers and headers for one batch; reused, so receiving and sending a batch allocates nothing.
struct Scratch {
    recv: MultiHeaders<SockaddrStorage>,
    send: MultiHeaders<SockaddrStorage>,
    buffers: Box<[[u8; UDP_QUERY_BUFFER]; BATCH]>,
    /// Length and sender of each datagram of the last receive.
    received: [(usize, Option<SockaddrStorage>); BATCH],
    /// Responses of the batch, `replies[..n]` addressed to `reply_to[..n]`.
    replies: [Vec<u8>; BATCH],
    reply_to: [Option<SockaddrStorage>; BATCH],
}

impl Scratch {
    fn new() -> Box<Scratch> {
        let buffers = vec![[0u8; UDP_QUERY_BUFFER]; BATCH].into_boxed_slice();
        Box::new(Scratch {
            recv: MultiHeaders::preallocate(BATCH, None),
            send: MultiHeaders::preallocate(BATCH, None),
            buffers: buffers
                .try_into()
                .unwrap_or_else(|_| unreachable!("built with BATCH buffers")),
            received: [(0, None); BATCH],
            replies: std::array::from_fn(|_| Vec::with_capacity(512)),
            reply_to: [None; BATCH],
        })
    }

    fn serve(
        &mut self,
        socket: &UdpSocket,
        mut answer: impl FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> bool,
    ) -> io::Result<Served> {
        let received = self.receive(socket)?;
        let mut replies = 0;
        for (i, (len, from)) in self.received.iter().take(received).enumerate() {
            // A UDP datagram always has a sender; without one there is no one to answer.
            let Some((from, src)) = from.and_then(|f| Some((f, to_std(&f)?))) else {
                continue;
            };
            let (Some(query), Some(reply)) = (
                self.buffers.get(i).and_then(|b| b.get(..*len)),
                self.replies.get_mut(replies),
            ) else {
                continue;
            };
            if answer(query, src, reply) {
                self.reply_to[replies] = Some(from);
                replies += 1;
            }
        }
        Ok(Served {
            full: received == BATCH,
            unsent: self.send(socket, replies),
        })
    }

    /// Datagrams now in `received[..n]` (0 on a spurious wake-up).
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let fd = socket.as_raw_fd();
        let Scratch {
            recv,
            buffers,
            received,
            ..
        } = self;
        let mut count = 0;
        let result = socket.try_io(Interest::READABLE, || {
            let mut iovs = buffers.each_mut().map(|b| [IoSliceMut::new(b)]);
            let messages = recvmmsg(fd, recv, iovs.iter_mut(), MsgFlags::empty(), None)?;
            for (slot, message) in received.iter_mut().zip(messages) {
                *slot = (message.bytes, message.address);
                count += 1;
            }
            // The socket is non-blocking, so fewer than asked means its queue ran dry: report
            // that to tokio as WouldBlock, which clears the readiness (unless an event came in
            // meanwhile) and saves the receive that would only find the queue empty.
            if count < BATCH {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match result {
            Err(err) if err.kind() != io::ErrorKind::WouldBlock => Err(err),
            _ => Ok(count),
        }
    }

    /// Sends `replies[..count]`, returning what would block.
    fn send(&mut self, socket: &UdpSocket, count: usize) -> Unsent {
        let fd = socket.as_raw_fd();
        let mut start = 0;
        while start < count {
            let Scratch {
                send,
                replies,
                reply_to,
                ..
            } = &mut *self;
            let sent = socket.try_io(Interest::WRITABLE, || {
                let slices: [[IoSlice<'_>; 1]; BATCH] =
                    std::array::from_fn(|i| [IoSlice::new(&replies[i])]);
                let no_cmsgs: [ControlMessage<'_>; 0] = [];
                let slices = slices.get(start..count).unwrap_or_default();
                let addrs = reply_to.get(start..count).unwrap_or_default();
                let sent = sendmmsg(fd, send, slices, addrs, no_cmsgs, MsgFlags::empty())?;
                Ok(sent.count())
            });
            match sent {
                // At least one on success; `max` only guards the loop.
                Ok(sent) => start += sent.max(1),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                // An error for this destination: drop its response, as a send_to would.
                Err(err) => {
                    let dst = reply_to.get(start).copied().flatten();
                    debug!(dst = ?dst.as_ref().and_then(to_std), cause = %err, "UDP send failed");
                    start += 1;
                }
            }
        }
        (start..count)
            .filter_map(|i| {
                let dst = self.reply_to.get(i).copied().flatten()?;
                Some((std::mem::take(self.replies.get_mut(i)?), to_std(&dst)?))
            })
            .collect()
    }
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}
