//! The gateway bridge's way out: the nftables table `shoal_gw` (masquerade of the bridge's
//! subnet, no routing from the bridge back into it), replaced as a whole in one `nft -f -`
//! transaction, and IPv4 forwarding in the node's netns.

use std::{
    fs,
    io::{self, Write},
    path::Path,
    process::{Command, Stdio},
};

use super::GatewaySpec;
use crate::overlay::OverlayError;

/// The nftables table (family `ip`) holding the masquerade; owned entirely by shoal.
pub const GATEWAY_NFT_TABLE: &str = "shoal_gw";

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const RP_FILTER_ALL: &str = "/proc/sys/net/ipv4/conf/all/rp_filter";
const RP_FILTER_DEFAULT: &str = "/proc/sys/net/ipv4/conf/default/rp_filter";

fn enter_err(netns: &Path) -> impl FnOnce(crate::Error) -> OverlayError {
    let path = netns.to_path_buf();
    move |source| OverlayError::EnterNetns {
        path,
        source: Box::new(source),
    }
}

/// The whole `shoal_gw` table, preceded by "create if missing, then delete" so that the script
/// replaces any previous version atomically and works on a fresh node alike.
pub(super) fn ruleset(spec: &GatewaySpec) -> String {
    let (table, bridge, subnet) = (GATEWAY_NFT_TABLE, &spec.bridge, spec.subnet.trunc());
    format!(
        "table ip {table} {{}}
delete table ip {table}
table ip {table} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != \"{bridge}\" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname \"{bridge}\" oifname \"{bridge}\" drop
    }}
}}
"
    )
}

pub(super) fn removal_script() -> String {
    let table = GATEWAY_NFT_TABLE;
    format!("table ip {table} {{}}\ndelete table ip {table}\n")
}

/// Runs `nft -f -` with `script` from a thread inside `netns`: the child inherits that thread's
/// netns, so the rules land in the node's ruleset whatever netns the agent process is in.
pub(super) fn apply_nft(netns: &Path, script: &str) -> Result<(), OverlayError> {
    let run = || -> io::Result<()> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning nft: {e}")))?;
        // The script is far below a pipe's capacity and nft reads all of it before writing,
        // so writing everything before reading stderr cannot deadlock.
        let written = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(script.as_bytes()),
            None => Err(io::Error::other("nft stdin was not piped")),
        };
        let output = child.wait_with_output()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(io::Error::other(format!(
                "nft -f - failed ({}): {}",
                output.status,
                stderr.trim()
            )));
        }
        written
    };
    crate::netns::run_in(netns, run)
        .map_err(enter_err(netns))?
        .map_err(|source| OverlayError::Netns {
            what: "applying the gateway nftables table (nft -f -) in netns",
            path: netns.to_path_buf(),
            source,
        })
}

/// Makes the reverse-path filter of a task's `netns` loose (`net.ipv4.conf.all.rp_filter=2`)
/// where it is strict: a task behind a published port that keeps the client's address
/// receives the client's packets on its `ingress` interface while its route back to the
/// client is the gateway bridge, which a strict filter (a host's `rp_filter=1`, inherited by
/// new namespaces) drops. Loose still drops sources with no route at all. The kernel takes
/// the larger of `all` and an interface's own value (which starts as `default`), so when
/// neither is strict (1) nothing is written, and a read-only `/proc/sys` (in a container)
/// does not matter.
pub fn loose_reverse_path_filter(netns: &Path) -> Result<(), OverlayError> {
    let loosen = || -> io::Result<()> {
        let strict =
            |path: &str| -> io::Result<bool> { Ok(fs::read_to_string(path)?.trim() == "1") };
        if !strict(RP_FILTER_ALL)? && !strict(RP_FILTER_DEFAULT)? {
            return Ok(());
        }
        fs::write(RP_FILTER_ALL, "2")
    };
    crate::netns::run_in(netns, loosen)
        .map_err(enter_err(netns))?
        .map_err(|source| OverlayError::Netns {
            what: "loosening the strict net.ipv4.conf.all.rp_filter in netns",
            path: netns.to_path_buf(),
            source,
        })
}

/// Sets `net.ipv4.ip_forward=1` in `netns`. Files under /proc/sys/net belong to the netns of
/// the thread that opens them, hence the write from inside. Skipped when already on: writing it
/// resets per-interface forwarding settings, which a reconcile loop should not keep doing.
/// (The routing mesh needs it too: `bpf_fib_lookup` answers only where forwarding is on.)
pub fn enable_ip_forwarding(netns: &Path) -> Result<(), OverlayError> {
    let enable = || -> io::Result<()> {
        if fs::read_to_string(IP_FORWARD)?.trim() == "1" {
            return Ok(());
        }
        fs::write(IP_FORWARD, "1")
    };
    crate::netns::run_in(netns, enable)
        .map_err(enter_err(netns))?
        .map_err(|source| OverlayError::Netns {
            what: "enabling net.ipv4.ip_forward in netns",
            path: netns.to_path_buf(),
            source,
        })
}
