//! The rule file as written, with the position of every value that validation may reject.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Action, Protocol};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    pub version: Spanned<u32>,
    pub interfaces: BTreeMap<String, RawInterface>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterface {
    pub default: Action,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: Spanned<String>,
    pub action: Action,
    #[serde(default)]
    pub protocol: Option<Spanned<Protocol>>,
    #[serde(default)]
    pub src: Option<Spanned<String>>,
    #[serde(default)]
    pub dst: Option<Spanned<String>>,
    #[serde(default)]
    pub dst_port: Option<Spanned<RawPorts>>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `22` or `"8000-8080"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPorts {
    Number(i64),
    Range(String),
}
