//! Positioned errors for the operator's YAML files (`FILE:LINE:COL: error: ...`) and the one
//! YAML entry point that produces them.

use std::{fmt, path::Path};

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
    }
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
        Some("boolean") => "expected true or false".to_string(),
        _ => message.to_string(),
    }
}
