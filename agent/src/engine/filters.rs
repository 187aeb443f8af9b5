//! The `filters` query parameter of list endpoints, as dockerd reads it: JSON mapping each key
//! to its values, `{"name":{"web":true}}` (or the older `{"name":["web"]}`); values of a key
//! are alternatives, keys must all hold; an unknown key is dockerd's "invalid filter".
//! Matching itself is the CLI's ([`crate::cli::filter::Filters`]), so `docker service ls -f`
//! and `shoal service ls -f` agree, but for `label`: swarmkit and dockerd require all of the
//! labels asked for ([`QueryFilters::labels_match`]), which `docker stack services STACK -f
//! label=X` relies on (the stack's own label is added to the user's).

use std::collections::BTreeMap;

use shoal_control::api::KeyValue;

use crate::cli::filter::{Filter, Filters};

use super::errors::ApiError;

/// One request's filters, by key.
#[derive(Debug, Default)]
pub struct QueryFilters(BTreeMap<String, Vec<String>>);

impl QueryFilters {
    /// Parses `raw` (absent or empty: no filter), accepting only `keys`.
    pub fn parse(raw: Option<&str>, keys: &[&str]) -> Result<QueryFilters, ApiError> {
        let raw = raw.unwrap_or("").trim();
        if raw.is_empty() {
            return Ok(QueryFilters::default());
        }
        let json: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let object = json
            .as_object()
            .ok_or_else(|| ApiError::bad_request("invalid filter: not a JSON object"))?;
        let mut by_key = BTreeMap::new();
        for (key, values) in object {
            if !keys.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
            }
            let values: Vec<String> = match values {
                serde_json::Value::Object(set) => set
                    .iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(v, _)| v.clone())
                    .collect(),
                serde_json::Value::Array(list) => list
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter '{key}': values must be an object or a list"
                    )));
                }
            };
            by_key.insert(key.clone(), values);
        }
        Ok(QueryFilters(by_key))
    }

    /// The values given for `key` (none: the key was not given).
    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Whether `matches` holds for one of `key`'s values (true when `key` was not given).
    pub fn allow(&self, key: &str, matches: impl Fn(&str) -> bool) -> bool {
        self.0
            .get(key)
            .is_none_or(|values| values.iter().any(|v| matches(v)))
    }

    /// Whether `labels` hold every `label` filter (swarmkit's `filterMatchLabels`): `KEY`
    /// present, or `KEY=VALUE` present with that value. True when none was given.
    pub fn labels_match(&self, labels: &[KeyValue]) -> bool {
        self.get("label").iter().all(|wanted| {
            let (key, value) = wanted.split_once('=').unwrap_or((wanted, ""));
            labels
                .iter()
                .any(|l| l.key == key && (value.is_empty() || l.value == value))
        })
    }

    /// The same filters in the CLI's type, for its matchers.
    pub fn to_cli(&self) -> Filters {
        let flat: Vec<Filter> = self
            .0
            .iter()
            .flat_map(|(key, values)| {
                values.iter().map(move |value| Filter {
                    key: key.clone(),
                    value: value.clone(),
                })
            })
            .collect();
        Filters::new(&flat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_of_dockers_encodings_parse() {
        let f =
            QueryFilters::parse(Some(r#"{"name":{"web":true,"db":false}}"#), &["name"]).unwrap();
        assert_eq!(f.get("name"), ["web".to_string()]);
        let f = QueryFilters::parse(Some(r#"{"name":["web","api"]}"#), &["name"]).unwrap();
        assert_eq!(f.get("name").len(), 2);
        assert!(f.allow("name", |v| v == "api"));
        assert!(
            f.allow("id", |_| false),
            "a key not given allows everything"
        );
        let bad = QueryFilters::parse(Some(r#"{"color":{"red":true}}"#), &["name"]).unwrap_err();
        assert_eq!(bad.message, "invalid filter 'color'");
        assert!(QueryFilters::parse(None, &[]).unwrap().get("x").is_empty());
    }

    #[test]
    fn every_label_asked_for_must_hold() {
        let labels = [
            KeyValue {
                key: "com.docker.stack.namespace".into(),
                value: "web".into(),
            },
            KeyValue {
                key: "tier".into(),
                value: "front".into(),
            },
        ];
        let f = |raw: &str| QueryFilters::parse(Some(raw), &["label"]).unwrap();
        assert!(f("{}").labels_match(&labels));
        assert!(f(r#"{"label":{"com.docker.stack.namespace=web":true}}"#).labels_match(&labels));
        assert!(
            f(r#"{"label":{"com.docker.stack.namespace":true,"tier=front":true}}"#)
                .labels_match(&labels)
        );
        assert!(
            !f(r#"{"label":{"com.docker.stack.namespace=web":true,"tier=back":true}}"#)
                .labels_match(&labels),
            "one label of another value: no match"
        );
        assert!(!f(r#"{"label":{"missing":true}}"#).labels_match(&labels));
    }
}
