//! Standard base64 with padding, as Go's `encoding/json` writes and reads `[]byte` (a
//! secret's or config's `Spec.Data`): line breaks are skipped when reading, as Go's decoder
//! skips them, and anything else outside the alphabet is Go's "illegal base64 data".

use base64::{DecodeError, Engine as _, engine::general_purpose::STANDARD};

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The bytes `text` encodes; the error is Go's words, with the offset of the first bad byte
/// (counted without the line breaks).
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let symbols: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    STANDARD.decode(&symbols).map_err(|e| {
        let at = match e {
            DecodeError::InvalidByte(at, _) | DecodeError::InvalidLastSymbol(at, _) => at,
            DecodeError::InvalidLength(_) | DecodeError::InvalidPadding => symbols.len(),
        };
        format!("illegal base64 data at input byte {at}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_gos_standard_encoding() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        assert_eq!(decode("Zm9v\r\nYmFy").unwrap(), b"foobar");
    }

    #[test]
    fn bad_input_is_an_error_naming_where() {
        assert_eq!(
            decode("Zm9v!mFy").unwrap_err(),
            "illegal base64 data at input byte 4"
        );
        assert_eq!(
            decode("Zm9").unwrap_err(),
            "illegal base64 data at input byte 3"
        );
        assert!(decode("Zg==Zm9v").is_err());
        assert!(decode("Z===").is_err());
    }
}
