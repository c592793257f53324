//! `RuleSet` → `Compiled`: the exact contents of one generation of the kernel's maps. Every
//! interface's rules become entries (one per combination of list elements) and a decision
//! tree per IP family over them; `tree.rs` explains the trees.

mod entries;
mod tree;

use std::collections::HashMap;

use firewall_common::{Entry, Node, Policy, TREES, Tree, cond, family};

use super::RuleSet;

pub use tree::LEAF_TARGET;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "{entries} rule entries overlap so much that a packet would be checked against all of them \
         (at most {} can be); split the overlapping rules or make them more specific",
        firewall_common::MAX_LEAF_ENTRIES
    )]
    Overlap { entries: usize },
    #[error("more than {} rules with counters", firewall_common::MAX_RULE_COUNTERS)]
    TooManyRules,
    #[error("interface {0} is not in the rule file")]
    NoRules(String),
}

/// One generation of the dataplane: the trees, leaf lists and entries of every interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub nodes: Vec<Node>,
    pub leaves: Vec<u32>,
    pub entries: Vec<Entry>,
    /// Per interface slot.
    pub policies: Vec<(u32, Policy)>,
    /// Rule counter slots given to rules that had none: their counts start at zero.
    pub fresh_counters: Vec<u32>,
}

impl Compiled {
    /// The most entries one packet can be checked against in one leaf.
    pub fn longest_leaf(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.dim == firewall_common::LEAF)
            .map(|n| usize::from(n.mask))
            .max()
            .unwrap_or(0)
    }
}

/// Stable per-rule counter slots: a rule keeps its slot (and so its counts) across reloads
/// as long as its interface and id stay.
#[derive(Debug, Clone, Default)]
pub struct RuleCounters {
    slots: HashMap<(String, String), u32>,
    free: Vec<u32>,
    /// Freed by the last compile: the live generation may still count into them until the
    /// new one is installed, so they are reused only from the compile after.
    released: Vec<u32>,
    next: u32,
}

impl RuleCounters {
    /// The slot of a rule, allocating one (and noting it in `fresh`) for a new rule.
    fn slot(
        &mut self,
        interface: &str,
        rule: &str,
        fresh: &mut Vec<u32>,
    ) -> Result<u32, CompileError> {
        let key = (interface.to_string(), rule.to_string());
        if let Some(&slot) = self.slots.get(&key) {
            return Ok(slot);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.next < firewall_common::MAX_RULE_COUNTERS => {
                self.next += 1;
                self.next - 1
            }
            None => return Err(CompileError::TooManyRules),
        };
        self.slots.insert(key, slot);
        fresh.push(slot);
        Ok(slot)
    }

    /// Releases the slots of rules not in `rules`; fresh slots are zeroed before use.
    fn retain(&mut self, rules: &RuleSet) {
        self.free.append(&mut self.released);
        let (kept, gone): (HashMap<_, _>, HashMap<_, _>) =
            self.slots.drain().partition(|((interface, id), _)| {
                rules
                    .interfaces
                    .get(interface)
                    .is_some_and(|p| p.rules.iter().any(|r| &r.id == id))
            });
        self.slots = kept;
        self.released.extend(gone.into_values());
    }

    /// The slot of a rule, if it has one.
    pub fn get(&self, interface: &str, rule: &str) -> Option<u32> {
        self.slots
            .get(&(interface.to_string(), rule.to_string()))
            .copied()
    }

    /// Every (interface, rule id, slot).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u32)> {
        self.slots
            .iter()
            .map(|((i, r), s)| (i.as_str(), r.as_str(), *s))
    }
}

/// Compiles the rules of the given interfaces (name, slot) into one generation.
pub fn ruleset(
    rules: &RuleSet,
    interfaces: &[(String, u32)],
    counters: &mut RuleCounters,
) -> Result<Compiled, CompileError> {
    counters.retain(rules);
    let mut compiled = Compiled::default();
    let mut shared_leaves = HashMap::new();
    for (name, slot) in interfaces {
        let policy = rules
            .interfaces
            .get(name)
            .ok_or_else(|| CompileError::NoRules(name.clone()))?;
        let mut entries = Vec::new();
        for rule in &policy.rules {
            let counter = counters.slot(name, &rule.id, &mut compiled.fresh_counters)?;
            entries.extend(entries::of_rule(rule, counter));
        }
        // Leaves hold indices into the generation's entries: this interface's come after the
        // others'.
        let base = compiled.entries.len() as u32;
        let mut trees = [[Tree::NONE; TREES]; 2];
        for (family_trees, family) in trees.iter_mut().zip([family::IPV4, family::IPV6]) {
            for (tree, members) in family_trees.iter_mut().zip(partition(&entries, family)) {
                let Some(&min) = members.first() else {
                    continue;
                };
                let mut builder = tree::Builder::new(
                    &entries,
                    base,
                    family,
                    &mut compiled.nodes,
                    &mut compiled.leaves,
                    &mut shared_leaves,
                );
                *tree = Tree {
                    root: builder.build(members)?,
                    min_entry: base + min,
                };
            }
        }
        compiled.entries.extend(entries);
        compiled.policies.push((
            *slot,
            Policy {
                trees,
                default_verdict: policy.default.verdict() as u8,
                non_ip_verdict: policy.non_ip.verdict() as u8,
                _pad: [0; 2],
            },
        ));
    }
    Ok(compiled)
}

/// The entries that can match `family`, split by what they constrain: with a destination
/// address, with a source address only, with neither (see `firewall_common::TREES`).
fn partition(entries: &[Entry], family: u8) -> [Vec<u32>; TREES] {
    let mut trees: [Vec<u32>; TREES] = Default::default();
    for (i, e) in entries.iter().enumerate() {
        if e.conditions & cond::FAMILY != 0 && e.family != family {
            continue;
        }
        let tree = if e.conditions & cond::DST != 0 {
            0
        } else if e.conditions & cond::SRC != 0 {
            1
        } else {
            2
        };
        trees[tree].push(i as u32);
    }
    trees
}
