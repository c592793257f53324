//! The control socket's messages, shared by the daemon (which answers) and `smf-firewall
//! reload`, `status` and `unload` (which ask): one JSON object per line each way.
//!
//! On the wire every object's keys are in alphabetical order, "ok" among them: that is the
//! order the protocol has always had (its answers were `serde_json::Value` maps, which sort)
//! and the order `status --json` and `reload --json` print. Serde writes a struct's fields in
//! the order they are declared, so the fields below are declared alphabetically; the tests
//! pin the exact text.

use std::{fmt, marker::PhantomData, path::PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::reload::Summary;

/// `{"command":"reload"}`, `{"command":"status"}`, `{"command":"handover"}` or
/// `{"command":"trace",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Reload,
    Status,
    /// Answer the status, then exit leaving XDP attached and everything pinned, as
    /// `keep_attached_on_exit` does, for the next daemon to take over (an upgrade).
    Handover,
    /// A live packet trace, for as long as the connection stays open: the answer is a
    /// stream of lines (`crate::trace::Line`), not one.
    Trace(TraceRequest),
}

/// `smf-firewall trace`'s request: which packets to trace, how many, how fast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// Stop after this many packets; none: until the client goes.
    pub count: Option<u64>,
    /// `in` or `out`; none: both.
    pub direction: Option<TraceDirection>,
    pub interface: String,
    /// `--match`'s filter (`crate::trace::Filter`); none: every packet.
    #[serde(rename = "match")]
    pub filter: Option<String>,
    /// Packets a second, at most (the kernel's token bucket).
    pub rate_per_second: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceDirection {
    In,
    Out,
}

/// What the daemon answers: the status, a reload that took effect, or why a request failed.
/// Which one it is shows in the fields (and in `"ok"`), not in a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<Status>),
    Reloaded(Reloaded),
    Failed(Failure),
}

/// `{"ok":true,"summary":{...}}`: a reload that took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    pub ok: Is<true>,
    pub summary: Summary,
}

/// `{"error":"...","ok":false}`: a request that changed nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
    pub ok: Is<false>,
}

impl Failure {
    pub fn new(error: String) -> Failure {
        Failure { error, ok: Is }
    }
}

/// `smf-firewall status --json`: what the running daemon does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's configuration file.
    pub config: PathBuf,
    pub conntrack: ConntrackStatus,
    /// The rule generation live in the dataplane.
    pub generation: u32,
    pub interfaces: Vec<InterfaceStatus>,
    pub keep_attached_on_exit: bool,
    /// None before the first reload since start.
    pub last_reload: Option<LastReload>,
    /// None until the licence is first decided.
    pub license: Option<LicenseStatus>,
    /// The pinned maps in use.
    pub maps: PathBuf,
    pub ok: Is<true>,
    pub pid: u32,
    pub pin_path: PathBuf,
    pub reloads: ReloadCounts,
    /// Rules on every interface together.
    pub rules: usize,
    pub rules_file: PathBuf,
    pub uptime_seconds: u64,
    pub version: String,
    /// Whether saving the rules file reloads them.
    pub watch: bool,
}

/// One configured interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// The interface still has the ifindex the daemon attached to.
    pub attached: bool,
    pub ifindex: u32,
    /// The XDP mode: `driver`, `skb` or `default`.
    pub mode: String,
    pub name: String,
    pub rules: usize,
}

/// The last reload (command, SIGHUP or file watch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReload {
    /// RFC 3339, UTC, whole seconds.
    pub at: String,
    /// Why it failed; null when it succeeded.
    pub error: Option<String>,
    pub result: ReloadResult,
    pub trigger: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    Success,
    Error,
}

impl fmt::Display for ReloadResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReloadResult::Success => "success",
            ReloadResult::Error => "error",
        })
    }
}

/// Reloads since start, by result (`smf_firewall_rules_reloads_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadCounts {
    pub error: u64,
    pub success: u64,
}

