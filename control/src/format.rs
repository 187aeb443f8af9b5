//! The encoding of every model document shoal keeps or sends between nodes: the Raft log, vote,
//! state machine and snapshots in redb, the Raft RPCs, and the heartbeat's payloads. CBOR
//! (RFC 8949) through serde, so structs are maps keyed by field name: a field added later (with
//! `#[serde(default)]`) reads from older data as its default, and an older build skips fields
//! it does not know, as protobuf does (see ARCHITECTURE.md, "Versions and upgrades").
//!
//! Every value starts with one byte saying its format, the framing the Raft store had already:
//! - [`POSTCARD`] (0) and [`POSTCARD_SEALED`] (1): postcard, positional, which shoal wrote before
//!   schema 2 of the store; read only by the store's migration.
//! - [`CBOR`] (2): a CBOR document, what goes between nodes.
//! - [`CBOR_SEALED`] (3): a CBOR document sealed with a manager's data key (`raft::seal`), what
//!   the Raft store keeps.
//!
//! A byte above [`CBOR_SEALED`] was written by a newer shoal, and says so.

use serde::{Serialize, Serializer, de::DeserializeOwned};

/// Format byte: postcard (before store schema 2; never written now).
pub const POSTCARD: u8 = 0;
/// Format byte: postcard sealed with the data key (before store schema 2; never written now).
pub const POSTCARD_SEALED: u8 = 1;
/// Format byte: a CBOR document.
pub const CBOR: u8 = 2;
/// Format byte: a CBOR document sealed with the data key.
pub const CBOR_SEALED: u8 = 3;
/// The newest format byte this build reads.
pub const NEWEST: u8 = CBOR_SEALED;

/// A document that did not encode or decode.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot encode the document")]
    Encode(#[source] ciborium::ser::Error<std::io::Error>),
    #[error("the document does not decode")]
    Decode(#[source] ciborium::de::Error<std::io::Error>),
    #[error(
        "the document has format {0}, written by a newer shoal (this one reads up to {NEWEST})"
    )]
    Newer(u8),
    #[error("the document has format {found} where format {expected} was expected")]
    Unexpected { found: u8, expected: u8 },
    #[error("the document is empty")]
    Empty,
}

/// `value` as a bare CBOR document (no format byte): what [`CBOR_SEALED`] values seal.
pub fn to_cbor<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(FormatError::Encode)?;
    Ok(out)
}

/// Reads a bare CBOR document. Fields it does not know are skipped; missing ones take their
/// `#[serde(default)]` (and `Option`s `None`).
pub fn from_cbor<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    ciborium::from_reader(bytes).map_err(FormatError::Decode)
}

/// `value` as a framed document: `[CBOR][cbor]`, what the bytes fields between nodes carry.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, FormatError> {
    let mut out = vec![CBOR];
    ciborium::into_writer(value, &mut out).map_err(FormatError::Encode)?;
    Ok(out)
}

/// Reads what [`encode`] made; refuses any other format, naming a newer one as such.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    match bytes.split_first() {
        Some((&CBOR, document)) => from_cbor(document),
        Some((&found, _)) if found > NEWEST => Err(FormatError::Newer(found)),
        Some((&found, _)) => Err(FormatError::Unexpected {
            found,
            expected: CBOR,
        }),
        None => Err(FormatError::Empty),
    }
}

/// `serialize_with` for a `Vec<u8>` field: a CBOR byte string (one byte per byte) instead of
/// serde's default, an array of integers (up to two bytes per byte). It reads back into a plain
/// `Vec<u8>` (ciborium takes a byte string where a sequence is asked), and postcard encodes a
/// byte string exactly as it does a `Vec<u8>`.
pub fn as_bytes<B, S>(bytes: &B, serializer: S) -> Result<S::Ok, S::Error>
where
    B: AsRef<[u8]> + ?Sized,
    S: Serializer,
{
    serializer.serialize_bytes(bytes.as_ref())
}

thread_local! {
    /// Whether this thread reads (or, in tests, writes) postcard as store schema 1 had it.
    static SCHEMA_1: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the model's fields added since store schema 1 ([`since_schema_2`]) absent,
/// as they were from the postcard a schema-1 store holds (postcard is positional: a field it
/// never had must not be read from it). For the store's migration only.
pub fn as_schema_1<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SCHEMA_1.with(|s| s.set(false));
        }
    }
    SCHEMA_1.with(|s| s.set(true));
    let _reset = Reset;
    f()
}

/// `#[serde(default, with = "crate::format::since_schema_2")]`: a model field added after the
/// postcard store (schema 1), so that a schema-1 store still migrates: within
/// [`as_schema_1`] it is neither read nor written (its default stands in), elsewhere it is an
/// ordinary field.
pub mod since_schema_2 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        if super::SCHEMA_1.with(std::cell::Cell::get) {
            // Postcard writes a unit as nothing at all.
            s.serialize_unit()
        } else {
            value.serialize(s)
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        if super::SCHEMA_1.with(std::cell::Cell::get) {
            Ok(T::default())
        } else {
            T::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        name: String,
        replicas: u64,
    }

    /// V1 with a field added the way the rule says: `#[serde(default)]`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        name: String,
        replicas: u64,
        #[serde(default)]
        cpus: u32,
        #[serde(default)]
        labels: Vec<String>,
    }

    #[test]
    fn a_field_added_later_reads_from_older_documents_and_older_builds_skip_it() {
        let old = encode(&V1 {
            name: "web".into(),
            replicas: 3,
        })
        .unwrap();
        let read: V2 = decode(&old).unwrap();
        assert_eq!(
            read,
            V2 {
                name: "web".into(),
                replicas: 3,
                cpus: 0,
                labels: vec![]
            }
        );
        let new = encode(&V2 {
            name: "db".into(),
            replicas: 1,
            cpus: 4,
            labels: vec!["a".into()],
        })
        .unwrap();
        let read: V1 = decode(&new).unwrap();
        assert_eq!(
            read,
            V1 {
                name: "db".into(),
                replicas: 1
            }
        );
    }

    #[test]
    fn other_formats_are_refused_and_newer_ones_named() {
        let doc = encode(&1u8).unwrap();
        assert_eq!(doc[0], CBOR);
        assert!(matches!(decode::<u8>(&[]), Err(FormatError::Empty)));
        assert!(matches!(
            decode::<u8>(&[POSTCARD, 1]),
            Err(FormatError::Unexpected { found: 0, .. })
        ));
        let newer = decode::<u8>(&[9, 1]).unwrap_err();
        assert!(matches!(newer, FormatError::Newer(9)));
        assert!(newer.to_string().contains("newer shoal"), "{newer}");
        assert!(matches!(
            decode::<V1>(&[CBOR, 0xff, 0x00]),
            Err(FormatError::Decode(_))
        ));
    }

    #[test]
    fn byte_fields_are_byte_strings_and_read_back_as_vectors() {
        #[derive(Serialize)]
        struct Out {
            #[serde(serialize_with = "as_bytes")]
            data: Vec<u8>,
        }
        #[derive(Deserialize)]
        struct In {
            data: Vec<u8>,
        }
        let data: Vec<u8> = (0..=255).collect();
        let doc = encode(&Out { data: data.clone() }).unwrap();
        assert!(doc.len() < 256 + 16, "{} bytes", doc.len());
        assert_eq!(decode::<In>(&doc).unwrap().data, data);
        // postcard: the same bytes as a plain Vec<u8>, so older stores read the same way.
        assert_eq!(
            postcard::to_stdvec(&Out { data: data.clone() }).unwrap(),
            postcard::to_stdvec(&data).unwrap()
        );
    }
}
