//! Typed reading of an (already interpolated) YAML value: each accessor checks the type the
//! Compose schema (Docker's `config_schema_v3.13.json`) allows there and fails with the key
//! path, so a wrong type is one clear error rather than a silent default.

use std::time::Duration;

use yaml_serde::Value;

use crate::{
    error::{Res, invalid},
    keypath::KeyPath,
};

/// A value and where it sits.
#[derive(Clone, Copy)]
pub(crate) struct Node<'a> {
    pub value: &'a Value,
    pub path: &'a KeyPath,
}

/// A mapping's entries, checked against the keys allowed there.
pub(crate) struct Fields<'a> {
    entries: Vec<(String, &'a Value, KeyPath)>,
}

impl<'a> Fields<'a> {
    /// The value of `key` with its path, if present.
    pub fn get(&self, key: &str) -> Option<(&'a Value, &KeyPath)> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, value, path)| (*value, path))
    }

    /// The keys present, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(key, _, _)| key.as_str())
    }
}

/// What a value is, for "must be X, found Y".
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl<'a> Node<'a> {
    pub fn new(value: &'a Value, path: &'a KeyPath) -> Self {
        Node { value, path }
    }

    /// "must be `what`, found a list".
    pub fn wrong_type(&self, what: &str) -> crate::error::Fault {
        invalid(
            self.path,
            format!("must be {what}, found {}", kind(self.value)),
        )
    }

    pub fn is_null(&self) -> bool {
        self.value.is_null()
    }

    /// A mapping whose keys are all among `known` (or start with `x-` when `extensions`).
    pub fn fields(&self, known: &[&str], extensions: bool) -> Res<Fields<'a>> {
        let entries = self.entries()?;
        for (key, _, path) in &entries {
            let extension = extensions && key.starts_with("x-");
            if !(known.contains(&key.as_str()) || extension) {
                return Err(invalid(path, "unknown key"));
            }
        }
        Ok(Fields { entries })
    }

    /// A mapping's entries in file order, with string keys.
    pub fn entries(&self) -> Res<Vec<(String, &'a Value, KeyPath)>> {
        let Value::Mapping(mapping) = self.value else {
            return Err(self.wrong_type("a mapping"));
        };
        mapping
            .iter()
            .map(|(key, value)| match key {
                Value::String(key) => Ok((key.clone(), value, self.path.key(key))),
                other => Err(invalid(
                    self.path,
                    format!("keys must be strings, found {}", kind(other)),
                )),
            })
            .collect()
    }

    pub fn items(&self) -> Res<Vec<(&'a Value, KeyPath)>> {
        let Value::Sequence(items) = self.value else {
            return Err(self.wrong_type("a list"));
        };
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (item, self.path.index(i)))
            .collect())
    }

    pub fn str(&self) -> Res<&'a str> {
        self.value
            .as_str()
            .ok_or_else(|| self.wrong_type("a string"))
    }

    /// A string, `None` when empty (Docker treats an empty string as unset).
    pub fn opt_string(&self) -> Res<Option<String>> {
        let text = self.str()?;
        Ok((!text.is_empty()).then(|| text.to_string()))
    }

    pub fn bool(&self) -> Res<bool> {
        self.value
            .as_bool()
            .ok_or_else(|| self.wrong_type("a boolean"))
    }

    /// A whole number (a float with no fraction counts, as in JSON Schema).
    pub fn i64(&self) -> Res<i64> {
        let Value::Number(number) = self.value else {
            return Err(self.wrong_type("an integer"));
        };
        if let Some(n) = number.as_i64() {
            return Ok(n);
        }
        match number.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
            _ => Err(invalid(
                self.path,
                format!("must be an integer, found {number}"),
            )),
        }
    }

    /// A whole number that is not negative.
    pub fn u64(&self) -> Res<u64> {
        if let Value::Number(number) = self.value
            && let Some(n) = number.as_u64()
        {
            return Ok(n);
        }
        let n = self.i64()?;
        u64::try_from(n).map_err(|_| invalid(self.path, format!("must not be negative, found {n}")))
    }

    pub fn f64(&self) -> Res<f64> {
        match self.value {
            Value::Number(number) => number.as_f64().ok_or_else(|| self.wrong_type("a number")),
            _ => Err(self.wrong_type("a number")),
        }
    }

    /// A string or a number, as text (Go's `fmt.Sprint`, which Docker uses on such values).
    pub fn scalar_text(&self) -> Res<String> {
        match self.value {
            Value::String(text) => Ok(text.clone()),
            Value::Number(number) => Ok(go_number(number)),
            _ => Err(self.wrong_type("a string or a number")),
        }
    }

    /// A duration string (`10s`, `1m30s`), parsed as Go's `time.ParseDuration`.
    pub fn duration(&self) -> Res<Duration> {
        let text = self.str()?;
        crate::duration::parse(text).map_err(|why| invalid(self.path, why))
    }

    /// Schema `list_of_strings`: a list of distinct strings.
    pub fn string_list(&self) -> Res<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for (item, path) in self.items()? {
            let text = Node::new(item, &path).str()?;
            if out.iter().any(|seen| seen == text) {
                return Err(invalid(&path, format!("duplicate item `{text}`")));
            }
            out.push(text.to_string());
        }
        Ok(out)
    }

    /// Schema `string_or_list`.
    pub fn string_or_list(&self) -> Res<Vec<String>> {
        match self.value {
            Value::String(text) => Ok(vec![text.clone()]),
            Value::Sequence(_) => self.string_list(),
            _ => Err(self.wrong_type("a string or a list of strings")),
        }
    }

    /// Schema `list_or_dict`: a mapping of string/number/null values, or a list of distinct
    /// `KEY=VALUE` (or bare `KEY`) strings. Bare keys and nulls are `None`.
    pub fn list_or_dict(&self) -> Res<Vec<(String, Option<String>)>> {
        match self.value {
            Value::Mapping(_) => self
                .entries()?
                .into_iter()
                .map(|(key, value, path)| match value {
                    Value::Null => Ok((key, None)),
                    _ => Node::new(value, &path)
                        .scalar_text()
                        .map_err(|_| {
                            invalid(
                                &path,
                                format!(
                                    "must be a string, a number or null, found {}",
                                    kind(value)
                                ),
                            )
                        })
                        .map(|text| (key, Some(text))),
                })
                .collect(),
            Value::Sequence(_) => Ok(self
                .string_list()?
                .into_iter()
                .map(|item| match item.split_once('=') {
                    Some((key, value)) => (key.to_string(), Some(value.to_string())),
                    None => (item, None),
                })
                .collect()),
            _ => Err(self.wrong_type("a mapping or a list of KEY=VALUE strings")),
        }
    }

    /// Labels: `list_or_dict` where a missing value is the empty string (Docker's `Labels`).
    pub fn labels(&self) -> Res<std::collections::BTreeMap<String, String>> {
        Ok(self
            .list_or_dict()?
            .into_iter()
            .map(|(key, value)| (key, value.unwrap_or_default()))
            .collect())
    }

    /// `driver_opts`: a mapping of string or number values.
    pub fn string_map(&self) -> Res<std::collections::BTreeMap<String, String>> {
        self.entries()?
            .into_iter()
            .map(|(key, value, path)| Ok((key, Node::new(value, &path).scalar_text()?)))
            .collect()
    }
}

