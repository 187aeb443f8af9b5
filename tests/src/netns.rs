//! A named network namespace owned by a test, and running commands in one.

use std::process::{Command, Output};

/// A network namespace (`/run/netns/<name>`), deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace with loopback up.
    pub fn create(name: &str) -> Netns {
        run_ok(Command::new("ip").args(["netns", "add", name]));
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, for `nsenter --net=` and `setns`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `ip -n <ns> ARGS`, panicking with its stderr when it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that will run inside this namespace (network namespace only, so bpffs and
    /// the rest of the host's mounts stay visible).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `program ARGS` inside the namespace and returns its output, whatever its status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }
}

/// A node's underlay interface in a [`Netns`] of its own, for programs test-run as if frames
/// arrived on it (what `bpf_fib_lookup` routes from): a veth with the node's address, its peer
/// up, forwarding on as on a node.
pub struct Underlay {
    pub netns: Netns,
    /// The veth's name and index.
    pub interface: &'static str,
    pub ifindex: u32,
    /// Its MAC, as `ip` prints it.
    pub mac: String,
}

impl Underlay {
    /// In a new namespace `name`: `u0` with `address` (CIDR).
    pub fn create(name: &str, address: &str) -> Underlay {
        let netns = Netns::create(name);
        netns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
        netns.ip(&["link", "set", "u1", "up"]);
        netns.ip(&["link", "set", "u0", "up"]);
        netns.ip(&["addr", "add", address, "dev", "u0"]);
        run_ok(
            netns
                .command("sysctl")
                .args(["-qw", "net.ipv4.ip_forward=1"]),
        );
        // `ip -o link show u0`: "<index>: u0@u1: ... link/ether <mac> brd ...".
        let link = netns.ip(&["-o", "link", "show", "u0"]);
        let ifindex = link
            .split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .unwrap_or_else(|| panic!("u0's index in {link:?}"));
        let words: Vec<&str> = link.split_whitespace().collect();
        let mac = words
            .iter()
            .position(|w| *w == "link/ether")
            .and_then(|i| words.get(i + 1))
            .unwrap_or_else(|| panic!("u0's MAC in {link:?}"))
            .to_string();
        Underlay {
            netns,
            interface: "u0",
            ifindex,
            mac,
        }
    }

    /// `ip` (an IPv4 address on the link) answers at `mac`, for good.
    pub fn set_neighbour(&self, ip: std::net::Ipv4Addr, mac: [u8; 6]) {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        let ip = ip.to_string();
        let args = [
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &mac,
            "dev",
            "u0",
            "nud",
            "permanent",
        ];
        self.netns.ip(&args);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `cmd`, returns its stdout, and panics with its stderr if it failed.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
