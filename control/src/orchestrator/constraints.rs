//! Placement constraints (`--constraint`): parsing the CLI form and checking a node against
//! them. The accepted keys are the ones Docker documents for swarm services that make sense
//! here: `node.role`, `node.hostname`, `node.id` and `node.labels.<key>`, with `==` or `!=`.

use crate::cluster::{Constraint, ConstraintKey, NodeRecord};

/// Parses `node.role==manager`, `node.labels.zone != b`, ...
pub fn parse_constraint(expr: &str) -> Result<Constraint, String> {
    // The first operator splits the expression; a second one is rejected below.
    let (key, equal, value) = if let Some((k, v)) = expr.split_once("!=") {
        (k, false, v)
    } else if let Some((k, v)) = expr.split_once("==") {
        (k, true, v)
    } else {
        return Err(format!(
            "invalid constraint {expr:?}: expected <key>==<value> or <key>!=<value>"
        ));
    };
    let key = key.trim();
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("invalid constraint {expr:?}: the value is empty"));
    }
    if value.contains("==") || value.contains("!=") {
        return Err(format!(
            "invalid constraint {expr:?}: more than one operator"
        ));
    }
    let key = match key {
        "node.role" => {
            if !value.eq_ignore_ascii_case("manager") && !value.eq_ignore_ascii_case("worker") {
                return Err(format!(
                    "invalid constraint {expr:?}: node.role is manager or worker"
                ));
            }
            ConstraintKey::Role
        }
        "node.hostname" => ConstraintKey::Hostname,
        "node.id" => ConstraintKey::NodeId,
        _ => match key.strip_prefix("node.labels.") {
            Some(label) if !label.is_empty() => ConstraintKey::Label(label.to_string()),
            Some(_) => {
                return Err(format!(
                    "invalid constraint {expr:?}: the label key after node.labels. is empty"
                ));
            }
            None => {
                return Err(format!(
                    "invalid constraint {expr:?}: expected node.role, node.hostname, node.id or node.labels.<key>"
                ));
            }
        },
    };
    Ok(Constraint {
        key,
        equal,
        value: value.to_string(),
    })
}

/// Whether every constraint holds on `node`.
pub fn satisfies(node: &NodeRecord, constraints: &[Constraint]) -> bool {
    constraints.iter().all(|c| holds(node, c))
}

fn holds(node: &NodeRecord, constraint: &Constraint) -> bool {
    // A missing label is "not equal" to any value, as in Docker: `node.labels.zone!=a` holds
    // on a node without a zone label.
    let actual = match &constraint.key {
        ConstraintKey::Role => Some(node.role.as_str()),
        ConstraintKey::Hostname => Some(node.hostname.as_str()),
        ConstraintKey::NodeId => Some(node.id.as_str()),
        ConstraintKey::Label(label) => node.labels.get(label).map(String::as_str),
    };
    // Docker compares roles and hostnames case-insensitively, label values exactly.
    let matches = match (&constraint.key, actual) {
        (_, None) => false,
        (ConstraintKey::Label(_), Some(actual)) => actual == constraint.value,
        (_, Some(actual)) => actual.eq_ignore_ascii_case(&constraint.value),
    };
    matches == constraint.equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Role;
    use crate::orchestrator::fixture::node;

    #[test]
    fn parses_every_supported_key_and_operator() {
        let c = parse_constraint("node.role==manager").unwrap();
        assert_eq!(
            (c.key, c.equal, c.value.as_str()),
            (ConstraintKey::Role, true, "manager")
        );
        let c = parse_constraint("node.role != worker").unwrap();
        assert_eq!(
            (c.key, c.equal, c.value.as_str()),
            (ConstraintKey::Role, false, "worker")
        );
        let c = parse_constraint("node.hostname==host-1").unwrap();
        assert_eq!(c.key, ConstraintKey::Hostname);
        let c = parse_constraint("node.id==abc").unwrap();
        assert_eq!(c.key, ConstraintKey::NodeId);
        let c = parse_constraint("  node.labels.zone == eu-1 ").unwrap();
        assert_eq!(
            (c.key, c.equal, c.value.as_str()),
            (ConstraintKey::Label("zone".into()), true, "eu-1")
        );
        let c = parse_constraint("node.labels.disk!=hdd").unwrap();
        assert!(!c.equal);
        // Display (in the model) prints it back as typed.
        assert_eq!(c.to_string(), "node.labels.disk!=hdd");
    }

    #[test]
    fn rejects_bad_constraints_with_one_line_errors() {
        assert_eq!(
            parse_constraint("node.foo==x").unwrap_err(),
            "invalid constraint \"node.foo==x\": expected node.role, node.hostname, node.id or node.labels.<key>"
        );
        for bad in [
            "node.role=manager",
            "node.role",
            "node.role==",
            "node.role==boss",
            "node.labels.==x",
            "engine.labels.a==b",
            "node.id==a==b",
            "",
        ] {
            let err = parse_constraint(bad).unwrap_err();
            assert!(err.starts_with("invalid constraint"), "{bad}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn checks_nodes_against_constraints() {
        let mut n = node("n1", Role::Manager);
        n.labels.insert("zone".into(), "a".into());
        let c = |s: &str| parse_constraint(s).unwrap();
        assert!(satisfies(&n, &[]));
        assert!(satisfies(
            &n,
            &[c("node.role==manager"), c("node.labels.zone==a")]
        ));
        assert!(!satisfies(
            &n,
            &[c("node.role==manager"), c("node.labels.zone==b")]
        ));
        assert!(satisfies(
            &n,
            &[c("node.role!=worker"), c("node.hostname==N1")]
        ));
        assert!(satisfies(&n, &[c("node.id==n1")]));
        // A missing label never equals and always differs.
        assert!(!satisfies(&n, &[c("node.labels.disk==ssd")]));
        assert!(satisfies(&n, &[c("node.labels.disk!=ssd")]));
    }
}
