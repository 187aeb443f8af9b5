//! Clap value parsers for flags whose text has a shape of its own (`KEY=VALUE`, mounts,
//! addresses). They return `Result<_, String>`, as clap expects, so the message is what the
//! user sees.

use std::net::{IpAddr, SocketAddr};

use shoal_control::MANAGER_PORT;

/// `KEY=VALUE`.
pub(super) fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!(
            "invalid environment variable {s:?}: expected KEY=VALUE"
        )),
    }
}

/// `type=bind,src=/a,dst=/b[,readonly]` (also `source=`, `target=`, `destination=`, `ro`).
pub(super) fn parse_mount(s: &str) -> Result<(String, String, bool), String> {
    let (mut kind, mut src, mut dst, mut readonly) = (None, None, None, false);
    for field in s.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = Some(v),
            Some(("src" | "source", v)) => src = Some(v),
            Some(("dst" | "destination" | "target", v)) => dst = Some(v),
            Some(("readonly" | "ro", v)) => readonly = v == "true" || v == "1",
            None if field == "readonly" || field == "ro" => readonly = true,
            _ => return Err(format!("invalid mount {s:?}: unknown field {field:?}")),
        }
    }
    match (kind, src, dst) {
        (Some("bind"), Some(src), Some(dst)) => Ok((src.to_string(), dst.to_string(), readonly)),
        (Some(other), ..) if other != "bind" => Err(format!(
            "invalid mount {s:?}: only type=bind is supported (shoal runs no images)"
        )),
        _ => Err(format!(
            "invalid mount {s:?}: expected type=bind,src=PATH,dst=PATH"
        )),
    }
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

/// `--dns`: an IP (port 53) or IP:PORT.
pub(super) fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("invalid DNS server {s:?}: expected IP or IP:PORT"))
}

/// Accepts `IP` or `IP:PORT`, as `docker swarm init --advertise-addr` does.
pub(super) fn parse_advertise_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, MANAGER_PORT))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_addr_takes_ip_or_ip_port() {
        assert_eq!(
            parse_advertise_addr("10.1.2.3").unwrap(),
            "10.1.2.3:2377".parse().unwrap()
        );
        assert_eq!(
            parse_advertise_addr("10.1.2.3:4000").unwrap(),
            "10.1.2.3:4000".parse().unwrap()
        );
        assert!(parse_advertise_addr("eth0:x").is_err());
    }
}
