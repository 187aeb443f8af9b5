//! Talking from inside a task's network namespace, as the task itself would: the test opens
//! real sockets on a thread that has entered the namespace (a socket keeps the namespace it was
//! created in), so no tool has to exist inside the task.

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

/// Where node `state_dir`'s agent mounts the network namespace of `task_id`.
pub fn task_netns(state_dir: &Path, task_id: &str) -> PathBuf {
    state_dir.join("netns").join(format!("task-{task_id}"))
}

/// Where node `state_dir`'s agent mounts the sandbox of `network_id`.
pub fn sandbox_netns(state_dir: &Path, network_id: &str) -> PathBuf {
    state_dir.join("netns").join(format!("net-{network_id}"))
}

/// Runs `f` on a fresh thread inside the network namespace at `netns`.
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> T {
    let ns = File::open(netns).unwrap_or_else(|e| panic!("opening {}: {e}", netns.display()));
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in netns")
    })
}

/// A TCP connection opened from inside `netns` (2 s timeouts).
pub fn tcp_connect(netns: &Path, to: SocketAddr) -> std::io::Result<TcpStream> {
    in_netns(netns, || {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(stream)
    })
}

/// Runs `op` again while it fails with EINTR. A read on a socket with a timeout is never
/// restarted after a signal handler ran (signal(7)), and the test process has handlers (a
/// child's exit is a SIGCHLD to the runtime that reaps it), so any such read can be cut short
/// by another test's child exiting.
pub fn retry_interrupted<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// One HTTP/1.1 request on a kept-alive connection; returns the body (whoami's report).
pub fn http_get(stream: &mut TcpStream, path: &str) -> std::io::Result<String> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: shoal\r\n\r\n")?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = retry_interrupted(|| stream.read(&mut buf))?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Ok(body[..length].to_string());
            }
        }
    }
}

/// `GET /` over a new connection from inside `netns`.
pub fn http_from(netns: &Path, to: SocketAddr) -> std::io::Result<String> {
    let mut stream = tcp_connect(netns, to)?;
    http_get(&mut stream, "/")
}

/// A UDP datagram from inside `netns` to an echo server; returns the reply.
pub fn udp_echo_from(netns: &Path, to: SocketAddr, payload: &str) -> std::io::Result<String> {
    let socket = in_netns(netns, || UdpSocket::bind("0.0.0.0:0"))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send_to(payload.as_bytes(), to)?;
    let mut buf = [0u8; 2048];
    let (n, _) = retry_interrupted(|| socket.recv_from(&mut buf))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
