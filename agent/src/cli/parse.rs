//! Clap value parsers for flags whose text has a shape of its own (`KEY=VALUE`, mounts,
//! addresses). They return `Result<_, String>`, as clap expects, so the message is what the
//! user sees.

use std::net::{IpAddr, SocketAddr};

use shoal_control::api::Mount;

/// `KEY=VALUE`.
pub(super) fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!(
            "invalid environment variable {s:?}: expected KEY=VALUE"
        )),
    }
}

/// Docker's `--mount`: comma-separated `key=value` fields. `type` is `volume` (the default),
/// `bind` or `tmpfs`; `source`/`src` (a host path for a bind, a volume name, none for an
/// anonymous volume or a tmpfs); `target`/`destination`/`dst`; `readonly`/`ro` (alone, or
/// `=true|false`); for tmpfs, `tmpfs-size` (bytes, or `64m`, `1g`...) and `tmpfs-mode`
/// (octal). Paths and names are checked by the leader, which knows every rule.
pub(super) fn parse_mount(s: &str) -> Result<Mount, String> {
    let invalid = |why: String| format!("invalid mount {s:?}: {why}");
    let mut mount = Mount {
        r#type: "volume".into(),
        ..Default::default()
    };
    let mut tmpfs_key = None;
    for field in s.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.to_ascii_lowercase(), Some(value)),
            None => (field.to_ascii_lowercase(), None),
        };
        match (key.as_str(), value) {
            ("readonly" | "ro", None) => mount.readonly = true,
            ("readonly" | "ro", Some(v)) => {
                mount.readonly = parse_bool(v)
                    .ok_or_else(|| invalid(format!("invalid value for {key}: {v:?}")))?;
            }
            (_, None) => {
                return Err(invalid(format!("field {field:?} must be a key=value pair")));
            }
            ("type", Some(v @ ("bind" | "volume" | "tmpfs"))) => mount.r#type = v.into(),
            ("type", Some(v)) => {
                return Err(invalid(format!(
                    "type {v:?} is not valid: expected volume, bind or tmpfs \
                     (shoal runs no images)"
                )));
            }
            ("source" | "src", Some(v)) => mount.source = v.into(),
            ("target" | "destination" | "dst", Some(v)) => mount.target = v.into(),
            ("tmpfs-size", Some(v)) => {
                mount.tmpfs_size_bytes =
                    parse_size(v).ok_or_else(|| invalid(format!("invalid tmpfs-size {v:?}")))?;
                tmpfs_key.get_or_insert(key);
            }
            ("tmpfs-mode", Some(v)) => {
                mount.tmpfs_mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o7777)
                    .ok_or_else(|| {
                        invalid(format!(
                            "invalid tmpfs-mode {v:?}: expected octal, e.g. 1777"
                        ))
                    })?;
                tmpfs_key.get_or_insert(key);
            }
            (other, Some(_)) => return Err(invalid(format!("unknown key {other:?}"))),
        }
    }
    if mount.target.is_empty() {
        return Err(invalid("target is required".into()));
    }
    match mount.r#type.as_str() {
        "bind" if mount.source.is_empty() => {
            Err(invalid("source is required for a bind mount".into()))
        }
        "tmpfs" if !mount.source.is_empty() => Err(invalid("a tmpfs mount takes no source".into())),
        kind if kind != "tmpfs" && tmpfs_key.is_some() => Err(invalid(format!(
            "cannot mix 'tmpfs-*' options with mount type '{kind}'"
        ))),
        _ => Ok(mount),
    }
}

/// Go's `strconv.ParseBool`, which Docker's flags use.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Docker's `RAMInBytes`: a number (decimals allowed) with an optional binary unit, `k`, `m`,
/// `g`, `t` or `p`, optionally followed by `i` and `b` (`64m`, `1.5g`, `512KiB`, `1024`).
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let digits_end = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut rest = unit.as_str();
    let mut multiplier = 1u64;
    if let Some(c) = rest.chars().next()
        && let Some(power) = "kmgtp".find(c)
    {
        multiplier = 1u64 << (10 * (power as u32 + 1));
        rest = &rest[1..];
    }
    let rest = rest.strip_prefix('i').unwrap_or(rest);
    let rest = rest.strip_prefix('b').unwrap_or(rest);
    if !rest.is_empty() {
        return None;
    }
    let bytes = number * multiplier as f64;
    // Truncated, as Docker does; beyond u64 is no size.
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// `--limit-cpu 0.5`: billionths of a CPU (Docker's NanoCPUs).
pub(super) fn parse_cpus(s: &str) -> Result<u64, String> {
    shoal_compose::size::parse_nano_cpus(s)
        .ok_or_else(|| format!("invalid CPU count {s:?}: a decimal number such as 0.5 or 2"))
}

/// `--limit-memory 64M`: bytes.
pub(super) fn parse_memory(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("invalid size {s:?} (e.g. 64M, 1.5G, 512k)"))
}

/// `SERVICE=REPLICAS`.
pub(super) fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let (name, replicas) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid scale {s:?}: expected SERVICE=REPLICAS"))?;
    let replicas = replicas
        .parse()
        .map_err(|_| format!("invalid replicas {replicas:?} for {name}: expected a number >= 0"))?;
    Ok((name.to_string(), replicas))
}

/// `key=value` (or `key`, with an empty value, as Docker allows).
pub(super) fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("invalid label {s:?}: expected key=value"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// `--network` of `service create` and `--network-add`: a network (name or ID) and the
/// aliases the service gets on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkArg {
    pub target: String,
    pub aliases: Vec<String>,
}

