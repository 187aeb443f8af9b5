//! A service's `ports:`: the short syntax (`"8080:80"`, `"53:53/udp"`, `"9000-9002:9000-9002"`,
//! `"127.0.0.1:8080:80"`, `80`) expanded exactly as Docker does (go-connections `nat` v0.5.0
//! and `ConvertPortToPortConfig`), and the long syntax (`target`, `published`, `protocol`,
//! `mode`).

use yaml_serde::Value;

use crate::{
    error::{Res, invalid},
    keypath::KeyPath,
    model::{Port, Protocol, PublishMode},
    node::Node,
};

/// Reads `ports:`; `warnings` gets a line for each host IP that swarm ignores.
pub(crate) fn parse(node: Node, warnings: &mut Vec<String>) -> Res<Vec<Port>> {
    let mut ports = Vec::new();
    let mut seen: Vec<&Value> = Vec::new();
    for (item, path) in node.items()? {
        // The schema's `uniqueItems`.
        if seen.contains(&item) {
            return Err(invalid(&path, "duplicate port"));
        }
        seen.push(item);
        match item {
            Value::String(spec) => ports.extend(short(spec, &path, warnings)?),
            Value::Number(number) => {
                ports.extend(short(&crate::node::go_number(number), &path, warnings)?)
            }
            Value::Mapping(_) => ports.push(long(Node::new(item, &path))?),
            _ => return Err(Node::new(item, &path).wrong_type("a port string or mapping")),
        }
    }
    Ok(ports)
}

/// One long-syntax entry. Shoal requires `target` and real port numbers here, which Docker
/// only checks when it creates the service.
fn long(node: Node) -> Res<Port> {
    let fields = node.fields(&["mode", "target", "published", "protocol"], false)?;
    let port_number = |key: &str| -> Res<Option<u16>> {
        let Some((value, path)) = fields.get(key) else {
            return Ok(None);
        };
        let n = Node::new(value, path).u64()?;
        u16::try_from(n)
            .map(Some)
            .map_err(|_| invalid(path, format!("port {n} is out of range (1-65535)")))
    };
    let target = port_number("target")?
        .filter(|t| *t != 0)
        .ok_or_else(|| invalid(node.path, "a port needs a `target` (1-65535)"))?;
    let published = port_number("published")?.filter(|p| *p != 0);
    let protocol = match fields.get("protocol") {
        None => Protocol::Tcp,
        Some((value, path)) => protocol(Node::new(value, path).str()?, path)?,
    };
    let mode = match fields.get("mode") {
        None => PublishMode::Ingress,
        Some((value, path)) => match Node::new(value, path).str()? {
            "ingress" => PublishMode::Ingress,
            "host" => PublishMode::Host,
            other => {
                return Err(invalid(
                    path,
                    format!("unknown publish mode `{other}` (ingress or host)"),
                ));
            }
        },
    };
    Ok(Port {
        target,
        published,
        protocol,
        mode,
    })
}

fn protocol(text: &str, path: &KeyPath) -> Res<Protocol> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Err(invalid(
            path,
            "shoal does not publish sctp ports (tcp or udp)",
        )),
        other => Err(invalid(
            path,
            format!("unknown protocol `{other}` (tcp or udp)"),
        )),
    }
}

/// One short-syntax entry: `[IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`.
fn short(spec: &str, path: &KeyPath, warnings: &mut Vec<String>) -> Res<Vec<Port>> {
    let bad = |why: &str| invalid(path, format!("invalid port `{spec}`: {why}"));
    let parts: Vec<&str> = spec.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    // `TARGET/PROTO`; like Docker, anything after a second `/` is ignored.
    let mut proto_parts = container.split('/');
    let container = proto_parts.next().unwrap_or_default();
    let proto = match proto_parts.next() {
        None | Some("") => "tcp".to_string(),
        Some(proto) => proto.to_ascii_lowercase(),
    };
    let ip = ip
        .strip_prefix('[')
        .and_then(|v6| v6.strip_suffix(']'))
        .unwrap_or(&ip)
        .to_string();
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(&format!("invalid IP address `{ip}`")));
    }
    if container.is_empty() {
        return Err(bad("no port given"));
    }
    let (start, end) = range(container).ok_or_else(|| bad("invalid target port"))?;
    let (host_start, host_end) = if host.is_empty() {
        (0, 0)
    } else {
        range(host).ok_or_else(|| bad("invalid published port"))?
    };
    if !host.is_empty() && end - start != host_end - host_start && end != start {
        return Err(bad("the target and published ranges differ in size"));
    }
    let protocol = match proto.as_str() {
        "tcp" | "udp" | "sctp" => protocol(&proto, path)?,
        _ => return Err(bad(&format!("invalid protocol `{proto}`"))),
    };
    if let Ok(addr) = ip.parse::<std::net::IpAddr>()
        && !addr.is_unspecified()
    {
        warnings.push(format!(
            "{path}: ignoring IP address {ip} in `{spec}`: published ports listen on every address"
        ));
    }
    // Docker orders the target ports of one entry by their text ("10000/tcp" < "9999/tcp").
    let mut targets: Vec<u32> = (start..=end).collect();
    targets.sort_by_key(|t| t.to_string());
    let mut ports = Vec::new();
    for target in targets {
        if target == 0 {
            return Err(bad("port 0 is not a port"));
        }
        let published: Vec<u32> = if host.is_empty() {
            vec![0]
        } else if start == end {
            // One target and a published range: the target is published on every port.
            (host_start..=host_end).collect()
        } else {
            vec![host_start + (target - start)]
        };
        for published in published {
            ports.push(Port {
                target: target as u16,
                published: (published != 0).then_some(published as u16),
                protocol,
                mode: PublishMode::Ingress,
            });
        }
    }
    Ok(ports)
}

