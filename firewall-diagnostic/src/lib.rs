//! Positioned errors for the operator's YAML files (`FILE:LINE:COL: error: ...`) and the one
//! YAML entry point that produces them; `file` reads such a file without waiting on a FIFO.

mod file;

use std::{fmt, path::Path};

pub use file::{FileError, read_regular};

use serde::de::DeserializeOwned;
use serde_saphyr::Location;

/// One problem in a file, at a 1-based line and column (0 when the parser could not tell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl Diagnostic {
    pub fn at(location: &Location, message: impl Into<String>) -> Self {
        Self {
            line: u32::try_from(location.line()).unwrap_or(u32::MAX),
            column: u32::try_from(location.column()).unwrap_or(u32::MAX),
            message: message.into(),
        }
    }
}

/// Every problem found in one file, printed one per line as `FILE:LINE:COL: error: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.file, d.line, d.column, d.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Parses YAML into `T`, turning a syntax or schema error into a positioned diagnostic.
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Diagnostics> {
    serde_saphyr::from_str_with_options(text, options(text)).map_err(|err| {
        let location = err.location().unwrap_or(Location::UNKNOWN);
        Diagnostics {
            file: path.display().to_string(),
            items: vec![Diagnostic::at(&location, plain_message(&err))],
        }
    })
}

/// serde-saphyr's default budget (1M events, 250k nodes) rejects rule files above about 20k
/// rules. Without aliases every event and node costs at least a byte of input, so a budget of
/// one per byte admits any honest file while keeping the work linear in its size; the
/// parser's alias and anchor limits still stop expansion bombs.
fn options(text: &str) -> serde_saphyr::Options {
    let default = serde_saphyr::Budget::default();
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: default.max_events.max(text.len()),
            max_nodes: default.max_nodes.max(text.len()),
        },
        // YAML 1.1's `yes`, `no`, `on`, `off`, `y`, `n` are not booleans: `state: on` or
        // `watch: "no"` is an error, never a silent guess.
        strict_booleans: true,
    }
}

/// The text of a file read as `bytes`, or an error at the first byte that is not UTF-8 (its
/// byte offset, and the line and column where it sits).
pub fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, Diagnostics> {
    String::from_utf8(bytes).map_err(|err| {
        let offset = err.utf8_error().valid_up_to();
        let valid = std::str::from_utf8(&err.as_bytes()[..offset]).expect("valid up to offset");
        let line = valid.matches('\n').count() + 1;
        let column = valid
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        Diagnostics {
            file: path.display().to_string(),
            items: vec![Diagnostic {
                line: u32::try_from(line).unwrap_or(u32::MAX),
                column: u32::try_from(column).unwrap_or(u32::MAX),
                message: format!("invalid UTF-8 at byte {offset}: the file must be UTF-8 text"),
            }],
        }
    })
}

/// The parser's message without its source snippet and position, which we print ourselves.
fn plain_message(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(message, _)| message);
    // The parser names Rust types ("invalid i64"); operators think in whole numbers.
    match message.strip_prefix("invalid ") {
        Some("i64" | "u64" | "i32" | "u32" | "u16" | "u8") => "expected a whole number".to_string(),
        Some("boolean") | Some("boolean (strict mode expects true/false)") => {
            "expected true or false (YAML 1.1's yes, no, on and off are not booleans here)"
                .to_string()
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Flag {
        #[allow(dead_code)]
        on: bool,
    }

    // Each row: a YAML bool value and whether it is one (YAML 1.2 spellings only).
    #[test]
    fn only_true_and_false_are_booleans() {
        let cases = [
            ("true", true),
            ("false", true),
            ("\"true\"", true),
            ("yes", false),
            ("no", false),
            ("on", false),
            ("off", false),
            ("y", false),
            ("n", false),
            ("\"y\"", false),
            ("'yes'", false),
            ("\"off\"", false),
            ("Yes", false),
        ];
        for (value, ok) in cases {
            let text = format!("on: {value}\n");
            let result = parse_yaml::<Flag>(Path::new("f.yaml"), &text);
            assert_eq!(result.is_ok(), ok, "{value}: {result:?}");
            if let Err(err) = result {
                assert_eq!((err.items[0].line, err.items[0].column), (1, 5), "{value}");
                assert!(err.to_string().contains("expected true or false"), "{err}");
            }
        }
    }

    // Each row: bytes, and the (line, column) and byte offset of the first bad byte.
    #[test]
    fn invalid_utf8_is_reported_at_its_byte_and_position() {
        let cases: [(&[u8], u32, u32, usize); 3] = [
            (b"\xff", 1, 1, 0),
            (b"a: 1\nb: \xc3(\n", 2, 4, 8),
            (b"a: \xc3\xa9\xc3\xa9\xff", 1, 6, 7),
        ];
        for (bytes, line, column, offset) in cases {
            let err = decode(Path::new("f.yaml"), bytes.to_vec()).unwrap_err();
            assert_eq!(
                (err.items[0].line, err.items[0].column),
                (line, column),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("invalid UTF-8 at byte {offset}")),
                "{err}"
            );
        }
        assert_eq!(decode(Path::new("f.yaml"), b"ok".to_vec()).unwrap(), "ok");
    }
}
