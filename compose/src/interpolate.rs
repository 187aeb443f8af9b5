//! Variable interpolation: `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?message}`, `${VAR?message}` and `$$`, in every string value of a file (keys are
//! left alone), before the file is typed; then the values Docker casts (replicas, ports,
//! booleans...) are turned from text into numbers and booleans.
//!
//! Two deliberate differences from Docker's reader (docker/cli `cli/compose/template`), both
//! bugs there that silently produce a wrong value:
//! - `$VAR-text` (no braces) is `$VAR` followed by `-text`, as in the Compose Specification and
//!   every shell. Docker reads it as `${VAR-text}` and drops `-text` when VAR is set.
//! - The operator is the one right after the name. Docker picks it by searching the whole
//!   expression, `:-` first then `-`, so `${VAR:?must-be-set}` yields `be-set` instead of
//!   failing, and `${A-x:-y}` looks up a variable named `A-x`.

use yaml_serde::Value;

use crate::{
    error::{Res, invalid},
    keypath::KeyPath,
    node::kind,
};

/// Where a variable's value comes from.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why a string cannot be interpolated.
#[derive(Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// A `$` that starts nothing valid (`$1`, `${}`, a lone `$`).
    Invalid,
    /// `${VAR:?message}` or `${VAR?message}` with VAR missing (or empty, for `:?`).
    Required { name: String, message: String },
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Invalid => {
                f.write_str("invalid interpolation (write `$$` for a literal `$`)")
            }
            TemplateError::Required { name, message } => {
                write!(f, "required variable {name} is missing a value: {message}")
            }
        }
    }
}

/// Substitutes the variables of one string.
pub fn substitute(template: &str, lookup: Lookup) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(braced) = after.strip_prefix('{') {
            let close = braced.find('}').ok_or(TemplateError::Invalid)?;
            out.push_str(&expand(&braced[..close], lookup)?);
            rest = &braced[close + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(TemplateError::Invalid);
            }
            out.push_str(&lookup(&after[..len]).unwrap_or_default());
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Length of the variable name at the start of `text`: `[_A-Za-z][_A-Za-z0-9]*`.
fn name_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    if !bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        return 0;
    }
    bytes
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .unwrap_or(bytes.len())
}

/// Expands the inside of `${...}`.
fn expand(inner: &str, lookup: Lookup) -> Result<String, TemplateError> {
    let len = name_len(inner);
    if len == 0 {
        return Err(TemplateError::Invalid);
    }
    let (name, op) = inner.split_at(len);
    let value = lookup(name);
    let required = |message: &str| TemplateError::Required {
        name: name.to_string(),
        message: message.to_string(),
    };
    if op.is_empty() {
        Ok(value.unwrap_or_default())
    } else if let Some(default) = op.strip_prefix(":-") {
        Ok(value
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.into()))
    } else if let Some(default) = op.strip_prefix('-') {
        Ok(value.unwrap_or_else(|| default.into()))
    } else if let Some(message) = op.strip_prefix(":?") {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| required(message))
    } else if let Some(message) = op.strip_prefix('?') {
        value.ok_or_else(|| required(message))
    } else {
        Err(TemplateError::Invalid)
    }
}

/// How an interpolated string becomes the type the schema wants at that path.
#[derive(Clone, Copy)]
enum Cast {
    Int,
    Float,
    Bool,
}

/// Docker's `interpolateTypeCastMapping`: only these values are converted, and only when
/// interpolation changed them (a quoted `"3"` stays a string and fails the type check).
const CASTS: &[(&[&str], Cast)] = &[
    (&["services", "*", "configs", "[]", "mode"], Cast::Int),
    (&["services", "*", "secrets", "[]", "mode"], Cast::Int),
    (&["services", "*", "healthcheck", "retries"], Cast::Int),
    (&["services", "*", "healthcheck", "disable"], Cast::Bool),
    (&["services", "*", "deploy", "replicas"], Cast::Int),
    (
        &["services", "*", "deploy", "update_config", "parallelism"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "update_config",
            "max_failure_ratio",
        ],
        Cast::Float,
    ),
    (
        &["services", "*", "deploy", "rollback_config", "parallelism"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "rollback_config",
            "max_failure_ratio",
        ],
        Cast::Float,
    ),
    (
        &["services", "*", "deploy", "restart_policy", "max_attempts"],
        Cast::Int,
    ),
    (
        &[
            "services",
            "*",
            "deploy",
            "placement",
            "max_replicas_per_node",
        ],
        Cast::Int,
    ),
    (&["services", "*", "ports", "[]", "target"], Cast::Int),
    (&["services", "*", "ports", "[]", "published"], Cast::Int),
    (&["services", "*", "ulimits", "*"], Cast::Int),
    (&["services", "*", "ulimits", "*", "hard"], Cast::Int),
    (&["services", "*", "ulimits", "*", "soft"], Cast::Int),
    (&["services", "*", "privileged"], Cast::Bool),
    (&["services", "*", "oom_score_adj"], Cast::Int),
    (&["services", "*", "read_only"], Cast::Bool),
    (&["services", "*", "stdin_open"], Cast::Bool),
    (&["services", "*", "tty"], Cast::Bool),
    (&["services", "*", "volumes", "[]", "read_only"], Cast::Bool),
    (
        &["services", "*", "volumes", "[]", "volume", "nocopy"],
        Cast::Bool,
    ),
    (&["networks", "*", "external"], Cast::Bool),
    (&["networks", "*", "internal"], Cast::Bool),
    (&["networks", "*", "attachable"], Cast::Bool),
    (&["volumes", "*", "external"], Cast::Bool),
    (&["secrets", "*", "external"], Cast::Bool),
    (&["configs", "*", "external"], Cast::Bool),
];

