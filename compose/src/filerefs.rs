//! A service's `secrets:` and `configs:`: the short syntax (the object's key) and the long one
//! (`source`, `target`, `uid`, `gid`, `mode`).

use yaml_serde::Value;

use crate::{
    error::{Res, invalid},
    model::FileRef,
    node::Node,
};

/// Reads a service's `secrets:` or `configs:` list.
pub(crate) fn parse(node: Node) -> Res<Vec<FileRef>> {
    let mut refs = Vec::new();
    for (item, path) in node.items()? {
        let item_node = Node::new(item, &path);
        let file_ref = match item {
            Value::String(source) => FileRef {
                source: source.clone(),
                target: None,
                uid: None,
                gid: None,
                mode: None,
            },
            Value::Mapping(_) => {
                // Docker's schema lists these keys but lets others through unread; shoal
                // refuses them like any unknown key.
                let fields =
                    item_node.fields(&["source", "target", "uid", "gid", "mode"], false)?;
                let text = |key: &str| -> Res<Option<String>> {
                    fields
                        .get(key)
                        .map(|(value, path)| Node::new(value, path).opt_string())
                        .transpose()
                        .map(Option::flatten)
                };
                FileRef {
                    source: text("source")?.ok_or_else(|| invalid(&path, "needs a `source`"))?,
                    target: text("target")?,
                    uid: text("uid")?,
                    gid: text("gid")?,
                    mode: fields
                        .get("mode")
                        .map(|(value, path)| mode(Node::new(value, path)))
                        .transpose()?,
                }
            }
            _ => return Err(item_node.wrong_type("a name or a mapping")),
        };
        refs.push(file_ref);
    }
    Ok(refs)
}

/// A file mode. YAML 1.1 octal (`0440`, which Docker's YAML parser reads as 288) arrives here
/// as a string with YAML 1.2 parsers: read it as octal too; `0o440` is a number already.
fn mode(node: Node) -> Res<u32> {
    let n = match node.value {
        Value::String(text)
            if text.len() > 1
                && text.starts_with('0')
                && text.bytes().all(|b| (b'0'..=b'7').contains(&b)) =>
        {
            u64::from_str_radix(text, 8).map_err(|_| node.wrong_type("a file mode"))?
        }
        _ => node.u64()?,
    };
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= 0o7777)
        .ok_or_else(|| invalid(node.path, format!("file mode {n:#o} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keypath::KeyPath;

    fn read(text: &str) -> Res<Vec<FileRef>> {
        let value: Value = yaml_serde::from_str(text).unwrap();
        let path = KeyPath::root().key("secrets");
        parse(Node::new(&value, &path))
    }

    #[test]
    fn short_and_long() {
        let refs = read("[db, {source: tls, target: cert.pem, uid: '1000', gid: '1000', mode: 0440}, {source: k, mode: 0o400}, {source: m, mode: 420}]").unwrap();
        assert_eq!(refs[0].source, "db");
        assert_eq!(refs[0].target, None);
        assert_eq!(refs[1].target.as_deref(), Some("cert.pem"));
        assert_eq!(refs[1].uid.as_deref(), Some("1000"));
        assert_eq!(refs[1].mode, Some(0o440));
        assert_eq!(refs[2].mode, Some(0o400));
        assert_eq!(refs[3].mode, Some(420));
    }

    #[test]
    fn bad_refs() {
        for bad in [
            "[{target: x}]",
            "[{source: x, mode: -1}]",
            "[{source: x, mode: 0999}]",
            "[{source: x, uid: 0}]",
            "[{source: x, other: 1}]",
            "[3]",
        ] {
            assert!(read(bad).is_err(), "{bad} was accepted");
        }
    }
}
