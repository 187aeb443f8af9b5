//! Env files: `env_file:` entries and the `.env` beside the first Compose file, in Docker's
//! `--env-file` format (one `KEY=VALUE` per line, `#` comments, a bare `KEY` takes its value
//! from the environment, values taken as written).

use std::path::Path;

use crate::error::ComposeError;

/// The variables of the env file at `path`, in order; a bare `KEY` is looked up with `lookup`
/// and left out when not found, as Docker does.
pub fn read(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, EnvFileError> {
    let bytes = std::fs::read(path).map_err(EnvFileError::Read)?;
    parse(&bytes, lookup).map_err(|(line, message)| {
        EnvFileError::Parse(ComposeError::EnvFile {
            path: path.to_path_buf(),
            line,
            message,
        })
    })
}

/// Why an env file could not be used.
#[derive(Debug)]
pub enum EnvFileError {
    Read(std::io::Error),
    Parse(ComposeError),
}

/// Parses env-file text; errors are `(line, message)`.
pub fn parse(
    bytes: &[u8],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let number = i + 1;
        let line = std::str::from_utf8(raw)
            .map_err(|_| (number, "invalid UTF-8".to_string()))?
            .trim_start();
        // Go's bufio.Scanner drops the '\r' of a CRLF line ending.
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (line, None),
        };
        if key.is_empty() {
            return Err((number, format!("no variable name on line `{line}`")));
        }
        if key.contains([' ', '\t']) {
            return Err((number, format!("variable `{key}` contains whitespace")));
        }
        match value {
            Some(value) => out.push((key.to_string(), value.to_string())),
            None => {
                if let Some(value) = lookup(key) {
                    out.push((key.to_string(), value));
                }
            }
        }
    }
    Ok(out)
}

/// A `.env` value without one pair of surrounding quotes (`"1.2"` or `'1.2'`), as Compose
/// reads `.env`; `env_file` values are taken as written, as Docker does.
pub fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "from-env".to_string())
    }

    #[test]
    fn parses_docker_env_files() {
        let text =
            b"\xEF\xBB\xBF# comment\n\n  A=1\nB= spaced \r\nC=\"quoted\"\nSET\nUNSET\nD=x=y\n";
        assert_eq!(
            parse(text, &env).unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), " spaced ".into()),
                ("C".into(), "\"quoted\"".into()),
                ("SET".into(), "from-env".into()),
                ("D".into(), "x=y".into()),
            ]
        );
    }

    #[test]
    fn unquotes_dotenv_values() {
        assert_eq!(unquote("\"1.2\""), "1.2");
        assert_eq!(unquote("'a b'"), "a b");
        assert_eq!(unquote("\"half"), "\"half");
        assert_eq!(unquote("plain"), "plain");
    }

    #[test]
    fn refuses_bad_lines() {
        assert_eq!(parse(b"A=1\n=2\n", &env).unwrap_err().0, 2);
        assert_eq!(parse(b"A B=1\n", &env).unwrap_err().0, 1);
        assert!(parse(b"A=\xff\n", &env).is_err());
    }
}
