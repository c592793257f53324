//! The rule file as written, with the position of every value that validation may reject.
//!
//! Lists are read by a hand-written visitor rather than an untagged enum, because serde
//! buffers untagged values and the positions of their elements would be lost.

use std::{collections::BTreeMap, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{self, SeqAccess, Visitor},
};
use serde_saphyr::Spanned;

use crate::ruleset::{Action, Direction, Family};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    pub version: Spanned<u32>,
    #[serde(default)]
    pub sets: BTreeMap<String, Spanned<RawList>>,
    pub interfaces: BTreeMap<String, Spanned<RawInterface>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterface {
    pub default: Action,
    #[serde(default)]
    pub non_ip: Option<Action>,
    /// `rules:` with nothing after it (YAML null) is an empty list.
    #[serde(default)]
    pub rules: Option<Vec<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: Spanned<String>,
    pub action: Action,
    #[serde(default)]
    pub protocol: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub family: Option<Spanned<Family>>,
    #[serde(default)]
    pub src: Option<Spanned<RawList>>,
    #[serde(default)]
    pub dst: Option<Spanned<RawList>>,
    #[serde(default)]
    pub src_port: Option<Spanned<RawList>>,
    #[serde(default)]
    pub dst_port: Option<Spanned<RawList>>,
    #[serde(default)]
    pub icmp_type: Option<Spanned<i64>>,
    #[serde(default)]
    pub icmp_code: Option<Spanned<i64>>,
    /// `syn`, `[syn, "!ack"]` or `"syn,!ack"`: TCP flags that must be set (or, after `!`,
    /// clear). Present means a value: `tcp_flags: !ack` (a YAML tag on nothing) is an error,
    /// never a rule without its condition.
    #[serde(default, deserialize_with = "present")]
    pub tcp_flags: Option<Spanned<RawList>>,
    #[serde(default)]
    pub vlan: Option<Spanned<i64>>,
    /// `state: true`: a packet this pass rule passes opens a tracked flow (connection
    /// tracking); its replies pass before the rules.
    #[serde(default)]
    pub state: Option<Spanned<bool>>,
    /// `in` (the default): judged as packets arrive (XDP); `out`: as they leave (TC egress).
    #[serde(default)]
    pub direction: Option<Direction>,
    /// `log: true`: report the packets this (drop) rule drops in the daemon's log, sampled.
    #[serde(default)]
    pub log: Option<Spanned<bool>>,
    /// `limit:`: the rule matches only the packets over this rate.
    #[serde(default)]
    pub limit: Option<Spanned<RawLimit>>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `limit: { over: 10/s, burst: 20, per: src/24 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub over: Spanned<Scalar>,
    #[serde(default)]
    pub burst: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub per: Option<Spanned<String>>,
}

/// A field that, when written, must hold a value: a null is refused rather than read as
/// "absent".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A YAML scalar that is a number or text (`80`, `"8000-8080"`, `198.18.0.0/15`, `$web`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Int(i64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Text(text) => f.write_str(text),
        }
    }
}

/// One scalar, or a list of them, each element with its own position.
#[derive(Debug)]
pub enum RawList {
    One(Scalar),
    Many(Vec<Spanned<Scalar>>),
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Err(E::custom(EMPTY_VALUE))
    }
}

/// What an empty list element or value is told: in YAML an unquoted `!ack` is a tag on an
/// empty value, not the text `!ack`.
const EMPTY_VALUE: &str =
    "an empty value; a value that starts with `!` must be quoted, like \"!ack\"";

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = RawList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or a list of values")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawList, E> {
        ScalarVisitor.visit_i64(v).map(RawList::One)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawList, E> {
        ScalarVisitor.visit_u64(v).map(RawList::One)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawList, E> {
        ScalarVisitor.visit_str(v).map(RawList::One)
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawList, E> {
        ScalarVisitor.visit_unit().map(RawList::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawList, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Scalar>>()? {
            items.push(item);
        }
        Ok(RawList::Many(items))
    }
}

impl<'de> Deserialize<'de> for RawList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListVisitor)
    }
}
