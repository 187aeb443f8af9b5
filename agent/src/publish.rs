//! `-p` / `--publish` / `--publish-add` / `--publish-rm` values, as Docker spells them.

use shoal_control::api::PortConfigMsg;

/// `[PUBLISHED:]TARGET[/PROTOCOL]`, or the long form
/// `published=P,target=T,protocol=tcp|udp,mode=ingress|host,source=client|snat` (every key
/// but `target` optional; `source=snat`: the task sees the receiving node's address, as in
/// Swarm, instead of the client's). A missing published port is allocated by the managers (30000-32767).
pub fn parse_publish(s: &str) -> Result<PortConfigMsg, String> {
    let bad = |why: &str| format!("invalid publish {s:?}: {why}");
    let mut port = PortConfigMsg {
        protocol: "tcp".into(),
        publish_mode: "ingress".into(),
        ..Default::default()
    };
    if s.contains('=') {
        let mut target = None;
        for field in s.split(',') {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| bad(&format!("field {field:?} is not KEY=VALUE")))?;
            match key {
                "published" => port.published_port = number(value).map_err(|e| bad(&e))?,
                "target" => target = Some(number(value).map_err(|e| bad(&e))?),
                "protocol" => port.protocol = protocol(value).map_err(|e| bad(&e))?,
                "mode" => {
                    port.publish_mode = match value {
                        "ingress" | "host" => value.to_string(),
                        _ => return Err(bad("mode must be ingress or host")),
                    }
                }
                "source" => {
                    port.source = match value {
                        "client" | "snat" => value.to_string(),
                        _ => return Err(bad("source must be client or snat")),
                    }
                }
                _ => return Err(bad(&format!("unknown key {key:?}"))),
            }
        }
        port.target_port = target.ok_or_else(|| bad("target= is required"))?;
    } else {
        let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        port.protocol = protocol(proto).map_err(|e| bad(&e))?;
        let (published, target) = ports.split_once(':').unwrap_or(("", ports));
        port.target_port = number(target).map_err(|e| bad(&e))?;
        if !published.is_empty() {
            port.published_port = number(published).map_err(|e| bad(&e))?;
        }
    }
    if port.target_port == 0 {
        return Err(bad("the target port must be 1-65535"));
    }
    Ok(port)
}

/// `--publish-rm`: `TARGET[/PROTOCOL]`, or a whole publish spec (its target and protocol
/// count). Returns (target, protocol if given).
pub fn parse_publish_rm(s: &str) -> Result<(u32, Option<String>), String> {
    if s.contains('=') || s.contains(':') {
        let port = parse_publish(s)?;
        return Ok((port.target_port, Some(port.protocol)));
    }
    let (target, proto) = match s.split_once('/') {
        Some((t, p)) => (
            t,
            Some(protocol(p).map_err(|e| format!("invalid port {s:?}: {e}"))?),
        ),
        None => (s, None),
    };
    let target = number(target).map_err(|e| format!("invalid port {s:?}: {e}"))?;
    Ok((target, proto))
}

fn number(s: &str) -> Result<u32, String> {
    match s.parse::<u16>() {
        Ok(n) => Ok(u32::from(n)),
        Err(_) => Err(format!("{s:?} is not a port number (0-65535)")),
    }
}

fn protocol(s: &str) -> Result<String, String> {
    match s {
        "tcp" | "udp" => Ok(s.to_string()),
        _ => Err(format!("protocol {s:?}: expected tcp or udp")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(published: u32, target: u32, protocol: &str, mode: &str) -> PortConfigMsg {
        PortConfigMsg {
            protocol: protocol.into(),
            target_port: target,
            published_port: published,
            publish_mode: mode.into(),
            source: String::new(),
        }
    }

    #[test]
    fn short_and_long_forms() {
        assert_eq!(
            parse_publish("8080:80"),
            Ok(port(8080, 80, "tcp", "ingress"))
        );
        assert_eq!(
            parse_publish("53:53/udp"),
            Ok(port(53, 53, "udp", "ingress"))
        );
        assert_eq!(parse_publish("80"), Ok(port(0, 80, "tcp", "ingress")));
        assert_eq!(
            parse_publish("published=8080,target=80,protocol=udp,mode=host"),
            Ok(port(8080, 80, "udp", "host"))
        );
        assert_eq!(
            parse_publish("target=80"),
            Ok(port(0, 80, "tcp", "ingress"))
        );
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for bad in [
            "",
            "80:",
            "x:80",
            "70000:80",
            "8080:80/sctp",
            "8080:0",
            "published=8080",
            "target=80,mode=bridge",
            "target=80,color=blue",
            "target",
        ] {
            let err = parse_publish(bad).expect_err(bad);
            assert!(err.starts_with("invalid publish"), "{bad}: {err}");
        }
    }

    #[test]
    fn removal_by_target() {
        assert_eq!(parse_publish_rm("80"), Ok((80, None)));
        assert_eq!(parse_publish_rm("53/udp"), Ok((53, Some("udp".into()))));
        assert_eq!(parse_publish_rm("8080:80"), Ok((80, Some("tcp".into()))));
        assert!(parse_publish_rm("eighty").is_err());
    }
}
