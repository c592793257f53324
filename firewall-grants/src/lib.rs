//! Licence grants: the provider's licence decision for one adapter, signed with Ed25519, so
//! that an adapter can hold its own answer without reaching the contract store (Art. 17: no
//! adapter holds the credentials of a store with every customer's contracts).
//!
//! # Format, version 1
//!
//! A grant is a JWS in compact serialization (RFC 7515) signed with EdDSA over Ed25519
//! (RFC 8037): three base64url parts without padding, joined by dots, ASCII only,
//! `BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)`, the signature over
//! the ASCII bytes `BASE64URL(header) "." BASE64URL(payload)`. A file may end with a newline.
//!
//! * header: `{"alg":"EdDSA","kid":KEY_ID,"typ":"smf-grant+jws"}`
//! * payload: `{"version":1,"serial":S,"model":M,"role":R,"licensed":bool,"reason":REASON,
//!   "decided_at":T,"valid_from":T,"valid_until":T,"key_id":KEY_ID}`, times RFC 3339 UTC
//!   in whole seconds; `model` and `role` are empty when the store does not know them.
//!   Unknown fields are refused: a changed payload is a new `version`.
//! * key id: the first 8 bytes of the SHA-256 of the 32-byte Ed25519 public key, as 16
//!   lowercase hex digits ([`key_id`]). Header `kid` and payload `key_id` must agree.
//!
//! Key files are PEM: the signing key PKCS#8 (`-----BEGIN PRIVATE KEY-----`), the public key
//! SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), as `openssl genpkey -algorithm
//! ed25519` and `openssl pkey -pubout` write them.
//!
//! # Verification
//!
//! [`verify`] returns the grant or exactly one [`Refusal`], checked in this order: malformed
//! (`grant_malformed`: not three parts, bad base64 or JSON, another version or algorithm, a
//! truncated file), unknown key (`grant_unknown_key`), signature (`grant_bad_signature`,
//! strict Ed25519 verification), serial (`grant_other_serial`), window
//! (`grant_not_yet_valid`, `grant_expired`). A grant becomes valid [`START_SKEW`] before its
//! `valid_from` (an adapter whose clock is a little behind the provider's accepts a fresh
//! grant); it expires exactly at `valid_until` by the adapter's clock, with no allowance, so
//! that no clock error lengthens a grant the provider has stopped renewing.
//!
//! The grant server's bearer tokens, kept hashed by the provider, are in [`token`].
//!
//! # Replay ordering
//!
//! [`Holder`] keeps the grant in force and never goes back: a grant decided earlier than the
//! one held is refused (`grant_replayed`), whether it says licensed or not. The newest
//! decision wins; an old "licensed" cannot undo a newer revocation, nor an old "not
//! licensed" a newer licence.

#![forbid(unsafe_code)]

pub mod token;

use std::{fmt, path::Path};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::{
    Signature, Signer as _, VerifyingKey,
    pkcs8::{
        DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
        spki::der::pem::LineEnding,
    },
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The payload version this crate writes and reads.
pub const VERSION: u32 = 1;
/// The JWS header's `typ`.
pub const TYP: &str = "smf-grant+jws";
/// The media type of a grant over HTTP (RFC 7515's compact serialization).
pub const MEDIA_TYPE: &str = "application/jose";
/// How long before its `valid_from` a grant is already accepted (clock skew).
pub const START_SKEW: TimeDelta = TimeDelta::seconds(60);
/// Larger input is refused before any parsing (a grant is a few hundred bytes).
pub const MAX_GRANT_BYTES: usize = 16 * 1024;

/// The signed payload: one adapter's licence decision and how long it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub version: u32,
    pub serial: String,
    pub model: String,
    pub role: String,
    pub licensed: bool,
    pub reason: String,
    pub decided_at: DateTime<Utc>,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub key_id: String,
}

/// What the provider decided, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub serial: String,
    pub model: String,
    pub role: String,
    pub licensed: bool,
    pub reason: String,
    pub decided_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    kid: String,
    typ: String,
}