/// A YAML number as Go's `fmt.Sprint` prints it: integers as is, floats in `%v` form (`1`,
/// `0.5`, `1e+21`, `1e-06`), because that is how Docker turns numbers into strings.
pub(crate) fn go_number(number: &yaml_serde::Number) -> String {
    if let Some(n) = number.as_i64() {
        return n.to_string();
    }
    if let Some(n) = number.as_u64() {
        return n.to_string();
    }
    go_float(number.as_f64().unwrap_or(f64::NAN))
}

/// Go's `%v` for a float64: shortest round-trip digits, exponent form below 1e-4 and from 1e21.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..21).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    #[test]
    fn go_floats_print_like_fmt_sprint() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e20), "100000000000000000000");
        assert_eq!(go_float(0.000001), "1e-06");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(-1.5e-7), "-1.5e-07");
    }

    #[test]
    fn list_or_dict_reads_both_shapes() {
        let path = KeyPath::root();
        let list = yaml("[A=1, B, C=x=y]");
        assert_eq!(
            Node::new(&list, &path).list_or_dict().unwrap(),
            vec![
                ("A".into(), Some("1".into())),
                ("B".into(), None),
                ("C".into(), Some("x=y".into()))
            ]
        );
        let map = yaml("{A: 1.0, B: null, C: text}");
        assert_eq!(
            Node::new(&map, &path).list_or_dict().unwrap(),
            vec![
                ("A".into(), Some("1".into())),
                ("B".into(), None),
                ("C".into(), Some("text".into()))
            ]
        );
    }

    #[test]
    fn wrong_types_are_errors() {
        let path = KeyPath::root().key("x");
        assert!(Node::new(&yaml("{A: true}"), &path).list_or_dict().is_err());
        assert!(Node::new(&yaml("[a, a]"), &path).string_list().is_err());
        assert!(Node::new(&yaml("\"3\""), &path).u64().is_err());
        assert!(Node::new(&yaml("-3"), &path).u64().is_err());
        assert_eq!(Node::new(&yaml("3.0"), &path).u64().unwrap(), 3);
        assert!(Node::new(&yaml("3.5"), &path).u64().is_err());
        assert!(
            Node::new(&yaml("{a: 1}"), &path)
                .fields(&["b"], false)
                .is_err()
        );
        assert!(
            Node::new(&yaml("{x-a: 1}"), &path)
                .fields(&["b"], true)
                .is_ok()
        );
    }
}
