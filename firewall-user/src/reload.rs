//! The rules a running daemon enforces, and changing them: read, validate, compile, then one
//! atomic swap, or nothing at all and the reason. `reload`, SIGHUP and the file watch all
//! come here.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};

use firewall_common::ConntrackSettings;

use firewall_dataplane::loader::{Capacity, Dataplane, LoaderError};
use firewall_diagnostic::FileError;
use firewall_rules::{
    Rule, RuleSet, RulesError,
    compile::{self, CompileError, Compiled, RuleCounters},
};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("{}: interface {interface} is in the config but has no rules; add it under `interfaces:`", rules.display())]
    NoRules { interface: String, rules: PathBuf },
    #[error("{}: {error}", rules.display())]
    Compile { rules: PathBuf, error: CompileError },
    #[error(
        "{}: the rules need {needed} {what}, but the dataplane has room for {capacity}; restart the daemon to load them (it swaps in larger maps without a gap)",
        rules.display()
    )]
    Capacity {
        rules: PathBuf,
        what: &'static str,
        needed: usize,
        capacity: u32,
    },
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(
        "{}: not a regular file but {kind}; the rules must be a regular file (a FIFO or a device could block the daemon)",
        rules.display()
    )]
    NotAFile { rules: PathBuf, kind: &'static str },
    #[error(
        "{}: reading and compiling the rules took more than {seconds} s (a hung mount?); gave up, the rules in force are unchanged",
        rules.display()
    )]
    TimedOut { rules: PathBuf, seconds: u64 },
}

/// What a reload changed on one interface, by rule id. The fields are in alphabetical order,
/// as the control socket sends them (see `control::protocol`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub added: Vec<String>,
    /// Same id, other conditions or action.
    pub changed: Vec<String>,
    pub interface: String,
    pub removed: Vec<String>,
    /// The rules kept are in another order (first match may differ).
    pub reordered: bool,
    /// Rules now.
    pub rules: usize,
    pub unchanged: usize,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.reordered
    }
}

/// The result of a reload that took effect (fields in alphabetical order, as for [`Change`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The generation now live.
    pub generation: u32,
    pub interfaces: Vec<Change>,
    pub milliseconds: u64,
}

/// The rules in the dataplane, as far as reloads need them: each rule's id and a fingerprint
/// of its meaning (not of its position in the file), and the counter slots.
#[derive(Debug, Clone)]
pub struct Loaded {
    rules_path: PathBuf,
    /// Attached interfaces and their slots.
    slots: Vec<(String, u32)>,
    pub counters: RuleCounters,
    /// Per interface, in rule order: each rule's counter slot (stable while its interface and
    /// id stay) and a fingerprint of what it does. Slots, not ids: 100k ids would cost the
    /// daemon megabytes it does not otherwise need.
    fingerprints: BTreeMap<String, Vec<(u32, u64)>>,
    /// (counter slot, id) of the rules with `log: true`, for drop-log lines.
    pub logged: Vec<(u32, String)>,
    /// What the kernel's flow table does; tracking is switched on by the first rule set with
    /// a `state: true` rule and stays on (flows may exist) until the daemon stops.
    pub conntrack: ConntrackSettings,
}

impl Loaded {
    /// Validates `rules` against the attached interfaces and compiles them with `counters`
    /// (the saved slots of a restarted daemon, or none) and the flow table's settings.
    pub fn compile(
        rules_path: &Path,
        rules: &RuleSet,
        slots: Vec<(String, u32)>,
        mut counters: RuleCounters,
        mut conntrack: ConntrackSettings,
    ) -> Result<(Loaded, Compiled), ReloadError> {
        if let Some((missing, _)) = slots
            .iter()
            .find(|(name, _)| !rules.interfaces.contains_key(name))
        {
            return Err(ReloadError::NoRules {
                interface: missing.clone(),
                rules: rules_path.to_path_buf(),
            });
        }
        let compiled = compile::ruleset(rules, &slots, &mut counters).map_err(|error| {
            ReloadError::Compile {
                rules: rules_path.to_path_buf(),
                error,
            }
        })?;
        conntrack.tracking |= rules.tracked();
        let logged = rules
            .interfaces
            .iter()
            .flat_map(|(interface, policy)| {
                policy
                    .rules
                    .iter()
                    .filter(|rule| rule.log)
                    .filter_map(|rule| Some((counters.get(interface, &rule.id)?, rule.id.clone())))
            })
            .collect();
        let loaded = Loaded {
            rules_path: rules_path.to_path_buf(),
            fingerprints: fingerprints(rules, &slots, &counters),
            logged,
            slots,
            counters,
            conntrack,
        };
        Ok((loaded, compiled))
    }