/// Why a grant is not accepted; [`Refusal::reason`] is its name in metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the grant is malformed: {0}")]
    Malformed(String),
    #[error("the grant is signed by key {0}, which is not among the configured public keys")]
    UnknownKey(String),
    #[error("the grant's signature does not verify: it was changed after signing")]
    BadSignature,
    #[error("the grant is for adapter `{grant}`, not `{ours}`")]
    OtherSerial { grant: String, ours: String },
    #[error("the grant is valid from {valid_from}, not yet")]
    NotYetValid { valid_from: DateTime<Utc> },
    #[error("the grant expired at {valid_until}")]
    Expired { valid_until: DateTime<Utc> },
    #[error("the grant was decided at {decided_at}, before the one held (decided at {held})")]
    Replayed {
        decided_at: DateTime<Utc>,
        held: DateTime<Utc>,
    },
}

impl Refusal {
    /// Every reason, for metrics that show each from the start.
    pub const REASONS: [&'static str; 7] = [
        "grant_malformed",
        "grant_unknown_key",
        "grant_bad_signature",
        "grant_other_serial",
        "grant_not_yet_valid",
        "grant_expired",
        "grant_replayed",
    ];

    pub const fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "grant_malformed",
            Refusal::UnknownKey(_) => "grant_unknown_key",
            Refusal::BadSignature => "grant_bad_signature",
            Refusal::OtherSerial { .. } => "grant_other_serial",
            Refusal::NotYetValid { .. } => "grant_not_yet_valid",
            Refusal::Expired { .. } => "grant_expired",
            Refusal::Replayed { .. } => "grant_replayed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 {what} in PEM ({detail})")]
    Invalid {
        path: String,
        what: &'static str,
        detail: String,
    },
}

/// The key id of `key`: the first 8 bytes of SHA-256 over its 32 bytes, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The provider's signing key.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    id: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> SigningKey {
        SigningKey::from(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// A PKCS#8 PEM private key, as [`SigningKey::to_pem`] or openssl writes it.
    pub fn from_pem(text: &str, path: &str) -> Result<SigningKey, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map(SigningKey::from)
            .map_err(|error| KeyError::Invalid {
                path: path.to_string(),
                what: "private key (PKCS#8, BEGIN PRIVATE KEY)",
                detail: error.to_string(),
            })
    }

    pub fn read(path: &Path) -> Result<SigningKey, KeyError> {
        let text = read(path)?;
        SigningKey::from_pem(&text, &path.display().to_string())
    }

    /// PKCS#8 v1 (RFC 5208, no public key inside), which OpenSSL 3.0 reads too; v2 it does
    /// not.
    pub fn to_pem(&self) -> Zeroizing<String> {
        KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 key always encodes")
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from(self.key.verifying_key())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs `decision`, valid from its decision for `valid`; returns the grant and its text.
    pub fn issue(&self, decision: &Decision, valid: TimeDelta) -> (Grant, String) {
        let decided_at = whole_seconds(decision.decided_at);
        let grant = Grant {
            version: VERSION,
            serial: decision.serial.clone(),
            model: decision.model.clone(),
            role: decision.role.clone(),
            licensed: decision.licensed,
            reason: decision.reason.clone(),
            decided_at,
            valid_from: decided_at,
            valid_until: whole_seconds(decided_at + valid),
            key_id: self.id.clone(),
        };
        let text = self.sign(&grant);
        (grant, text)
    }

    /// The compact JWS of `grant` (whatever its fields say: tests make broken ones with it).
    pub fn sign(&self, grant: &Grant) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            kid: self.id.clone(),
            typ: TYP.into(),
        };
        let mut text = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("a header encodes")),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).expect("a grant encodes")),
        );
        let signature = self.key.sign(text.as_bytes());
        text.push('.');
        text.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        text
    }
}

impl From<ed25519_dalek::SigningKey> for SigningKey {
    fn from(key: ed25519_dalek::SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        SigningKey { key, id }
    }
}

/// A provider's public key that grants are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
}

impl PublicKey {
    /// A SubjectPublicKeyInfo PEM public key.
    pub fn from_pem(text: &str, path: &str) -> Result<PublicKey, KeyError> {
        VerifyingKey::from_public_key_pem(text)
            .map(PublicKey::from)
            .map_err(|error| KeyError::Invalid {
                path: path.to_string(),
                what: "public key (SubjectPublicKeyInfo, BEGIN PUBLIC KEY)",
                detail: error.to_string(),
            })
    }