/// Docker's `--network`: `NET`, or the long syntax `name=NET,alias=A[,alias=B]` (keys in any
/// case; values as typed, where Docker lowercases them too).
pub(super) fn parse_network(s: &str) -> Result<NetworkArg, String> {
    if !s.contains('=') {
        return Ok(NetworkArg {
            target: s.to_string(),
            aliases: Vec::new(),
        });
    }
    let mut network = NetworkArg::default();
    for field in s.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!("invalid field {field}"));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        match key.as_str() {
            "name" => network.target = value.to_string(),
            "alias" if value.is_empty() => {
                return Err(format!("invalid network {s:?}: an alias must not be empty"));
            }
            "alias" => network.aliases.push(value.to_string()),
            "driver-opt" | "ip" | "ip6" | "link-local-ip" | "mac-address" | "gw-priority" => {
                return Err(format!(
                    "invalid network {s:?}: {key} is not supported (overlay attachments of \
                     services take only name and alias)"
                ));
            }
            "" => return Err(format!("invalid field {field}")),
            other => return Err(format!("invalid field key {other}")),
        }
    }
    if network.target.is_empty() {
        return Err("network name/id is not specified".to_string());
    }
    Ok(network)
}

/// `--dns`: an IP (port 53) or IP:PORT.
pub(super) fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("invalid DNS server {s:?}: expected IP or IP:PORT"))
}

/// `--advertise-addr IP[:PORT]`, as `docker swarm init --advertise-addr` takes it; without a port, port 0 stands for "the port the agent listens
/// on" (`--listen-addr`'s, 2377 by default), filled in when the flags are resolved.
pub(super) fn parse_advertise_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_take_dockers_short_and_long_syntax() {
        let net = |target: &str, aliases: &[&str]| NetworkArg {
            target: target.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        };
        assert_eq!(parse_network("backend"), Ok(net("backend", &[])));
        assert_eq!(
            parse_network("name=web_backend,alias=api,Alias=api-v1"),
            Ok(net("web_backend", &["api", "api-v1"]))
        );
        assert_eq!(parse_network("name=n1"), Ok(net("n1", &[])));
        for (bad, needle) in [
            ("alias=api", "network name/id is not specified"),
            ("name=n,aliases=x", "invalid field key aliases"),
            ("name=n,alias", "invalid field alias"),
            ("name=n,alias=", "an alias must not be empty"),
            ("name=n,driver-opt=a=b", "driver-opt is not supported"),
        ] {
            let err = parse_network(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn advertise_addr_takes_ip_or_ip_port() {
        assert_eq!(
            parse_advertise_addr("10.1.2.3").unwrap(),
            "10.1.2.3:0".parse().unwrap(),
            "no port: the listening port, filled in later"
        );
        assert_eq!(
            parse_advertise_addr("10.1.2.3:4000").unwrap(),
            "10.1.2.3:4000".parse().unwrap()
        );
        assert!(parse_advertise_addr("eth0:x").is_err());
    }

    #[test]
    fn mounts_are_parsed_as_dockers_cli_parses_them() {
        let m = parse_mount("type=bind,src=/srv,dst=/data,readonly").unwrap();
        assert_eq!(
            (
                m.r#type.as_str(),
                m.source.as_str(),
                m.target.as_str(),
                m.readonly
            ),
            ("bind", "/srv", "/data", true)
        );
        // No type: a volume, as in Docker; no source: an anonymous one.
        let m = parse_mount("source=db,target=/var/lib/db,ro=false").unwrap();
        assert_eq!(
            (m.r#type.as_str(), m.source.as_str(), m.readonly),
            ("volume", "db", false)
        );
        let m = parse_mount("type=volume,destination=/cache").unwrap();
        assert_eq!((m.source.as_str(), m.target.as_str()), ("", "/cache"));
        let m = parse_mount("Type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770,RO=1").unwrap();
        assert_eq!(
            (
                m.r#type.as_str(),
                m.tmpfs_size_bytes,
                m.tmpfs_mode,
                m.readonly
            ),
            ("tmpfs", 64 << 20, 0o1770, true)
        );
    }

    #[test]
    fn bad_mounts_are_one_clear_line() {
        for (spec, needle) in [
            ("type=nfs,src=a,dst=/b", "type \"nfs\" is not valid"),
            (
                "type=volume,src=a,dst=/b,volume-driver=x",
                "unknown key \"volume-driver\"",
            ),
            ("type=volume,src=a", "target is required"),
            ("type=bind,dst=/b", "source is required"),
            ("type=tmpfs,src=x,dst=/b", "takes no source"),
            (
                "type=volume,dst=/b,tmpfs-size=1m",
                "cannot mix 'tmpfs-*' options",
            ),
            ("type=tmpfs,dst=/b,tmpfs-size=lots", "invalid tmpfs-size"),
            ("type=tmpfs,dst=/b,tmpfs-mode=999", "invalid tmpfs-mode"),
            ("type=tmpfs,dst=/b,tmpfs-mode=17777", "invalid tmpfs-mode"),
            ("dst=/b,ro=maybe", "invalid value for ro"),
            ("dst=/b,junk", "must be a key=value pair"),
        ] {
            let err = parse_mount(spec).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn sizes_are_dockers_ram_in_bytes() {
        for (text, bytes) in [
            ("1024", 1024),
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("1g", 1 << 30),
            ("1.5k", 1536),
            ("512KiB", 512 << 10),
            ("2 mb", 2 << 20),
            ("10b", 10),
            ("0", 0),
        ] {
            assert_eq!(parse_size(text), Some(bytes), "{text}");
        }
        for bad in [
            "",
            "m",
            "-1",
            "1x",
            "1mm",
            ".5m",
            "1.",
            "1kbb",
            "99999999999p",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