/// The licence decision in force, and where it came from (no secret, no address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseStatus {
    /// The grant's decision instant, in the grant modes (RFC 3339, UTC).
    #[serde(default)]
    pub decided_at: Option<String>,
    /// The id of the key that signed the grant in force, in the grant modes.
    #[serde(default)]
    pub key_id: Option<String>,
    pub licensed: bool,
    /// `store`, `grant`, `url` or `not_configured`.
    #[serde(default)]
    pub mode: String,
    pub reason: String,
    /// When the grant in force expires, in the grant modes (RFC 3339, UTC).
    #[serde(default)]
    pub valid_until: Option<String>,
}

/// The flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackStatus {
    /// `conntrack.max_entries`: flows per address family (the IPv4 and the IPv6 table each).
    pub capacity: u32,
    /// Live flows as of the last sweep.
    pub entries: u64,
    /// Whether any rule set since start had a `state: true` rule.
    pub tracking: bool,
}

/// The `"ok"` of an answer: always `true` in a status or a reload that took effect, always
/// `false` in a failure. Reading the other value is an error, which is what tells the
/// answers apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Is<const OK: bool>;

impl<const OK: bool> Serialize for Is<OK> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(OK)
    }
}

impl<'de, const OK: bool> Deserialize<'de> for Is<OK> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<const OK: bool>(PhantomData<()>);
        impl<const OK: bool> de::Visitor<'_> for Visit<OK> {
            type Value = Is<OK>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "`{OK}`")
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Is<OK>, E> {
                if value == OK {
                    Ok(Is)
                } else {
                    Err(E::invalid_value(de::Unexpected::Bool(value), &self))
                }
            }
        }
        deserializer.deserialize_bool(Visit::<OK>(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::Change;

    fn status() -> Status {
        Status {
            config: "/etc/smf-firewall/config.yaml".into(),
            conntrack: ConntrackStatus {
                capacity: 65536,
                entries: 3,
                tracking: true,
            },
            generation: 2,
            interfaces: vec![InterfaceStatus {
                attached: true,
                ifindex: 4,
                mode: "driver".into(),
                name: "lan0".into(),
                rules: 12,
            }],
            keep_attached_on_exit: false,
            last_reload: Some(LastReload {
                at: "2026-04-01T00:00:00Z".into(),
                error: None,
                result: ReloadResult::Success,
                trigger: "SIGHUP".into(),
            }),
            license: Some(LicenseStatus {
                decided_at: Some("2026-04-01T00:00:00Z".into()),
                key_id: Some("21fe31dfa154a261".into()),
                licensed: true,
                mode: "url".into(),
                reason: "licensed".into(),
                valid_until: Some("2026-04-02T00:00:00Z".into()),
            }),
            maps: "/sys/fs/bpf/smf-firewall/maps-1".into(),
            ok: Is,
            pid: 4242,
            pin_path: "/sys/fs/bpf/smf-firewall".into(),
            reloads: ReloadCounts {
                error: 0,
                success: 1,
            },
            rules: 12,
            rules_file: "/etc/smf-firewall/rules.yaml".into(),
            uptime_seconds: 61,
            version: "0.1.0".into(),
            watch: true,
        }
    }

    fn reloaded() -> Reloaded {
        Reloaded {
            ok: Is,
            summary: Summary {
                generation: 3,
                interfaces: vec![Change {
                    added: vec!["ssh".into()],
                    changed: vec![],
                    interface: "lan0".into(),
                    removed: vec!["telnet".into(), "ftp".into()],
                    reordered: true,
                    rules: 11,
                    unchanged: 10,
                }],
                milliseconds: 17,
            },
        }
    }

    fn round_trip<T>(message: &T) -> T
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        serde_json::from_str(&serde_json::to_string(message).unwrap()).unwrap()
    }

    #[test]
    fn every_message_reads_back_as_itself() {
        let trace = Request::Trace(TraceRequest {
            count: Some(2),
            direction: Some(TraceDirection::Out),
            interface: "lan0".into(),
            filter: Some("tcp any -> any:22".into()),
            rate_per_second: 100,
        });
        for request in [Request::Reload, Request::Status, Request::Handover, trace] {
            assert_eq!(round_trip(&request), request);
        }
        let answers = [
            Answer::Status(Box::new(status())),
            Answer::Reloaded(reloaded()),
            Answer::Failed(Failure::new("rules.yaml:3:5: error: unknown key".into())),
        ];
        for answer in answers {
            assert_eq!(round_trip(&answer), answer);
        }
        let mut failed_reload = status();
        failed_reload.last_reload = Some(LastReload {
            at: "2026-04-01T00:00:00Z".into(),
            error: Some("bad".into()),
            result: ReloadResult::Error,
            trigger: "reload command".into(),
        });
        failed_reload.license = None;
        let answer = Answer::Status(Box::new(failed_reload));
        assert_eq!(round_trip(&answer), answer);
    }

    #[test]
    fn requests_are_as_they_always_were() {
        let text = |request| serde_json::to_string(&request).unwrap();
        assert_eq!(text(Request::Reload), r#"{"command":"reload"}"#);
        assert_eq!(text(Request::Status), r#"{"command":"status"}"#);
        assert_eq!(text(Request::Handover), r#"{"command":"handover"}"#);
        let trace = TraceRequest {
            count: None,
            direction: None,
            interface: "lan0".into(),
            filter: None,
            rate_per_second: 100,
        };
        assert_eq!(
            text(Request::Trace(trace)),
            r#"{"command":"trace","count":null,"direction":null,"interface":"lan0","match":null,"rate_per_second":100}"#
        );
    }

    /// The text that `status --json` prints, key for key (alphabetical, as when the answer
    /// was a `serde_json::Value`).
    #[test]
    fn a_status_answer_is_exactly_this_json() {
        let text = serde_json::to_string(&Answer::Status(Box::new(status()))).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"config":"/etc/smf-firewall/config.yaml","#,
                r#""conntrack":{"capacity":65536,"entries":3,"tracking":true},"#,
                r#""generation":2,"#,
                r#""interfaces":[{"attached":true,"ifindex":4,"mode":"driver","name":"lan0","rules":12}],"#,
                r#""keep_attached_on_exit":false,"#,
                r#""last_reload":{"at":"2026-04-01T00:00:00Z","error":null,"result":"success","trigger":"SIGHUP"},"#,
                r#""license":{"decided_at":"2026-04-01T00:00:00Z","key_id":"21fe31dfa154a261","licensed":true,"mode":"url","reason":"licensed","valid_until":"2026-04-02T00:00:00Z"},"#,
                r#""maps":"/sys/fs/bpf/smf-firewall/maps-1","#,
                r#""ok":true,"pid":4242,"pin_path":"/sys/fs/bpf/smf-firewall","#,
                r#""reloads":{"error":0,"success":1},"#,
                r#""rules":12,"rules_file":"/etc/smf-firewall/rules.yaml","#,
                r#""uptime_seconds":61,"version":"0.1.0","watch":true}"#,
            )
        );
        // The same text as the map the daemon answered with before these types: sorted.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value.to_string(), text);
    }

    #[test]
    fn reload_answers_are_exactly_this_json() {
        let text = serde_json::to_string(&Answer::Reloaded(reloaded())).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"ok":true,"summary":{"generation":3,"interfaces":[{"added":["ssh"],"#,
                r#""changed":[],"interface":"lan0","removed":["telnet","ftp"],"reordered":true,"#,
                r#""rules":11,"unchanged":10}],"milliseconds":17}}"#,
            )
        );
        let failed = serde_json::to_string(&Answer::Failed(Failure::new("no".into()))).unwrap();
        assert_eq!(failed, r#"{"error":"no","ok":false}"#);
    }

    #[test]
    fn the_ok_tells_the_answers_apart() {
        let read = |text| serde_json::from_str::<Answer>(text);
        assert!(matches!(
            read(r#"{"error":"no","ok":false}"#),
            Ok(Answer::Failed(_))
        ));
        assert!(read(r#"{"error":"no","ok":true}"#).is_err());
    }
}
