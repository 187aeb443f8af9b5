//! Splits a shell-form `command`/`entrypoint`/`healthcheck` string into argv exactly as Docker
//! does (google/shlex): spaces separate words, `'...'` is literal, `"..."` and `\` escape,
//! and `#` at the start of a word comments out the rest of the line. No variables, no globs.

/// The words of `text`, or why it cannot be split (an unclosed quote, a trailing `\`).
pub fn split(text: &str) -> Result<Vec<String>, &'static str> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Start,
        Word,
        Escape,
        QuotedEscape,
        Double,
        Single,
        Comment,
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut state = State::Start;
    for c in text.chars() {
        let space = matches!(c, ' ' | '\t' | '\r' | '\n');
        state = match state {
            State::Start => match c {
                _ if space => State::Start,
                '"' => State::Double,
                '\'' => State::Single,
                '\\' => State::Escape,
                '#' => State::Comment,
                _ => {
                    word.push(c);
                    State::Word
                }
            },
            State::Word => match c {
                _ if space => {
                    words.push(std::mem::take(&mut word));
                    State::Start
                }
                '"' => State::Double,
                '\'' => State::Single,
                '\\' => State::Escape,
                _ => {
                    word.push(c);
                    State::Word
                }
            },
            State::Escape => {
                word.push(c);
                State::Word
            }
            State::QuotedEscape => {
                word.push(c);
                State::Double
            }
            State::Double => match c {
                '"' => State::Word,
                '\\' => State::QuotedEscape,
                _ => {
                    word.push(c);
                    State::Double
                }
            },
            State::Single => match c {
                '\'' => State::Word,
                _ => {
                    word.push(c);
                    State::Single
                }
            },
            State::Comment if c == '\n' => State::Start,
            State::Comment => State::Comment,
        };
    }
    match state {
        State::Escape | State::QuotedEscape => Err("ends after an escape character (\\)"),
        State::Double | State::Single => Err("has an unclosed quote"),
        State::Word => {
            words.push(word);
            Ok(words)
        }
        State::Start | State::Comment => Ok(words),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_shlex() {
        assert_eq!(
            split(r#"shoal whoami --port '8 0' "a \"b\"" c\ d e#f #comment"#).unwrap(),
            ["shoal", "whoami", "--port", "8 0", "a \"b\"", "c d", "e#f"]
        );
        assert_eq!(split("a \"\" b").unwrap(), ["a", "", "b"]);
        assert_eq!(split("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split("a # x\nb").unwrap(), ["a", "b"]);
    }

    #[test]
    fn refuses_unfinished_quotes() {
        assert!(split("a 'b").is_err());
        assert!(split("a \"b").is_err());
        assert!(split("a\\").is_err());
    }
}
