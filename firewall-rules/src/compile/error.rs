//! What can keep a valid rule set from compiling into the kernel's maps.

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
    #[error(
        "the rules expand to {entries} entries; the dataplane holds at most {}",
        firewall_common::MAX_ENTRIES
    )]
    TooManyEntries { entries: u64 },
    #[error("rule {rule}: {message}")]
    Limit { rule: String, message: String },
    #[error("interface {0} is not in the rule file")]
    NoRules(String),
}
