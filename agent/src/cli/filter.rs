//! `--filter KEY=VALUE` on listings, as Docker's: each command accepts its own keys; values of
//! one key are alternatives, different keys must all hold. `label=KEY` asks for the label,
//! `label=KEY=VALUE` for that value too.

use std::collections::BTreeMap;

use shoal_control::api::KeyValue;

/// One `--filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub key: String,
    pub value: String,
}

/// `service ls`'s keys (Docker's).
pub const SERVICE_KEYS: &[&str] = &["id", "label", "mode", "name"];
/// `network ls`'s keys (Docker's, but `dangling`).
pub const NETWORK_KEYS: &[&str] = &["driver", "id", "label", "name", "scope", "type"];

fn parse(s: &str, keys: &[&str]) -> Result<Filter, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| "bad format of filter (expected name=value)".to_string())?;
    let key = key.trim().to_ascii_lowercase();
    if !keys.contains(&key.as_str()) {
        return Err(format!("invalid filter '{key}'"));
    }
    Ok(Filter {
        key,
        value: value.to_string(),
    })
}

pub(super) fn parse_service_filter(s: &str) -> Result<Filter, String> {
    parse(s, SERVICE_KEYS)
}

pub(super) fn parse_network_filter(s: &str) -> Result<Filter, String> {
    parse(s, NETWORK_KEYS)
}

/// The filters of one listing, by key.
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn new(filters: &[Filter]) -> Filters {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in filters {
            by_key
                .entry(f.key.clone())
                .or_default()
                .push(f.value.clone());
        }
        Filters(by_key)
    }

    /// Whether `matches` holds for one of `key`'s values (true when `key` was not given).
    pub fn allow(&self, key: &str, matches: impl Fn(&str) -> bool) -> bool {
        self.0
            .get(key)
            .is_none_or(|values| values.iter().any(|v| matches(v)))
    }

    /// Whether `labels` satisfy one of the `label=` filters.
    pub fn allow_labels(&self, labels: &[KeyValue]) -> bool {
        self.allow("label", |wanted| label_matches(labels, wanted))
    }
}

/// `KEY` (present) or `KEY=VALUE` (present with that value).
fn label_matches(labels: &[KeyValue], wanted: &str) -> bool {
    match wanted.split_once('=') {
        Some((key, value)) => labels.iter().any(|l| l.key == key && l.value == value),
        None => labels.iter().any(|l| l.key == wanted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn filters_parse_as_dockers() {
        assert_eq!(
            parse_service_filter("label=com.docker.stack.namespace=web"),
            Ok(Filter {
                key: "label".into(),
                value: "com.docker.stack.namespace=web".into()
            })
        );
        assert_eq!(
            parse_service_filter("label"),
            Err("bad format of filter (expected name=value)".into())
        );
        assert_eq!(
            parse_service_filter("driver=overlay"),
            Err("invalid filter 'driver'".into())
        );
        assert!(parse_network_filter("driver=overlay").is_ok());
    }

    #[test]
    fn values_of_a_key_are_alternatives_and_keys_all_hold() {
        let labels = [kv("com.docker.stack.namespace", "web"), kv("tier", "")];
        let f = |list: &[&str]| {
            let parsed: Vec<Filter> = list
                .iter()
                .map(|s| parse_service_filter(s).unwrap())
                .collect();
            Filters::new(&parsed)
        };
        assert!(f(&[]).allow_labels(&labels));
        assert!(f(&["label=tier"]).allow_labels(&labels));
        assert!(f(&["label=com.docker.stack.namespace=web"]).allow_labels(&labels));
        assert!(!f(&["label=com.docker.stack.namespace=api"]).allow_labels(&labels));
        assert!(!f(&["label=tier=x"]).allow_labels(&labels));
        assert!(f(&["label=nope", "label=tier"]).allow_labels(&labels));
        let both = f(&["label=tier", "name=we"]);
        assert!(both.allow_labels(&labels) && both.allow("name", |v| "web".starts_with(v)));
        assert!(!both.allow("name", |v| "api".starts_with(v)));
    }
}
