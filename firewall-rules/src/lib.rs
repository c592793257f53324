//! The rule pipeline, one way: YAML text → [`schema::RawRules`] (serde, with positions) →
//! [`RuleSet`] (validated, typed) → [`compile`] (the exact bytes of the kernel's map values).
//! `check`, `explain` and the daemon all start from a validated `RuleSet`. The language is
//! described in `rules/README.md`.

#![forbid(unsafe_code)]

pub mod address;
pub mod compile;
pub mod interface;
pub mod rate_limit;
pub mod reference;
pub mod ruleset;
pub mod schema;
pub mod spec;
pub mod validate;

use std::{
    fs,
    path::{Path, PathBuf},
};

use firewall_diagnostic::{Diagnostics, parse_yaml};

pub use ruleset::{
    Action, Direction, Family, ListField, Policy, Ports, Rule, RuleSet, SetUse, TcpFlags,
    ports_text,
};
pub use validate::{Checked, Limits, Warning};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules from {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] Diagnostics),
}

impl RuleSet {
    /// Reads, parses and validates a rule file; nothing partial is ever returned.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        Ok(Self::load_checked(path, &Limits::default())?.rules)
    }

    /// Like [`RuleSet::load`], with the warnings.
    pub fn load_checked(path: &Path, limits: &Limits) -> Result<Checked, RulesError> {
        let bytes = fs::read(path).map_err(|error| RulesError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let text = firewall_diagnostic::decode(path, bytes)?;
        Ok(Self::parse_checked(path, &text, limits)?)
    }

    pub fn parse(path: &Path, text: &str) -> Result<RuleSet, Diagnostics> {
        Ok(Self::parse_checked(path, text, &Limits::default())?.rules)
    }

    pub fn parse_checked(path: &Path, text: &str, limits: &Limits) -> Result<Checked, Diagnostics> {
        let raw: schema::RawRules = parse_yaml(path, text)?;
        validate::validate(raw, limits).map_err(|items| Diagnostics {
            file: path.display().to_string(),
            items,
        })
    }
}