/// `N` or `N-M` (16-bit, M >= N); like Go's `nat.ParsePortRange`, parts after a second `-`
/// are ignored.
fn range(text: &str) -> Option<(u32, u32)> {
    let port = |t: &str| -> Option<u32> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse::<u16>().ok().map(u32::from)
    };
    match text.split_once('-') {
        None => port(text).map(|p| (p, p)),
        Some((start, rest)) => {
            let end = rest.split('-').next().unwrap_or_default();
            let (start, end) = (port(start)?, port(end)?);
            (end >= start).then_some((start, end))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Res<Vec<Port>> {
        let value: Value = yaml_serde::from_str(text).unwrap();
        let path = KeyPath::root().key("ports");
        parse(Node::new(&value, &path), &mut Vec::new())
    }

    fn port(target: u16, published: Option<u16>, protocol: Protocol) -> Port {
        Port {
            target,
            published,
            protocol,
            mode: PublishMode::Ingress,
        }
    }

    #[test]
    fn short_syntax() {
        use Protocol::{Tcp, Udp};
        assert_eq!(
            read(r#"["8080:80", "53:53/udp", 9000, "0.0.0.0:81:81"]"#).unwrap(),
            [
                port(80, Some(8080), Tcp),
                port(53, Some(53), Udp),
                port(9000, None, Tcp),
                port(81, Some(81), Tcp)
            ]
        );
    }

    #[test]
    fn short_ranges() {
        use Protocol::Tcp;
        assert_eq!(
            read(r#"["9998-10000:9998-10000"]"#).unwrap(),
            [
                port(10000, Some(10000), Tcp),
                port(9998, Some(9998), Tcp),
                port(9999, Some(9999), Tcp)
            ]
        );
        assert_eq!(
            read(r#"["8000-8001:80"]"#).unwrap(),
            [port(80, Some(8000), Tcp), port(80, Some(8001), Tcp)]
        );
        assert!(read(r#"["8000-8002:80-81"]"#).is_err());
    }

    #[test]
    fn long_syntax() {
        let ports =
            read("[{target: 80, published: 8080, protocol: udp, mode: host}, {target: 81}]")
                .unwrap();
        assert_eq!(
            ports[0],
            Port {
                target: 80,
                published: Some(8080),
                protocol: Protocol::Udp,
                mode: PublishMode::Host
            }
        );
        assert_eq!(ports[1], port(81, None, Protocol::Tcp));
    }

    #[test]
    fn bad_ports() {
        for bad in [
            r#"["80:"]"#,
            r#"["x:80"]"#,
            r#"["70000"]"#,
            r#"["80/sctp"]"#,
            r#"["80/icmp"]"#,
            r#"["nope:80:80"]"#,
            r#"["80", "80"]"#,
            "[{published: 80}]",
            "[{target: 80, mode: mesh}]",
            "[{target: 80, extra: 1}]",
            "[{target: '80'}]",
            "[true]",
        ] {
            assert!(read(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn host_ip_is_a_warning() {
        let value: Value = yaml_serde::from_str(r#"["127.0.0.1:8080:80"]"#).unwrap();
        let path = KeyPath::root().key("ports");
        let mut warnings = Vec::new();
        parse(Node::new(&value, &path), &mut warnings).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}
