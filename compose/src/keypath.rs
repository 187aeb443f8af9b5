//! Key paths (`services.api.ports[0].target`): where in a Compose file a value sits, for
//! error messages, for finding its line, and for matching interpolation casts.

use std::fmt;

/// A path from the document root to a value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Seg>);

/// One step: a mapping key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// The path of `key` under this one.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        KeyPath(segs)
    }

    /// The path of item `index` of the list at this path.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }

    pub fn segments(&self) -> &[Seg] {
        &self.0
    }

    /// Whether the path matches `pattern`, whose parts are keys, `*` (any key) or `[]` (any
    /// list item): Docker's notation for the values it casts after interpolation.
    pub fn matches(&self, pattern: &[&str]) -> bool {
        self.0.len() == pattern.len()
            && self.0.iter().zip(pattern).all(|(seg, want)| match seg {
                Seg::Key(key) => *want == "*" || want == key,
                Seg::Index(_) => *want == "[]",
            })
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => write!(f, "{key}")?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_keys_and_indexes() {
        let path = KeyPath::root()
            .key("services")
            .key("api")
            .key("ports")
            .index(0);
        assert_eq!(path.to_string(), "services.api.ports[0]");
    }

    #[test]
    fn matches_wildcards() {
        let path = KeyPath::root()
            .key("services")
            .key("api")
            .key("ports")
            .index(2)
            .key("target");
        assert!(path.matches(&["services", "*", "ports", "[]", "target"]));
        assert!(!path.matches(&["services", "*", "ports", "[]", "published"]));
        assert!(!path.matches(&["services", "*", "ports"]));
    }
}
