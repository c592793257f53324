use super::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn decision(serial: &str, licensed: bool, decided_at: &str) -> Decision {
    Decision {
        serial: serial.into(),
        model: "x86-fuji".into(),
        role: "entry".into(),
        licensed,
        reason: if licensed {
            "licensed"
        } else {
            "option_terminated"
        }
        .into(),
        decided_at: at(decided_at),
    }
}

/// A grant for FUJI-0001 decided 2025-05-01T00:00:00Z, valid 7 days.
fn issued(key: &SigningKey) -> (Grant, String) {
    key.issue(
        &decision("FUJI-0001", true, "2025-05-01T00:00:00Z"),
        TimeDelta::days(7),
    )
}

const NOW: &str = "2025-05-02T00:00:00Z";

fn check(text: &[u8], keys: &[PublicKey]) -> Result<Grant, Refusal> {
    verify(text, keys, "FUJI-0001", at(NOW))
}

/// `text` with its payload replaced by `change` applied to the JSON, the signature kept.
fn with_payload(text: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
    let parts: Vec<&str> = text.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    change(&mut payload);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

#[test]
fn a_grant_round_trips_with_its_fields_and_a_newline() {
    let key = SigningKey::generate();
    let (grant, text) = issued(&key);
    assert_eq!(grant.valid_from, at("2025-05-01T00:00:00Z"));
    assert_eq!(grant.valid_until, at("2025-05-08T00:00:00Z"));
    assert_eq!(grant.key_id, key.id());
    assert_eq!(
        check(format!("{text}\n").as_bytes(), &[key.public()]),
        Ok(grant)
    );
    // The documented payload, field by field.
    let payload = URL_SAFE_NO_PAD
        .decode(text.split('.').nth(1).unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        format!(
            r#"{{"version":1,"serial":"FUJI-0001","model":"x86-fuji","role":"entry","licensed":true,"reason":"licensed","decided_at":"2025-05-01T00:00:00Z","valid_from":"2025-05-01T00:00:00Z","valid_until":"2025-05-08T00:00:00Z","key_id":"{}"}}"#,
            key.id()
        )
    );
    let header = URL_SAFE_NO_PAD
        .decode(text.split('.').next().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(header).unwrap(),
        format!(
            r#"{{"alg":"EdDSA","kid":"{}","typ":"smf-grant+jws"}}"#,
            key.id()
        )
    );
}

#[test]
fn the_key_id_is_the_start_of_the_public_keys_sha256() {
    // RFC 8032, 7.1, test 1.
    let public: [u8; 32] = [
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07,
        0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07,
        0x51, 0x1a,
    ];
    assert_eq!(
        key_id(&VerifyingKey::from_bytes(&public).unwrap()),
        "21fe31dfa154a261"
    );
}

#[test]
fn keys_survive_pem() {
    let key = SigningKey::generate();
    let again = SigningKey::from_pem(&key.to_pem(), "k").unwrap();
    assert_eq!(again.id(), key.id());
    let public = PublicKey::from_pem(&key.public().to_pem(), "p").unwrap();
    assert_eq!(public, key.public());
    assert!(
        key.public()
            .to_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );
    assert!(key.to_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    // As `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write them.
    let openssl = SigningKey::from_pem(
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDj3A4aR1A80JK0HjKs5ZfVVekDrioV32l1tiPYUy4xU\n-----END PRIVATE KEY-----\n",
        "openssl.key",
    )
    .unwrap();
    assert_eq!(
        openssl.to_pem().lines().nth(1),
        Some("MC4CAQAwBQYDK2VwBCIEIDj3A4aR1A80JK0HjKs5ZfVVekDrioV32l1tiPYUy4xU")
    );
    assert_eq!(
        openssl.public(),
        PublicKey::from_pem(OPENSSL_PUBLIC, "openssl.pub").unwrap()
    );
    // Each the other's kind is refused.
    assert!(PublicKey::from_pem(&key.to_pem(), "k").is_err());
    assert!(SigningKey::from_pem(&key.public().to_pem(), "p").is_err());
}

// Each row: what the issue's tampering case is, the text, and the one reason it is refused.
#[test]
fn every_tampering_is_refused_with_its_reason() {
    let key = SigningKey::generate();
    let stranger = SigningKey::generate();
    let (_, text) = issued(&key);
    let (_, other) = key.issue(
        &decision("FUJI-0002", true, "2025-05-01T00:00:00Z"),
        TimeDelta::days(7),
    );
    let mut signature_flipped = text.clone().into_bytes();
    // A character of the signature part to another base64url character.
    let last = signature_flipped.len() - 10;
    signature_flipped[last] = if signature_flipped[last] == b'A' {
        b'B'
    } else {
        b'A'
    };
    // The stranger's signature under the trusted key's id.
    let forged = {
        let mut grant = issued(&key).0;
        grant.key_id = key.id().into();
        let signed = stranger.sign(&grant);
        let parts: Vec<&str> = signed.split('.').collect();
        let (_, genuine) = issued(&key);
        let genuine: Vec<&str> = genuine.split('.').collect();
        format!("{}.{}.{}", genuine[0], genuine[1], parts[2])
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a flipped byte in the payload",
            with_payload(&text, |p| p["licensed"] = false.into()),
            "grant_bad_signature",
        ),
        (
            "a flipped byte in the signature",
            String::from_utf8(signature_flipped).unwrap(),
            "grant_bad_signature",
        ),
        (
            "a changed serial",
            with_payload(&text, |p| p["serial"] = "FUJI-0002".into()),
            "grant_bad_signature",
        ),
        (
            "an extended valid_until",
            with_payload(&text, |p| p["valid_until"] = "2035-05-08T00:00:00Z".into()),
            "grant_bad_signature",
        ),
        (
            "a signature by another key under the trusted key's id",
            forged,
            "grant_bad_signature",
        ),
        (
            "a grant signed by an unknown key",
            issued(&stranger).1,
            "grant_unknown_key",
        ),
        (
            "a truncated file",
            text[..text.len() - 20].to_string(),
            "grant_malformed",
        ),
        ("an empty file", String::new(), "grant_malformed"),
        ("a grant for another adapter", other, "grant_other_serial"),
        (
            "alg none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(format!(
                    r#"{{"alg":"none","kid":"{}","typ":"smf-grant+jws"}}"#,
                    key.id()
                )),
                text.split('.').nth(1).unwrap()
            ),
            "grant_malformed",
        ),
        (
            "a signed payload of another version",
            key.sign(&Grant {
                version: 2,
                ..issued(&key).0
            }),
            "grant_malformed",
        ),
        (
            "a signed payload whose key_id is another key's",
            key.sign(&Grant {
                key_id: stranger.id().into(),
                ..issued(&key).0
            }),
            "grant_malformed",
        ),
        (
            "a signed payload with an unknown field",
            {
                // Signed by hand: the payload is not a `Grant`.
                let mut value = serde_json::to_value(issued(&key).0).unwrap();
                value["until_revoked"] = true.into();
                let header = text.split('.').next().unwrap();
                let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&value).unwrap());
                let signed = format!("{header}.{body}");
                let signature = key.key.sign(signed.as_bytes());
                format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
            },
            "grant_malformed",
        ),
        (
            "more than 16 KiB",
            format!("{text}{}", " ".repeat(MAX_GRANT_BYTES)),
            "grant_malformed",
        ),
    ];
    for (what, text, reason) in cases {
        let got = check(text.as_bytes(), &[key.public()]);
        assert_eq!(
            got.as_ref().map_err(Refusal::reason),
            Err(reason),
            "{what}: {got:?}"
        );
    }
}