    pub fn slots(&self) -> &[(String, u32)] {
        &self.slots
    }

    /// Rules per attached interface.
    pub fn rule_counts(&self) -> Vec<(String, usize)> {
        self.slots
            .iter()
            .map(|(name, _)| {
                let count = self.fingerprints.get(name).map_or(0, Vec::len);
                (name.clone(), count)
            })
            .collect()
    }

    /// (interface, rule id, counter slot) of every loaded rule.
    pub fn rule_labels(&self) -> Vec<(String, String, u32)> {
        self.counters
            .iter()
            .map(|(i, r, s)| (i.to_string(), r.to_string(), s))
            .collect()
    }

    /// Reads the rule file again and swaps it in. On any error the dataplane and `self` are
    /// as they were: the kernel never sees a rule set that failed.
    pub fn reload(
        &mut self,
        dataplane: &std::sync::Mutex<Dataplane>,
    ) -> Result<Summary, ReloadError> {
        let started = Instant::now();
        let (next, compiled) = self.prepare()?;
        self.apply(next, &compiled, started, dataplane)
    }

    /// The first half of a reload, which touches nothing: reads the rule file again (see
    /// [`read_rules`]) and compiles it. The daemon runs it on a blocking thread with a time
    /// limit, on a copy of `self`.
    pub fn prepare(&self) -> Result<(Loaded, Compiled), ReloadError> {
        let rules = read_rules(&self.rules_path)?;
        Loaded::compile(
            &self.rules_path,
            &rules,
            self.slots.clone(),
            self.counters.clone(),
            self.conntrack,
        )
    }