    pub fn read(path: &Path) -> Result<PublicKey, KeyError> {
        let text = read(path)?;
        PublicKey::from_pem(&text, &path.display().to_string())
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes")
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> Self {
        let id = key_id(&key);
        PublicKey { key, id }
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

/// Checks `text` against `keys` (any of them may have signed it) for the adapter `serial` at
/// the instant `now`; see the crate's documentation for the order of the checks.
pub fn verify(
    text: &[u8],
    keys: &[PublicKey],
    serial: &str,
    now: DateTime<Utc>,
) -> Result<Grant, Refusal> {
    let malformed = |what: &str| Refusal::Malformed(what.to_string());
    if text.len() > MAX_GRANT_BYTES {
        return Err(malformed("larger than 16 KiB"));
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| malformed("not ASCII text"))?
        .trim_ascii();
    let mut parts = text.split('.');
    let (Some(header_part), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "not three dot-separated parts (a truncated or damaged file?)",
        ));
    };
    let signed = &text[..header_part.len() + 1 + payload.len()];
    let header: Header = decode_json(header_part, "header")?;
    if header.alg != "EdDSA" || header.typ != TYP {
        return Err(Refusal::Malformed(format!(
            "alg `{}` typ `{}`: this adapter reads EdDSA grants of type {TYP}",
            header.alg, header.typ
        )));
    }
    let key = keys
        .iter()
        .find(|key| key.id == header.kid)
        .ok_or_else(|| Refusal::UnknownKey(header.kid.clone()))?;
    let signature: [u8; 64] = decode(signature, "signature")?
        .try_into()
        .map_err(|_| malformed("the signature is not 64 bytes (truncated?)"))?;
    key.key
        .verify_strict(signed.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| Refusal::BadSignature)?;
    let grant: Grant = decode_json(payload, "payload")?;
    if grant.version != VERSION {
        return Err(Refusal::Malformed(format!(
            "version {}; this adapter reads version {VERSION}",
            grant.version
        )));
    }
    if grant.key_id != header.kid {
        return Err(malformed("the payload's key_id is not the header's kid"));
    }
    if grant.serial != serial {
        return Err(Refusal::OtherSerial {
            grant: grant.serial,
            ours: serial.to_string(),
        });
    }
    if now + START_SKEW < grant.valid_from {
        return Err(Refusal::NotYetValid {
            valid_from: grant.valid_from,
        });
    }
    if now >= grant.valid_until {
        return Err(Refusal::Expired {
            valid_until: grant.valid_until,
        });
    }
    Ok(grant)
}

fn decode(part: &str, what: &str) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|error| Refusal::Malformed(format!("the {what} is not base64url: {error}")))
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, Refusal> {
    serde_json::from_slice(&decode(part, what)?)
        .map_err(|error| Refusal::Malformed(format!("the {what} is not a grant's: {error}")))
}

/// The grant in force on an adapter and the replay rule: see the crate's documentation.
#[derive(Debug, Clone, Default)]
pub struct Holder {
    held: Option<Grant>,
}

/// What the adapter does at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InForce<'a> {
    /// A grant within its window.
    Valid(&'a Grant),
    /// The grant held has passed its `valid_until`.
    Expired(&'a Grant),
    /// No grant was ever accepted.
    None,
}

impl Holder {
    /// Takes a verified grant unless it was decided before the one held.
    pub fn offer(&mut self, grant: Grant) -> Result<(), Refusal> {
        if let Some(held) = &self.held
            && grant.decided_at < held.decided_at
        {
            return Err(Refusal::Replayed {
                decided_at: grant.decided_at,
                held: held.decided_at,
            });
        }
        self.held = Some(grant);
        Ok(())
    }

    pub fn in_force(&self, now: DateTime<Utc>) -> InForce<'_> {
        match &self.held {
            None => InForce::None,
            Some(grant) if now >= grant.valid_until => InForce::Expired(grant),
            Some(grant) => InForce::Valid(grant),
        }
    }
}

#[cfg(test)]
mod tests;
