//! Reading a Docker JSON object field by field: each read removes the field, so what is left
//! at the end is exactly what shoal did not read, and [`Reader::rest`] names it in a warning
//! unless it is empty (Docker's clients send many empty objects and zero values).

use serde_json::{Map, Value};

use crate::engine::errors::ApiError;

/// One JSON object being read, and where it sits in the request (`TaskTemplate.Placement`).
pub struct Reader {
    path: String,
    map: Map<String, Value>,
}

impl Reader {
    /// `value` as an object at `path`; null (or absent) reads as an empty object.
    pub fn new(path: &str, value: Value) -> Result<Reader, ApiError> {
        let map = match value {
            Value::Null => Map::new(),
            Value::Object(map) => map,
            _ => return Err(type_error(path, "an object")),
        };
        Ok(Reader {
            path: path.to_string(),
            map,
        })
    }

    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value of `key` (null when absent). As Go's `encoding/json` reads dockerd's
    /// requests, an exact match wins and otherwise the case is ignored: docker-py sends
    /// `{"replicated": {"Replicas": 2}}` for a service's mode.
    pub fn value(&mut self, key: &str) -> Value {
        if let Some(value) = self.map.remove(key) {
            return value;
        }
        let other_case = self
            .map
            .keys()
            .find(|k| k.eq_ignore_ascii_case(key))
            .cloned();
        other_case
            .and_then(|k| self.map.remove(&k))
            .unwrap_or(Value::Null)
    }

    /// `key` as an object of its own.
    pub fn object(&mut self, key: &str) -> Result<Reader, ApiError> {
        let path = self.at(key);
        let value = self.value(key);
        Reader::new(&path, value)
    }

    /// `key` as a list of objects, each a reader at `key[i]`.
    pub fn objects(&mut self, key: &str) -> Result<Vec<Reader>, ApiError> {
        let path = self.at(key);
        match self.value(key) {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| Reader::new(&format!("{path}[{i}]"), item))
                .collect(),
            _ => Err(type_error(&path, "a list")),
        }
    }

    pub fn string(&mut self, key: &str) -> Result<String, ApiError> {
        match self.value(key) {
            Value::Null => Ok(String::new()),
            Value::String(s) => Ok(s),
            _ => Err(type_error(&self.at(key), "a string")),
        }
    }

    pub fn strings(&mut self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.value(key) {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(type_error(&self.at(key), "a list of strings")),
                })
                .collect(),
            _ => Err(type_error(&self.at(key), "a list of strings")),
        }
    }

    /// A `map[string]string` (labels), as key/value pairs sorted by key.
    pub fn string_map(&mut self, key: &str) -> Result<Vec<(String, String)>, ApiError> {
        match self.value(key) {
            Value::Null => Ok(Vec::new()),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(type_error(&self.at(key), "an object of strings")),
                })
                .collect(),
            _ => Err(type_error(&self.at(key), "an object of strings")),
        }
    }

    /// A non-negative integer; absent is `None`.
    pub fn u64_opt(&mut self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.value(key) {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| type_error(&self.at(key), "a non-negative integer")),
            _ => Err(type_error(&self.at(key), "a non-negative integer")),
        }
    }

    pub fn u64(&mut self, key: &str) -> Result<u64, ApiError> {
        Ok(self.u64_opt(key)?.unwrap_or(0))
    }

    pub fn f64(&mut self, key: &str) -> Result<f64, ApiError> {
        match self.value(key) {
            Value::Null => Ok(0.0),
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| type_error(&self.at(key), "a number")),
            _ => Err(type_error(&self.at(key), "a number")),
        }
    }

    pub fn bool(&mut self, key: &str) -> Result<bool, ApiError> {
        match self.value(key) {
            Value::Null => Ok(false),
            Value::Bool(b) => Ok(b),
            _ => Err(type_error(&self.at(key), "true or false")),
        }
    }

    /// A Go `time.Duration` (nanoseconds) in milliseconds; absent is `None`.
    pub fn duration_ms(&mut self, key: &str) -> Result<Option<u64>, ApiError> {
        Ok(self.u64_opt(key)?.map(|ns| ns / 1_000_000))
    }

    /// Drops `key` when it holds one of `defaults` (a value that asks for nothing shoal does
    /// not do, such as `"Isolation": "default"`); anything else stays for [`Reader::rest`].
    pub fn allow(&mut self, key: &str, defaults: &[&str]) {
        if let Some(Value::String(s)) = self.map.get(key)
            && defaults.contains(&s.as_str())
        {
            self.map.remove(key);
        }
    }

    /// Whether nothing non-empty is left to read.
    pub fn is_empty(&self) -> bool {
        self.map.values().all(is_empty)
    }

    /// Names every field left unread that asks for something, in `warnings`.
    pub fn rest(self, warnings: &mut Vec<String>) {
        for (key, value) in &self.map {
            if !is_empty(value) {
                warnings.push(format!(
                    "{} is not supported by shoal and was ignored",
                    self.at(key)
                ));
            }
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Docker's zero values: null, false, 0, "", and lists and objects of nothing but those.
pub fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.values().all(is_empty),
    }
}

fn type_error(path: &str, expected: &str) -> ApiError {
    ApiError::bad_request(format!("invalid JSON: {path} must be {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_as_gos_decoder_matches_them() {
        let mut r = Reader::new(
            "Mode",
            serde_json::json!({
                "replicated": { "Replicas": 2 },
                "GLOBAL": { "Max": 1 },
                "Global": null
            }),
        )
        .unwrap();
        assert_eq!(r.object("Replicated").unwrap().u64("Replicas").unwrap(), 2);
        // The exact name first; the other spelling stays unread, and is named.
        assert_eq!(r.value("Global"), Value::Null);
        let mut warnings = Vec::new();
        r.rest(&mut warnings);
        assert_eq!(
            warnings,
            ["Mode.GLOBAL is not supported by shoal and was ignored"]
        );
    }

    #[test]
    fn what_is_left_and_not_empty_is_named() {
        let mut r = Reader::new(
            "TaskTemplate",
            serde_json::json!({
                "ForceUpdate": 2,
                "Resources": { "Limits": { "NanoCPUs": 1000 } },
                "LogDriver": null,
                "Placement": {},
                "Runtime": "container",
            }),
        )
        .unwrap();
        assert_eq!(r.u64("ForceUpdate").unwrap(), 2);
        r.allow("Runtime", &["", "container"]);
        let mut warnings = Vec::new();
        r.rest(&mut warnings);
        assert_eq!(
            warnings,
            ["TaskTemplate.Resources is not supported by shoal and was ignored"]
        );
    }

    #[test]
    fn wrong_types_are_refused_with_their_path() {
        let mut r = Reader::new("Spec", serde_json::json!({ "Name": 3 })).unwrap();
        assert_eq!(
            r.string("Name").unwrap_err().message,
            "invalid JSON: Spec.Name must be a string"
        );
    }
}