/// Interpolates every string value under `value` (at `path`) in place.
pub(crate) fn interpolate(value: &mut Value, path: &KeyPath, lookup: Lookup) -> Res<()> {
    match value {
        Value::String(text) => {
            let new = substitute(text, lookup).map_err(|why| invalid(path, why.to_string()))?;
            if new != *text {
                *value = cast(new, path)?;
            }
        }
        Value::Mapping(mapping) => {
            for (key, item) in mapping.iter_mut() {
                let Value::String(key) = key else {
                    return Err(invalid(
                        path,
                        format!("keys must be strings, found {}", kind(key)),
                    ));
                };
                interpolate(item, &path.key(key), lookup)?;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &path.index(i), lookup)?;
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, path, lookup)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Converts an interpolated string where Docker would (Go's `strconv.Atoi`, `ParseFloat`,
/// and YAML 1.1 booleans).
fn cast(text: String, path: &KeyPath) -> Res<Value> {
    let Some(cast) = CASTS
        .iter()
        .find(|(pattern, _)| path.matches(pattern))
        .map(|(_, cast)| *cast)
    else {
        return Ok(Value::String(text));
    };
    let fail = |what: &str| invalid(path, format!("`{text}` is not {what}"));
    match cast {
        Cast::Int => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| fail("an integer")),
        Cast::Float => text
            .parse::<f64>()
            .map(Value::from)
            .map_err(|_| fail("a number")),
        Cast::Bool => match text.to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "on" => Ok(Value::Bool(true)),
            "n" | "no" | "false" | "off" => Ok(Value::Bool(false)),
            _ => Err(fail("a boolean")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "NAME" => Some("web".into()),
            "EMPTY" => Some(String::new()),
            "N" => Some("3".into()),
            _ => None,
        }
    }

    fn sub(template: &str) -> Result<String, TemplateError> {
        substitute(template, &env)
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(sub("${NAME}-$NAME.x"), Ok("web-web.x".into()));
        assert_eq!(sub("a${UNSET}b$UNSET"), Ok("ab".into()));
        assert_eq!(sub("no vars"), Ok("no vars".into()));
    }

    #[test]
    fn defaults() {
        assert_eq!(sub("${UNSET:-d}"), Ok("d".into()));
        assert_eq!(sub("${EMPTY:-d}"), Ok("d".into()));
        assert_eq!(sub("${UNSET-d}"), Ok("d".into()));
        assert_eq!(sub("${EMPTY-d}"), Ok("".into()));
        assert_eq!(sub("${NAME:-d}"), Ok("web".into()));
        assert_eq!(sub("${UNSET:-a b-c}"), Ok("a b-c".into()));
    }

    #[test]
    fn required() {
        assert_eq!(sub("${NAME:?set it}"), Ok("web".into()));
        assert_eq!(sub("${EMPTY?set it}"), Ok("".into()));
        assert_eq!(
            sub("${EMPTY:?set it}"),
            Err(TemplateError::Required {
                name: "EMPTY".into(),
                message: "set it".into()
            })
        );
        // Docker would answer "be-set" here (its hard-default rule matches the dash first).
        assert!(matches!(
            sub("${UNSET?must-be-set}"),
            Err(TemplateError::Required { .. })
        ));
    }

    #[test]
    fn escapes_and_invalid() {
        assert_eq!(sub("$$NAME $${NAME}"), Ok("$NAME ${NAME}".into()));
        for bad in [
            "$",
            "a $ b",
            "$1",
            "${}",
            "${NAME",
            "${1A}",
            "${NAME:x}",
            "${NA ME}",
        ] {
            assert_eq!(sub(bad), Err(TemplateError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn unbraced_stops_at_the_name() {
        // Docker: "web" (it reads `$NAME-dir` as `${NAME-dir}`); the Compose spec: "web-dir".
        assert_eq!(sub("$NAME-dir"), Ok("web-dir".into()));
        assert_eq!(sub("$NAME:x"), Ok("web:x".into()));
    }

    #[test]
    fn casts_changed_values_only() {
        let mut doc: Value = yaml_serde::from_str(
            "services: {a: {deploy: {replicas: $N}, ports: [{target: '80'}]}}",
        )
        .unwrap();
        interpolate(&mut doc, &KeyPath::root(), &env).unwrap();
        assert_eq!(doc["services"]["a"]["deploy"]["replicas"], Value::from(3));
        assert_eq!(
            doc["services"]["a"]["ports"][0]["target"],
            Value::from("80")
        );
    }

    #[test]
    fn cast_failures_name_the_key() {
        let mut doc: Value =
            yaml_serde::from_str("services: {a: {deploy: {replicas: $NAME}}}").unwrap();
        let error = interpolate(&mut doc, &KeyPath::root(), &env).unwrap_err();
        let crate::error::Fault::Invalid { path, message } = error else {
            panic!("unexpected {error:?}");
        };
        assert_eq!(path.to_string(), "services.a.deploy.replicas");
        assert!(message.contains("not an integer"), "{message}");
    }
}
