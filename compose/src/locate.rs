//! Finds the line and column of a key path in a file's text, for errors found after parsing.
//!
//! yaml_serde's `Value` keeps no positions, but its deserializer stamps every error raised
//! inside a visitor with the position of the event being read. So we walk the document with
//! a visitor that follows the path and fails on purpose at its end: the error's location is
//! the location of that key (or list item). Only runs when there is an error to report.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::keypath::{KeyPath, Seg};

/// The message of the deliberate error; anything else means the walk itself failed.
const FOUND: &str = "shoal-compose: found";

/// `(line, column)`, 1-based, of the value (or, for a key path ending in a key, the key) at
/// `path`; `None` when the text does not contain it as written (e.g. it came from a `<<`
/// merge key).
pub(crate) fn locate(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    if path.segments().is_empty() {
        return None;
    }
    let deserializer = yaml_serde::Deserializer::from_str(text);
    match (Seek {
        path: path.segments(),
    })
    .deserialize(deserializer)
    {
        Err(error) if error.to_string().contains(FOUND) => error
            .location()
            .map(|location| (location.line(), location.column())),
        _ => None,
    }
}

/// Follows `path` from the current node.
struct Seek<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            return deserializer.deserialize_any(FailHere);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping or a list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom("not here"));
        };
        while let Some(found) = map.next_key_seed(KeySeek {
            want,
            last: rest.is_empty(),
        })? {
            if found {
                return map.next_value_seed(Seek { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("not here"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom("not here"));
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("not here"));
            }
        }
        seq.next_element_seed(Seek { path: rest })?;
        Err(de::Error::custom("not here"))
    }

    // Scalars: the path goes deeper than the document.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom("not here"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom("not here"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom("not here"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom("not here"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom("not here"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom("not here"))
    }
}

/// Reads one mapping key: `true` if it is the one wanted. When the path ends at that key,
/// fails right there so the error carries the key's position.
struct KeySeek<'w> {
    want: &'w str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeek<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeek<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key == self.want && self.last {
            return Err(E::custom(FOUND));
        }
        Ok(key == self.want)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

/// Fails at the node it is asked to read.
struct FailHere;

impl<'de> Visitor<'de> for FailHere {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "services:\n  api:\n    image: x\n    ports:\n      - \"80\"\n      - target: 81\n        published: x\n";

    fn at(path: KeyPath) -> Option<(usize, usize)> {
        locate(TEXT, &path)
    }

    #[test]
    fn finds_keys_and_items() {
        let api = KeyPath::root().key("services").key("api");
        assert_eq!(at(api.key("image")), Some((3, 5)));
        assert_eq!(at(api.key("ports").index(0)), Some((5, 9)));
        assert_eq!(at(api.key("ports").index(1).key("published")), Some((7, 9)));
    }

    #[test]
    fn misses_are_none() {
        let api = KeyPath::root().key("services").key("api");
        assert_eq!(at(api.key("command")), None);
        assert_eq!(at(api.key("ports").index(5)), None);
        assert_eq!(at(api.key("image").key("deeper")), None);
        assert_eq!(locate("{", &api), None);
    }
}