#[test]
fn every_single_bit_flip_and_every_truncation_is_refused() {
    let key = SigningKey::generate();
    let (_, text) = issued(&key);
    let keys = [key.public()];
    for index in 0..text.len() {
        // The two low bits: each character becomes a neighbour (verifying is slow in debug).
        for bit in 0..2 {
            let mut bytes = text.clone().into_bytes();
            bytes[index] ^= 1 << bit;
            let got = check(&bytes, &keys);
            assert!(got.is_err(), "byte {index} bit {bit}: {got:?}");
        }
        assert_eq!(
            check(&text.as_bytes()[..index], &keys).map_err(|r| r.reason()),
            Err("grant_malformed"),
            "truncated to {index} bytes"
        );
    }
}

// Each row: the instant of the check, and the reason (None: accepted). The grant is valid
// from 2025-05-01T00:00:00Z until 2025-05-08T00:00:00Z; a minute early is accepted.
#[test]
fn the_window_has_a_minute_of_skew_at_its_start_and_none_at_its_end() {
    let key = SigningKey::generate();
    let (_, text) = issued(&key);
    let cases = [
        ("2025-04-30T23:58:59Z", Some("grant_not_yet_valid")),
        ("2025-04-30T23:59:00Z", None),
        ("2025-05-01T00:00:00Z", None),
        ("2025-05-07T23:59:59Z", None),
        ("2025-05-08T00:00:00Z", Some("grant_expired")),
        ("2026-01-01T00:00:00Z", Some("grant_expired")),
    ];
    for (now, reason) in cases {
        let got = verify(text.as_bytes(), &[key.public()], "FUJI-0001", at(now));
        assert_eq!(got.err().map(|r| r.reason()), reason, "at {now}");
    }
}