    /// The second half: swaps what [`Loaded::prepare`] made into the dataplane, or changes
    /// nothing (it does not fit).
    pub fn apply(
        &mut self,
        next: Loaded,
        compiled: &Compiled,
        started: Instant,
        dataplane: &std::sync::Mutex<Dataplane>,
    ) -> Result<Summary, ReloadError> {
        let mut dataplane = match dataplane.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.fits(compiled, dataplane.capacity())?;
        if next.conntrack != self.conntrack {
            // Before the rules that open flows, so that their replies are looked up.
            dataplane.set_conntrack(&next.conntrack)?;
        }
        dataplane.reset_rule_counters(&compiled.fresh_counters)?;
        dataplane.install(compiled)?;
        let generation = dataplane.generation();
        drop(dataplane);
        let names = ids_by_slot([&self.counters, &next.counters]);
        let interfaces = self
            .slots
            .iter()
            .map(|(name, _)| change(name, &self.fingerprints, &next.fingerprints, &names))
            .collect();
        *self = next;
        Ok(Summary {
            interfaces,
            generation,
            milliseconds: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    fn fits(&self, compiled: &Compiled, capacity: Capacity) -> Result<(), ReloadError> {
        for (what, needed, room) in [
            ("tree nodes", compiled.nodes.len(), capacity.nodes),
            ("leaf items", compiled.leaves.len(), capacity.leaves),
            ("entries", compiled.entries.len(), capacity.entries),
            ("exact-address slots", compiled.exact.len(), capacity.exact),
        ] {
            if needed > room as usize {
                return Err(ReloadError::Capacity {
                    rules: self.rules_path.clone(),
                    what,
                    needed,
                    capacity: room,
                });
            }
        }
        Ok(())
    }
}

/// Far beyond any rule file the dataplane could hold (100,000 rules are about 10 MB).
const MAX_RULES_BYTES: u64 = 4 << 30;

/// Reads, parses and validates the rule file, refusing anything but a regular file
/// (`firewall_diagnostic::read_regular`: a FIFO or a device is an error at once).
pub fn read_rules(path: &Path) -> Result<RuleSet, ReloadError> {
    let read = |error| RulesError::Read {
        path: path.to_path_buf(),
        error,
    };
    let bytes =
        firewall_diagnostic::read_regular(path, MAX_RULES_BYTES).map_err(|error| match error {
            FileError::NotAFile(kind) => ReloadError::NotAFile {
                rules: path.to_path_buf(),
                kind,
            },
            FileError::Io(error) => read(error).into(),
            FileError::TooLarge => read(std::io::Error::other("larger than 4 GiB")).into(),
        })?;
    let text = firewall_diagnostic::decode(path, bytes).map_err(RulesError::from)?;
    Ok(RuleSet::parse(path, &text).map_err(RulesError::from)?)
}

fn fingerprints(
    rules: &RuleSet,
    slots: &[(String, u32)],
    counters: &RuleCounters,
) -> BTreeMap<String, Vec<(u32, u64)>> {
    slots
        .iter()
        .filter_map(|(name, _)| {
            let policy = rules.interfaces.get(name)?;
            let prints = policy
                .rules
                .iter()
                .filter_map(|rule| Some((counters.get(name, &rule.id)?, fingerprint(rule))))
                .collect();
            Some((name.clone(), prints))
        })
        .collect()
}

/// Rule ids by counter slot, for the rules of a reload's two sides.
fn ids_by_slot(sides: [&RuleCounters; 2]) -> HashMap<u32, &str> {
    sides
        .into_iter()
        .flat_map(|counters| counters.iter().map(|(_, id, slot)| (slot, id)))
        .collect()
}

/// A hash of what a rule does, leaving out where it is written.
fn fingerprint(rule: &Rule) -> u64 {
    let meaning = Rule {
        line: 0,
        column: 0,
        sets: Vec::new(),
        ..rule.clone()
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{meaning:?}").hash(&mut hasher);
    hasher.finish()
}

fn change(
    interface: &str,
    before: &BTreeMap<String, Vec<(u32, u64)>>,
    after: &BTreeMap<String, Vec<(u32, u64)>>,
    names: &HashMap<u32, &str>,
) -> Change {
    let empty = Vec::new();
    let old = before.get(interface).unwrap_or(&empty);
    let new = after.get(interface).unwrap_or(&empty);
    let old_prints: HashMap<u32, u64> = old.iter().copied().collect();
    let new_prints: HashMap<u32, u64> = new.iter().copied().collect();
    let id = |slot: &u32| {
        names
            .get(slot)
            .map_or_else(|| format!("#{slot}"), |id| id.to_string())
    };
    let mut change = Change {
        interface: interface.to_string(),
        rules: new.len(),
        ..Change::default()
    };
    for (slot, print) in new {
        match old_prints.get(slot) {
            None => change.added.push(id(slot)),
            Some(old_print) if old_print != print => change.changed.push(id(slot)),
            Some(_) => change.unchanged += 1,
        }
    }
    change.removed = old
        .iter()
        .filter(|(slot, _)| !new_prints.contains_key(slot))
        .map(|(slot, _)| id(slot))
        .collect();
    let kept = |list: &[(u32, u64)], other: &HashMap<u32, u64>| -> Vec<u32> {
        list.iter()
            .map(|(slot, _)| *slot)
            .filter(|slot| other.contains_key(slot))
            .collect()
    };
    change.reordered = kept(old, &new_prints) != kept(new, &old_prints);
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` compiled after a rule set that left `counters`, as a reload does.
    fn loaded(text: &str, counters: RuleCounters) -> Loaded {
        let rules = RuleSet::parse(Path::new("rules.yaml"), text).unwrap();
        let slots = vec![("lan0".to_string(), 0)];
        Loaded::compile(
            Path::new("rules.yaml"),
            &rules,
            slots,
            counters,
            ConntrackSettings::default(),
        )
        .unwrap()
        .0
    }

    const BEFORE: &str = "version: 1\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n\
        \x20     - { id: a, action: drop, protocol: udp }\n\
        \x20     - { id: b, action: drop, protocol: tcp }\n\
        \x20     - { id: c, action: pass, protocol: icmp }\n";

    /// The rules after; added, removed, changed; unchanged; reordered.
    type Row<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        usize,
        bool,
    );

    // Each row: the rules after, and the change expected against BEFORE.
    #[test]
    fn changes_are_reported_by_rule_id() {
        let rows: [Row; 4] = [
            // Blank lines move every rule: nothing changed.
            (
                "version: 1\n\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n\n\
                 \x20     - { id: a, action: drop, protocol: udp }\n\
                 \x20     - { id: b, action: drop, protocol: tcp }\n\
                 \x20     - { id: c, action: pass, protocol: icmp }\n",
                &[],
                &[],
                &[],
                3,
                false,
            ),
            // One added, one removed, one whose action changed.
            (
                "version: 1\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n\
                 \x20     - { id: a, action: pass, protocol: udp }\n\
                 \x20     - { id: c, action: pass, protocol: icmp }\n\
                 \x20     - { id: d, action: drop }\n",
                &["d"],
                &["b"],
                &["a"],
                1,
                false,
            ),
            // The same rules in another order.
            (
                "version: 1\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n\
                 \x20     - { id: c, action: pass, protocol: icmp }\n\
                 \x20     - { id: a, action: drop, protocol: udp }\n\
                 \x20     - { id: b, action: drop, protocol: tcp }\n",
                &[],
                &[],
                &[],
                3,
                true,
            ),
            // A condition added to a rule.
            (
                "version: 1\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n\
                 \x20     - { id: a, action: drop, protocol: udp, dst_port: 53 }\n\
                 \x20     - { id: b, action: drop, protocol: tcp }\n\
                 \x20     - { id: c, action: pass, protocol: icmp }\n",
                &[],
                &[],
                &["a"],
                2,
                false,
            ),
        ];
        let before = loaded(BEFORE, RuleCounters::default());
        for (after, added, removed, changed, unchanged, reordered) in rows {
            let after = loaded(after, before.counters.clone());
            let names = ids_by_slot([&before.counters, &after.counters]);
            let got = change("lan0", &before.fingerprints, &after.fingerprints, &names);
            assert_eq!(got.added, added, "{got:?}");
            assert_eq!(got.removed, removed, "{got:?}");
            assert_eq!(got.changed, changed, "{got:?}");
            assert_eq!(got.unchanged, unchanged, "{got:?}");
            assert_eq!(got.reordered, reordered, "{got:?}");
        }
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_at_once_and_a_regular_file_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("rules.yaml");
        // SAFETY: the path is a valid NUL-terminated string for the call.
        let made = unsafe {
            let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            libc::mkfifo(path.as_ptr(), 0o600)
        };
        assert_eq!(made, 0, "{}", std::io::Error::last_os_error());
        // No writer: a plain open would wait here forever.
        let error = read_rules(&fifo).unwrap_err().to_string();
        assert!(error.contains("not a regular file but a FIFO"), "{error}");
        let error = read_rules(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(error.contains("a character device"), "{error}");
        let file = dir.path().join("good.yaml");
        std::fs::write(&file, BEFORE).unwrap();
        assert_eq!(read_rules(&file).unwrap().interfaces["lan0"].rules.len(), 3);
    }

    #[test]
    fn a_rule_file_without_an_attached_interface_is_refused() {
        let rules = RuleSet::parse(Path::new("rules.yaml"), BEFORE).unwrap();
        let slots = vec![("lan0".to_string(), 0), ("wan0".to_string(), 1)];
        let error = Loaded::compile(
            Path::new("rules.yaml"),
            &rules,
            slots,
            RuleCounters::default(),
            ConntrackSettings::default(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "rules.yaml: interface wan0 is in the config but has no rules; add it under `interfaces:`"
        );
    }
}