#[test]
fn grants_by_the_old_and_the_new_key_verify_while_both_are_configured() {
    let old = SigningKey::generate();
    let new = SigningKey::generate();
    let both = [old.public(), new.public()];
    for key in [&old, &new] {
        assert!(check(issued(key).1.as_bytes(), &both).is_ok(), "{key:?}");
    }
    // Once the old key is removed, its grants are refused.
    assert_eq!(
        check(issued(&old).1.as_bytes(), &[new.public()]).map_err(|r| r.reason()),
        Err("grant_unknown_key")
    );
}

// Each row: the grant held (licensed?, decided at), the grant offered, whether it is taken:
// the newest decision wins, whichever way it goes.
#[test]
fn the_holder_never_goes_back_to_an_older_decision() {
    let key = SigningKey::generate();
    let grant = |licensed, decided_at| {
        key.issue(
            &decision("FUJI-0001", licensed, decided_at),
            TimeDelta::days(7),
        )
        .0
    };
    let cases = [
        // An old "not licensed" replayed after a newer licence.
        (
            (true, "2025-05-02T00:00:00Z"),
            (false, "2025-05-01T00:00:00Z"),
            false,
        ),
        // An old licence replayed after a newer revocation.
        (
            (false, "2025-05-02T00:00:00Z"),
            (true, "2025-05-01T00:00:00Z"),
            false,
        ),
        // Newer ones are taken either way; the same decision again too (a file re-read).
        (
            (true, "2025-05-01T00:00:00Z"),
            (false, "2025-05-02T00:00:00Z"),
            true,
        ),
        (
            (false, "2025-05-01T00:00:00Z"),
            (true, "2025-05-02T00:00:00Z"),
            true,
        ),
        (
            (true, "2025-05-01T00:00:00Z"),
            (true, "2025-05-01T00:00:00Z"),
            true,
        ),
    ];
    for ((held_licensed, held_at), (offered_licensed, offered_at), taken) in cases {
        let mut holder = Holder::default();
        holder.offer(grant(held_licensed, held_at)).unwrap();
        let offered = grant(offered_licensed, offered_at);
        let result = holder.offer(offered.clone());
        assert_eq!(
            result.is_ok(),
            taken,
            "{held_at} then {offered_at}: {result:?}"
        );
        let InForce::Valid(in_force) = holder.in_force(at("2025-05-03T00:00:00Z")) else {
            panic!("a grant is in force");
        };
        let expected = if taken {
            offered_licensed
        } else {
            held_licensed
        };
        assert_eq!(in_force.licensed, expected, "{held_at} then {offered_at}");
        if !taken {
            assert_eq!(result.unwrap_err().reason(), "grant_replayed");
        }
    }
}

#[test]
fn a_held_grant_expires_at_its_valid_until() {
    let key = SigningKey::generate();
    let mut holder = Holder::default();
    assert_eq!(holder.in_force(at(NOW)), InForce::None);
    let (grant, _) = issued(&key);
    holder.offer(grant.clone()).unwrap();
    assert_eq!(
        holder.in_force(at("2025-05-07T23:59:59Z")),
        InForce::Valid(&grant)
    );
    assert_eq!(
        holder.in_force(at("2025-05-08T00:00:00Z")),
        InForce::Expired(&grant)
    );
}

const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAtmSn7F31gPJ2ca3xSckoUT/w/4M7cw5STzRIL0BLn28=\n-----END PUBLIC KEY-----\n";
