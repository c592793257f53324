//! `RawRules` → `RuleSet`: every check that keeps a mistake out of the kernel. All problems
//! are collected, so the operator sees them at once; any error rejects the whole file.
//! Warnings (a rule that can never match, a very long rule list) do not.

use std::collections::{BTreeMap, HashMap, HashSet};

use ipnet::IpNet;
use serde_saphyr::{Location, Spanned};

use firewall_diagnostic::Diagnostic;

use crate::{
    address, interface,
    rate_limit::{self, LimitKey, RateLimit},
    ruleset::{
        Action, Family, ListField, Policy, Ports, Rule, RuleSet, SetUse, TcpFlags, family_of,
        protocol,
    },
    schema::{RawInterface, RawLimit, RawList, RawRule, RawRules, Scalar},
};

pub const SUPPORTED_VERSION: u32 = 1;

/// A validated rule file and the warnings validation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub rules: RuleSet,
    pub warnings: Vec<Warning>,
}

/// Rules on one interface above which validation warns (SEIL/x86 Fuji's own filter stops at
/// 2,048 rules).
pub const DEFAULT_RULES_WARNING: usize = 2048;

/// Shadowing is checked pairwise, so it is skipped on interfaces with more rules than this.
pub const SHADOW_CHECK_MAX_RULES: usize = 4096;

/// Entries one rule may expand to by default: what one leaf of a decision tree can hold
/// (`firewall_common::MAX_LEAF_ENTRIES`), so that no single rule can overflow a leaf.
pub const DEFAULT_ENTRIES_PER_RULE: u64 = firewall_common::MAX_LEAF_ENTRIES as u64;

/// Thresholds for warnings, and the caps above which a file is an error because the
/// dataplane could not hold it (checked arithmetically, before anything is expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Warn when an interface has more rules than this.
    pub rules_per_interface: usize,
    /// Rules in the whole file, over all interfaces: each needs a counter slot.
    pub rules: usize,
    /// Kernel entries one rule may expand to (sources × destinations × ports ...).
    pub entries_per_rule: u64,
    /// Kernel entries the whole file may expand to.
    pub entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rules_per_interface: DEFAULT_RULES_WARNING,
            rules: firewall_common::MAX_RULE_COUNTERS as usize,
            entries_per_rule: DEFAULT_ENTRIES_PER_RULE,
            entries: crate::compile::MAX_ENTRIES,
        }
    }
}

/// What the rules so far add up to, against the file's caps.
struct Totals<'a> {
    limits: &'a Limits,
    rules: usize,
    entries: u64,
}

/// Something legal but probably not meant, at a position in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub Diagnostic);

/// A named set after expansion.
enum Set {
    Addresses(Vec<IpNet>),
    Ports(Vec<Ports>),
}

/// Collects the problems of one file.
struct Problems(Vec<Diagnostic>);

impl Problems {
    fn push(&mut self, at: &Location, message: impl Into<String>) {
        self.0.push(Diagnostic::at(at, message));
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

pub fn validate(raw: RawRules, limits: &Limits) -> Result<Checked, Vec<Diagnostic>> {
    let mut problems = Problems(Vec::new());
    if raw.version.value != SUPPORTED_VERSION {
        problems.push(
            &raw.version.referenced,
            format!(
                "unsupported version {}: this smf-firewall reads version {SUPPORTED_VERSION}",
                raw.version.value
            ),
        );
    }
    let sets: HashMap<String, Set> = raw
        .sets
        .iter()
        .filter_map(|(name, list)| Some((name.clone(), set(name, list, &mut problems)?)))
        .collect();
    let mut interfaces = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut totals = Totals {
        limits,
        rules: 0,
        entries: 0,
    };
    for (name, interface) in &raw.interfaces {
        if let Some(problem) = interface::name_problem(name) {
            problems.push(&interface.referenced, problem);
        }
        let policy = policy(name, &interface.value, &sets, &mut totals, &mut problems);
        warnings.extend(policy_warnings(
            name,
            &policy,
            &interface.referenced,
            limits,
        ));
        interfaces.insert(name.clone(), policy);
    }
    if problems.0.is_empty() {
        Ok(Checked {
            rules: RuleSet { interfaces },
            warnings,
        })
    } else {
        Err(problems.0)
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Expands a set: all addresses or all ports, never empty, no references to other sets.
fn set(name: &str, list: &Spanned<RawList>, problems: &mut Problems) -> Option<Set> {
    if !valid_name(name) {
        problems.push(
            &list.referenced,
            format!("set name `{name}` must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"),
        );
        return None;
    }
    let items = elements(list);
    let Some((first, _)) = items.first() else {
        problems.push(&list.referenced, format!("set `{name}` is empty"));
        return None;
    };
    if let Some((_, at)) = items.iter().find(|(item, _)| set_reference(item).is_some()) {
        problems.push(
            at,
            format!("set `{name}` refers to another set; list the values instead"),
        );
        return None;
    }
    let before = problems.len();
    let result = if looks_like_address(first) {
        let nets: Vec<IpNet> = items
            .iter()
            .filter_map(|(item, at)| {
                if looks_like_address(item) {
                    network(item, at, problems)
                } else {
                    problems.push(
                        at,
                        format!(
                            "set `{name}` mixes addresses and ports: `{item}` is not an address"
                        ),
                    );
                    None
                }
            })
            .collect();
        Set::Addresses(nets)
    } else {
        let ports: Vec<Ports> = items
            .iter()
            .filter_map(|(item, at)| {
                if looks_like_address(item) {
                    problems.push(
                        at,
                        format!("set `{name}` mixes ports and addresses: `{item}` is not a port"),
                    );
                    None
                } else {
                    port_range(item, at, problems)
                }
            })
            .collect();
        Set::Ports(ports)
    };
    (problems.len() == before).then_some(result)
}

/// The elements of a scalar-or-list with their positions.
fn elements(list: &Spanned<RawList>) -> Vec<(Scalar, Location)> {
    match &list.value {
        RawList::One(item) => vec![(item.clone(), list.referenced)],
        RawList::Many(items) => items
            .iter()
            .map(|i| (i.value.clone(), i.referenced))
            .collect(),
    }
}

fn set_reference(item: &Scalar) -> Option<&str> {
    match item {
        Scalar::Text(text) => text.trim().strip_prefix('$'),
        Scalar::Int(_) => None,
    }
}

/// Addresses contain '.' or ':'; ports and port ranges never do.
fn looks_like_address(item: &Scalar) -> bool {
    matches!(item, Scalar::Text(text) if text.contains(['.', ':']))
}

fn policy(
    name: &str,
    raw: &RawInterface,
    sets: &HashMap<String, Set>,
    totals: &mut Totals,
    problems: &mut Problems,
) -> Policy {
    let mut ids = HashSet::new();
    let raw_rules = raw.rules.as_deref().unwrap_or_default();
    let mut rules = Vec::with_capacity(raw_rules.len());
    for raw_rule in raw_rules {
        if !ids.insert(raw_rule.id.value.as_str()) {
            problems.push(
                &raw_rule.id.referenced,
                format!(
                    "duplicate rule id `{}` on interface {name}",
                    raw_rule.id.value
                ),
            );
        }
        totals.rules += 1;
        if totals.rules == totals.limits.rules + 1 {
            problems.push(
                &raw_rule.id.referenced,
                format!(
                    "rule `{}` on {name} is rule {} of the file; the dataplane counts at most {} rules",
                    raw_rule.id.value,
                    totals.rules,
                    totals.limits.rules
                ),
            );
        }
        if let Some(rule) = rule(raw_rule, sets, problems)
            && expansion(name, &rule, &raw_rule.id.referenced, totals, problems)
        {
            rules.push(rule);
        }
    }
    Policy {
        default: raw.default,
        non_ip: raw.non_ip.unwrap_or(Action::Pass),
        rules,
    }
}

/// Validates one rule; pushes its problems and returns `None` if it has any.
fn rule(raw: &RawRule, sets: &HashMap<String, Set>, problems: &mut Problems) -> Option<Rule> {
    let before = problems.len();
    let id = &raw.id;
    if !valid_name(&id.value) {
        problems.push(
            &id.referenced,
            format!(
                "rule id `{}` must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                id.value
            ),
        );
    }
    let protocol = raw
        .protocol
        .as_ref()
        .and_then(|p| protocol_number(p, problems))
        .flatten();
    let mut uses = Vec::new();
    let src = raw
        .src
        .as_ref()
        .and_then(|list| addresses(ListField::Src, list, sets, &mut uses, problems));
    let dst = raw
        .dst
        .as_ref()
        .and_then(|list| addresses(ListField::Dst, list, sets, &mut uses, problems));
    let src_port = raw.src_port.as_ref().and_then(|list| {
        ports(
            ListField::SrcPort,
            list,
            protocol,
            sets,
            &mut uses,
            problems,
        )
    });
    let dst_port = raw.dst_port.as_ref().and_then(|list| {
        ports(
            ListField::DstPort,
            list,
            protocol,
            sets,
            &mut uses,
            problems,
        )
    });
    let icmp_type = raw
        .icmp_type
        .as_ref()
        .and_then(|v| icmp_field("icmp_type", v, protocol, problems));
    let icmp_code = raw
        .icmp_code
        .as_ref()
        .and_then(|v| icmp_field("icmp_code", v, protocol, problems));
    let tcp_flags = raw
        .tcp_flags
        .as_ref()
        .and_then(|list| tcp_flags(list, protocol, problems));
    let vlan = raw.vlan.as_ref().and_then(|v| vlan_id(v, problems));
    let family = family(raw, src.as_deref(), dst.as_deref(), protocol, problems);
    let state = state(raw, problems);
    let limit = raw
        .limit
        .as_ref()
        .and_then(|limit| rate_limit(limit, raw, family, protocol, problems));
    let log = raw
        .log
        .as_ref()
        .is_some_and(|log| drop_log(log, raw.action, problems));
    (problems.len() == before).then(|| Rule {
        id: id.value.clone(),
        action: raw.action,
        protocol,
        family,
        src,
        dst,
        src_port,
        dst_port,
        icmp_type,
        icmp_code,
        tcp_flags,
        vlan,
        state,
        direction: raw.direction.unwrap_or_default(),
        log,
        limit,
        line: u32::try_from(id.referenced.line()).unwrap_or(u32::MAX),
        column: u32::try_from(id.referenced.column()).unwrap_or(u32::MAX),
        sets: uses,
    })
}

/// Checks the entries `rule` expands to against the caps, counted from its lists (nothing is
/// expanded); false if the rule alone is over its cap.
fn expansion(
    interface: &str,
    rule: &Rule,
    at: &Location,
    totals: &mut Totals,
    problems: &mut Problems,
) -> bool {
    let expansion = crate::compile::Expansion::of(rule);
    let entries = expansion.entries();
    let limits = totals.limits;
    if entries > limits.entries_per_rule {
        problems.push(
            at,
            format!(
                "rule `{}` expands to {entries} entries ({expansion}); at most {} per rule: \
                 use port ranges or wider networks, or split the rule",
                rule.id, limits.entries_per_rule
            ),
        );
        return false;
    }
    let before = totals.entries;
    totals.entries = before.saturating_add(entries);
    if before <= limits.entries && totals.entries > limits.entries {
        problems.push(
            at,
            format!(
                "rule `{}` on {interface} brings the file to {} entries; at most {} in one file",
                rule.id, totals.entries, limits.entries
            ),
        );
    }
    true
}

/// `log: true` is for drop rules: the drop log records what the firewall dropped; a
/// passed packet is the traffic itself and must not land in a log (Art. 17).
fn drop_log(log: &Spanned<bool>, action: Action, problems: &mut Problems) -> bool {
    if log.value && action != Action::Drop {
        problems.push(
            &log.referenced,
            "`log: true` needs `action: drop`: only dropped packets are logged",
        );
    }
    log.value
}

/// `any` (None), a name, or a number 0-255. The outer `Option` is `None` on error.
fn protocol_number(raw: &Spanned<Scalar>, problems: &mut Problems) -> Option<Option<u8>> {
    let number = match &raw.value {
        Scalar::Text(text) if text.trim() == "any" => return Some(None),
        Scalar::Text(text) => protocol::number(text.trim()),
        Scalar::Int(n) => u8::try_from(*n).ok(),
    };
    if number.is_none() {
        problems.push(
            &raw.referenced,
            format!(
                "`{}` is not a protocol: use any, tcp, udp, sctp, icmp, icmpv6 or a number 0-255",
                raw.value
            ),
        );
    }
    number.map(Some)
}

/// Addresses and CIDRs, directly or through `$set`s.
fn addresses(
    list_field: ListField,
    list: &Spanned<RawList>,
    sets: &HashMap<String, Set>,
    uses: &mut Vec<SetUse>,
    problems: &mut Problems,
) -> Option<Vec<IpNet>> {
    let field = list_field.name();
    let before = problems.len();
    let items = elements(list);
    if items.is_empty() {
        problems.push(
            &list.referenced,
            format!("`{field}` is an empty list; leave it out to match any address"),
        );
    }
    let mut nets = Vec::new();
    for (item, at) in &items {
        match set_reference(item) {
            Some(name) => match sets.get(name) {
                Some(Set::Addresses(set)) => {
                    uses.push(set_use(list_field, name, nets.len(), set.len()));
                    nets.extend_from_slice(set);
                }
                Some(Set::Ports(_)) => problems.push(
                    at,
                    format!("`${name}` is a set of ports; `{field}` needs addresses"),
                ),
                None => problems.push(at, format!("unknown set `${name}`")),
            },
            None => nets.extend(network(item, at, problems)),
        }
    }
    (problems.len() == before).then_some(nets)
}

/// Ports and ranges, directly or through `$set`s; only on protocols that have ports.
fn ports(
    list_field: ListField,
    list: &Spanned<RawList>,
    protocol: Option<u8>,
    sets: &HashMap<String, Set>,
    uses: &mut Vec<SetUse>,
    problems: &mut Problems,
) -> Option<Vec<Ports>> {
    let field = list_field.name();
    if !protocol.is_some_and(protocol::has_ports) {
        let shown = protocol_text(protocol);
        problems.push(
            &list.referenced,
            format!(
                "`{field}` needs `protocol: tcp`, `udp` or `sctp`; this rule's protocol is {shown}"
            ),
        );
        return None;
    }
    let before = problems.len();
    let items = elements(list);
    if items.is_empty() {
        problems.push(
            &list.referenced,
            format!("`{field}` is an empty list; leave it out to match any port"),
        );
    }
    let mut ranges = Vec::new();
    for (item, at) in &items {
        match set_reference(item) {
            Some(name) => match sets.get(name) {
                Some(Set::Ports(set)) => {
                    uses.push(set_use(list_field, name, ranges.len(), set.len()));
                    ranges.extend_from_slice(set);
                }
                Some(Set::Addresses(_)) => problems.push(
                    at,
                    format!("`${name}` is a set of addresses; `{field}` needs ports"),
                ),
                None => problems.push(at, format!("unknown set `${name}`")),
            },
            None => ranges.extend(port_range(item, at, problems)),
        }
    }
    (problems.len() == before).then_some(ranges)
}

/// A rule's protocol as messages name it: `any`, its name, or its number.
fn protocol_text(protocol: Option<u8>) -> String {
    protocol.map_or("any".to_string(), |p| {
        protocol::name(p).map_or(p.to_string(), str::to_string)
    })
}

fn set_use(field: ListField, name: &str, start: usize, len: usize) -> SetUse {
    SetUse {
        field,
        name: name.to_string(),
        start,
        len,
    }
}

fn icmp_field(
    field: &str,
    value: &Spanned<i64>,
    protocol: Option<u8>,
    problems: &mut Problems,
) -> Option<u8> {
    if !protocol.is_some_and(protocol::is_icmp) {
        problems.push(
            &value.referenced,
            format!("`{field}` needs `protocol: icmp` or `icmpv6`"),
        );
        return None;
    }
    let number = u8::try_from(value.value).ok();
    if number.is_none() {
        problems.push(
            &value.referenced,
            format!("`{field}` {} is not 0-255", value.value),
        );
    }
    number
}

/// `syn`, `[syn, "!ack"]` or `"syn,!ack"`: each name a flag that must be set, or after `!`
/// clear; TCP rules only. An unknown name, a flag both set and clear, or no flag at all is an
/// error at the element (at the string, for a comma-separated one).
fn tcp_flags(
    list: &Spanned<RawList>,
    protocol: Option<u8>,
    problems: &mut Problems,
) -> Option<TcpFlags> {
    if protocol != Some(protocol::TCP) {
        let shown = protocol_text(protocol);
        problems.push(
            &list.referenced,
            format!("`tcp_flags` needs `protocol: tcp`; this rule's protocol is {shown}"),
        );
        return None;
    }
    let names: Vec<(String, Location)> = elements(list)
        .into_iter()
        .flat_map(|(item, at)| {
            let text = item.to_string();
            text.split(',')
                .map(|name| (name.trim().to_string(), at))
                .collect::<Vec<_>>()
        })
        .collect();
    if names.is_empty() {
        problems.push(
            &list.referenced,
            "`tcp_flags` is an empty list; leave it out to match any flags",
        );
        return None;
    }
    let before = problems.len();
    let mut flags = TcpFlags { mask: 0, value: 0 };
    for (name, at) in &names {
        let (clear, bare) = match name.strip_prefix('!') {
            Some(bare) => (true, bare.trim()),
            None => (false, name.as_str()),
        };
        let Some(bit) = TcpFlags::bit(bare) else {
            let shown = if bare.is_empty() {
                "an empty name".to_string()
            } else {
                format!("`{name}`")
            };
            problems.push(
                at,
                format!(
                    "{shown} is not a TCP flag: use fin, syn, rst, psh, ack, urg, ece or cwr, \
                     with `!` before a flag that must be clear (quoted: \"!ack\")"
                ),
            );
            continue;
        };
        let value = if clear { 0 } else { bit };
        if flags.mask & bit != 0 && flags.value & bit != value {
            let bare = bare.to_ascii_lowercase();
            problems.push(
                at,
                format!("`tcp_flags` has both `{bare}` and `!{bare}`: no packet can match"),
            );
            continue;
        }
        flags.mask |= bit;
        flags.value |= value;
    }
    (problems.len() == before).then_some(flags)
}

/// `state: true` only on a pass rule: a drop opens nothing.
fn state(raw: &RawRule, problems: &mut Problems) -> bool {
    let Some(state) = &raw.state else {
        return false;
    };
    if state.value && raw.action != Action::Pass {
        problems.push(
            &state.referenced,
            "`state: true` needs `action: pass`: a dropped packet opens no flow",
        );
    }
    state.value
}

/// `limit:`: a rate, a burst (one period's worth unless written) and a key, each checked at
/// its position; the numbers must fit the kernel's token arithmetic.
fn rate_limit(
    limit: &Spanned<RawLimit>,
    raw: &RawRule,
    family: Option<Family>,
    protocol: Option<u8>,
    problems: &mut Problems,
) -> Option<RateLimit> {
    let before = problems.len();
    let RawLimit { over, burst, per } = &limit.value;
    let rate = rate_limit::rate(&over.value.to_string())
        .map_err(|e| problems.push(&over.referenced, e))
        .ok();
    let key = per.as_ref().map_or(Some(LimitKey::Rule), |per| {
        let key = rate_limit::key(&per.value)
            .map_err(|e| problems.push(&per.referenced, e))
            .ok()?;
        let ipv6 = family == Some(Family::Ipv6) || protocol == Some(protocol::ICMPV6);
        if let Some(prefix) = key.ipv6_prefix()
            && !ipv6
        {
            problems.push(
                &per.referenced,
                format!(
                    "`/{prefix}` is longer than an IPv4 address: the rule needs `family: ipv6`"
                ),
            );
        }
        Some(key)
    });
    if let Some(state) = &raw.state
        && state.value
    {
        problems.push(
            &state.referenced,
            "`state: true` cannot go with `limit`: the flows of a flood would be tracked",
        );
    }
    let (amount, unit, period_s) = rate?;
    let burst = match burst {
        None => RateLimit::default_burst(amount, unit),
        Some(burst) => rate_limit::burst(&burst.value.to_string(), unit)
            .map_err(|e| problems.push(&burst.referenced, e))
            .ok()?,
    };
    let limit_value = RateLimit {
        amount,
        unit,
        period_s,
        burst,
        key: key?,
    };
    if let Err(e) = limit_value.kernel() {
        problems.push(&limit.referenced, e);
    }
    (problems.len() == before).then_some(limit_value)
}

fn vlan_id(value: &Spanned<i64>, problems: &mut Problems) -> Option<u16> {
    let id = u16::try_from(value.value)
        .ok()
        .filter(|id| (1..=4094).contains(id));
    if id.is_none() {
        problems.push(
            &value.referenced,
            format!("VLAN id {} is not 1-4094", value.value),
        );
    }
    id
}

/// The written family, or the one all the rule's addresses share. Rejects rules that no packet
/// could match: addresses of the wrong family, an IPv4 `src` with an IPv6 `dst`, ICMP of the
/// other IP version.
fn family(
    raw: &RawRule,
    src: Option<&[IpNet]>,
    dst: Option<&[IpNet]>,
    protocol: Option<u8>,
    problems: &mut Problems,
) -> Option<Family> {
    let families = |nets: Option<&[IpNet]>| -> HashSet<Family> {
        nets.unwrap_or_default()
            .iter()
            .map(|net| family_of(net.addr()))
            .collect()
    };
    let (src_families, dst_families) = (families(src), families(dst));
    let at = raw
        .family
        .as_ref()
        .map_or(raw.id.referenced, |f| f.referenced);
    let written = raw.family.as_ref().map(|f| f.value);
    if let Some(family) = written {
        for (field, set) in [("src", &src_families), ("dst", &dst_families)] {
            if set.iter().any(|f| *f != family) {
                problems.push(&at, format!("`{field}` has an address that is not {family}, but the rule says `family: {family}`"));
            }
        }
    }
    let one =
        |set: &HashSet<Family>| (set.len() == 1).then(|| *set.iter().next().expect("one element"));
    let (src_only, dst_only) = (one(&src_families), one(&dst_families));
    if let (Some(s), Some(d)) = (src_only, dst_only)
        && s != d
    {
        problems.push(
            &at,
            format!("`src` is only {s} and `dst` only {d}: no packet can match"),
        );
    }
    let implied = written.or(src_only).or(dst_only);
    let protocol_family = match protocol {
        Some(protocol::ICMP) => Some(Family::Ipv4),
        Some(protocol::ICMPV6) => Some(Family::Ipv6),
        _ => None,
    };
    if let (Some(needed), Some(family)) = (protocol_family, implied)
        && needed != family
    {
        let name = protocol.and_then(protocol::name).unwrap_or_default();
        problems.push(
            &at,
            format!("{name} is {needed} only, but this rule matches {family} packets"),
        );
    }
    implied
}

/// An address (a /32 or /128) or a CIDR whose host bits are zero.
fn network(item: &Scalar, at: &Location, problems: &mut Problems) -> Option<IpNet> {
    let text = item.to_string();
    let value = text.trim();
    let Some(net) = address::parse_net(value) else {
        problems.push(
            at,
            format!(
                "`{value}` is not an IP address or CIDR (like 198.18.0.0/15 or 2001:2::/48; \
                 no leading zeros)"
            ),
        );
        return None;
    };
    if net.addr() != net.network() {
        problems.push(
            at,
            format!("`{value}` has host bits set: did you mean {}?", net.trunc()),
        );
        return None;
    }
    Some(net)
}

/// `N` or `"lo-hi"`, ports 1 to 65535, lo ≤ hi.
fn port_range(item: &Scalar, at: &Location, problems: &mut Problems) -> Option<Ports> {
    let text = item.to_string();
    let (lo, hi) = text.split_once('-').unwrap_or((&text, &text));
    let port = |text: &str| text.trim().parse::<u16>().ok().filter(|p| *p != 0);
    match (port(lo), port(hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Some(lo..=hi),
        (Some(lo), Some(hi)) => {
            problems.push(
                at,
                format!("port range {lo}-{hi} is backwards: write {hi}-{lo}"),
            );
            None
        }
        _ => {
            problems.push(
                at,
                format!("`{text}` is not a port or port range (1-65535, like 22 or \"8000-8080\")"),
            );
            None
        }
    }
}

fn policy_warnings(name: &str, policy: &Policy, at: &Location, limits: &Limits) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let count = policy.rules.len();
    if count > limits.rules_per_interface {
        warnings.push(Warning(Diagnostic::at(
            at,
            format!(
                "interface {name} has {count} rules, more than the limit of {}",
                limits.rules_per_interface
            ),
        )));
    }
    if count > SHADOW_CHECK_MAX_RULES {
        return warnings;
    }
    for (i, later) in policy.rules.iter().enumerate() {
        if let Some(earlier) = policy.rules[..i]
            .iter()
            .find(|earlier| earlier.direction == later.direction && covers(earlier, later))
        {
            warnings.push(Warning(Diagnostic {
                line: later.line,
                column: later.column,
                message: format!(
                    "rule `{}` on {name} can never match: it is shadowed by rule `{}` (line {})",
                    later.id, earlier.id, earlier.line
                ),
            }));
        }
    }
    warnings
}

/// Does every packet that `later` matches also match `earlier`? Conservative: a `true` is
/// always right; coverage by several earlier rules together is not detected.
pub fn covers(earlier: &Rule, later: &Rule) -> bool {
    // A limit rule lets the packets under its limit through to later rules.
    if earlier.limit.is_some() {
        return false;
    }
    fn field<T: PartialEq>(earlier: Option<T>, later: Option<T>) -> bool {
        earlier.is_none() || earlier == later
    }
    fn nets(earlier: Option<&Vec<IpNet>>, later: Option<&Vec<IpNet>>) -> bool {
        match (earlier, later) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(e), Some(l)) => l
                .iter()
                .all(|net| e.iter().any(|outer| outer.contains(net))),
        }
    }
    fn ports(earlier: Option<&Vec<Ports>>, later: Option<&Vec<Ports>>) -> bool {
        match (earlier, later) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(e), Some(l)) => {
                let merged = merge(e);
                l.iter().all(|range| {
                    merged
                        .iter()
                        .any(|outer| outer.start() <= range.start() && range.end() <= outer.end())
                })
            }
        }
    }
    field(earlier.vlan, later.vlan)
        && field(earlier.family, later.family)
        && field(earlier.protocol, later.protocol)
        && field(earlier.icmp_type, later.icmp_type)
        && field(earlier.icmp_code, later.icmp_code)
        && earlier.tcp_flags.is_none_or(|flags| {
            later
                .tcp_flags
                .is_some_and(|narrower| flags.implied_by(narrower))
        })
        && nets(earlier.src.as_ref(), later.src.as_ref())
        && nets(earlier.dst.as_ref(), later.dst.as_ref())
        && ports(earlier.src_port.as_ref(), later.src_port.as_ref())
        && ports(earlier.dst_port.as_ref(), later.dst_port.as_ref())
}

/// Sorted, non-overlapping, non-adjacent ranges covering the same ports.
fn merge(ranges: &[Ports]) -> Vec<Ports> {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| *r.start());
    let mut merged: Vec<Ports> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(*range.start()) <= u32::from(*last.end()) + 1 => {
                *last = *last.start()..=(*last.end()).max(*range.end());
            }
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use firewall_diagnostic::Diagnostics;

    const HEAD: &str = "version: 1\nsets:\n  mgmt: [198.18.0.10, 198.18.1.0/24, \"2001:2::10\"]\n  web: [80, 443, 8000-8080]\ninterfaces:\n  lan0:\n    default: drop\n    rules:\n";
    /// The line of the first rule in `HEAD` + rules.
    const FIRST: u32 = 9;

    fn parse(rules: &str) -> Result<Checked, Diagnostics> {
        RuleSet::parse_checked(
            Path::new("r.yaml"),
            &format!("{HEAD}{rules}"),
            &Limits::default(),
        )
    }

    fn rule(text: &str) -> Rule {
        parse(&format!("      - {text}\n"))
            .unwrap()
            .rules
            .interfaces["lan0"]
            .rules[0]
            .clone()
    }

    #[test]
    fn rules_show_sets_by_name_and_size() {
        // `check` prints each rule on one line: a set by its name and size, never its elements.
        let cases = [
            (
                "{ id: a, action: drop, src: $mgmt }",
                "a drop any src $mgmt (3 networks)",
            ),
            (
                "{ id: a, action: pass, protocol: tcp, src: [198.18.5.0/24, $mgmt, 198.18.6.1], dst_port: [22, $web] }",
                "a pass tcp src 198.18.5.0/24,$mgmt (3 networks),198.18.6.1/32 dst_port 22,$web (83 ports)",
            ),
            (
                "{ id: a, action: pass, protocol: udp, dst: [$mgmt, $mgmt], src_port: $web }",
                "a pass udp dst $mgmt (3 networks),$mgmt (3 networks) src_port $web (83 ports)",
            ),
            (
                "{ id: a, action: pass, protocol: tcp, dst: 198.18.0.1, dst_port: 80-90 }",
                "a pass ipv4 tcp dst 198.18.0.1/32 dst_port 80-90",
            ),
        ];
        for (text, shown) in cases {
            assert_eq!(rule(text).to_string(), shown, "{text}");
        }
    }

    #[test]
    fn a_large_set_prints_as_one_short_line() {
        let hosts: Vec<String> = (0..100_000u32)
            .map(|i| std::net::Ipv4Addr::from(0xC612_0000 + i).to_string())
            .collect();
        let text = format!(
            "version: 1\nsets:\n  blocklist: [{}]\ninterfaces:\n  lan0:\n    default: pass\n    rules:\n      - {{ id: block, action: drop, src: $blocklist }}\n",
            hosts.join(", ")
        );
        let limits = Limits {
            entries_per_rule: 100_000,
            ..Limits::default()
        };
        let checked = RuleSet::parse_checked(Path::new("r.yaml"), &text, &limits).expect("valid");
        let rule = &checked.rules.interfaces["lan0"].rules[0];
        assert_eq!(rule.src.as_ref().map(Vec::len), Some(100_000));
        assert_eq!(
            rule.to_string(),
            "block drop ipv4 any src $blocklist (100,000 networks)"
        );
    }

    #[test]
    fn sets_expand_and_lists_mix_families() {
        let r = rule("{ id: a, action: pass, protocol: tcp, src: $mgmt, dst_port: [$web, 22] }");
        assert_eq!(r.src.as_ref().unwrap().len(), 3);
        assert_eq!(
            r.dst_port,
            Some(vec![80..=80, 443..=443, 8000..=8080, 22..=22])
        );
        assert_eq!(r.family, None, "mixed families imply none");
        let r = rule("{ id: a, action: pass, src: [198.18.0.0/24, $mgmt] }");
        assert_eq!(r.src.as_ref().unwrap().len(), 4);
    }

    // Each row: a rule, the family it gets (ref. "family ... otherwise implied by the addresses").
    #[test]
    fn family_is_written_or_implied_by_addresses() {
        let cases = [
            (
                "{ id: a, action: pass, src: 198.18.0.1 }",
                Some(Family::Ipv4),
            ),
            (
                "{ id: a, action: pass, dst: \"2001:2::/48\" }",
                Some(Family::Ipv6),
            ),
            (
                "{ id: a, action: pass, src: [198.18.0.1, \"2001:2::1\"] }",
                None,
            ),
            (
                "{ id: a, action: pass, family: ipv6, protocol: udp }",
                Some(Family::Ipv6),
            ),
            ("{ id: a, action: pass, protocol: udp }", None),
        ];
        for (text, family) in cases {
            assert_eq!(rule(text).family, family, "{text}");
        }
    }

    #[test]
    fn protocols_by_name_and_number_and_vlan_and_icmp_fields() {
        assert_eq!(
            rule("{ id: a, action: pass, protocol: sctp }").protocol,
            Some(132)
        );
        assert_eq!(
            rule("{ id: a, action: pass, protocol: 47 }").protocol,
            Some(47)
        );
        assert_eq!(
            rule("{ id: a, action: pass, protocol: any }").protocol,
            None
        );
        assert_eq!(
            rule("{ id: a, action: pass, protocol: 6, src_port: 1024-65535 }").src_port,
            Some(vec![1024..=65535])
        );
        let r =
            rule("{ id: a, action: pass, protocol: icmp, icmp_type: 3, icmp_code: 4, vlan: 4094 }");
        assert_eq!(
            (r.icmp_type, r.icmp_code, r.vlan),
            (Some(3), Some(4), Some(4094))
        );
    }

    // Each row: one rule (on line FIRST) and a fragment of the error.
    #[test]
    fn each_mistake_is_an_error_at_its_position() {
        let cases = [
            ("{ id: a, action: drop, bogus: 1 }", "unknown field `bogus`"),
            (
                "{ id: a, action: drop, vlan: ten }",
                "expected a whole number",
            ),
            ("{ id: a, action: reject }", "unknown variant `reject`"),
            ("{ id: \"a b\", action: drop }", "must be 1-64 characters"),
            ("{ id: a, action: drop, src: $nope }", "unknown set `$nope`"),
            (
                "{ id: a, action: drop, src: $web }",
                "`$web` is a set of ports",
            ),
            (
                "{ id: a, action: drop, protocol: tcp, dst_port: $mgmt }",
                "`$mgmt` is a set of addresses",
            ),
            (
                "{ id: a, action: drop, protocol: icmp, dst_port: 80 }",
                "needs `protocol: tcp`, `udp` or `sctp`",
            ),
            (
                "{ id: a, action: drop, dst_port: 80 }",
                "this rule's protocol is any",
            ),
            (
                "{ id: a, action: drop, protocol: tcp, icmp_type: 8 }",
                "`icmp_type` needs `protocol: icmp`",
            ),
            (
                "{ id: a, action: drop, src: 198.18.0.1/33 }",
                "not an IP address or CIDR",
            ),
            (
                "{ id: a, action: drop, src: 198.18.0.1/24 }",
                "did you mean 198.18.0.0/24?",
            ),
            (
                "{ id: a, action: drop, src: \"2001:2::1/48\" }",
                "did you mean 2001:2::/48?",
            ),
            (
                "{ id: a, action: drop, protocol: tcp, dst_port: \"90-80\" }",
                "backwards: write 80-90",
            ),
            (
                "{ id: a, action: drop, protocol: tcp, dst_port: 0 }",
                "not a port",
            ),
            (
                "{ id: a, action: drop, protocol: tcp, dst_port: 65536 }",
                "not a port",
            ),
            ("{ id: a, action: drop, src: [] }", "empty list"),
            (
                "{ id: a, action: drop, family: ipv6, src: 198.18.0.1 }",
                "not ipv6, but the rule says `family: ipv6`",
            ),
            (
                "{ id: a, action: drop, src: 198.18.0.1, dst: \"2001:2::1\" }",
                "no packet can match",
            ),
            (
                "{ id: a, action: drop, protocol: icmpv6, src: 198.18.0.1 }",
                "icmpv6 is ipv6 only",
            ),
            ("{ id: a, action: drop, protocol: 256 }", "not a protocol"),
            ("{ id: a, action: drop, protocol: gre }", "not a protocol"),
            (
                "{ id: a, action: drop, vlan: 4095 }",
                "VLAN id 4095 is not 1-4094",
            ),
            (
                "{ id: a, action: drop, protocol: icmp, icmp_type: 300 }",
                "not 0-255",
            ),
            // Issue 9: drop logs record dropped packets only.
            (
                "{ id: a, action: pass, log: true }",
                "`log: true` needs `action: drop`",
            ),
            (
                "{ id: a, action: drop, log: yes please }",
                "expected true or false",
            ),
            (
                "{ id: a, action: drop, state: true }",
                "`state: true` needs `action: pass`",
            ),
            // Never fall open: no leading zeros, no YAML 1.1 booleans.
            (
                "{ id: a, action: drop, src: 198.18.010.0/24 }",
                "`198.18.010.0/24` is not an IP address or CIDR",
            ),
            (
                "{ id: a, action: drop, dst: 198.18.0.0/016 }",
                "`198.18.0.0/016` is not an IP address or CIDR",
            ),
            (
                "{ id: a, action: drop, src: [198.18.0.0/24, 198.18.1.01] }",
                "no leading zeros",
            ),
            (
                "{ id: a, action: pass, state: yes }",
                "expected true or false",
            ),
            (
                "{ id: a, action: pass, state: \"y\" }",
                "expected true or false",
            ),
            (
                "{ id: a, action: drop, log: 'yes' }",
                "expected true or false",
            ),
            ("{ id: a, action: drop, log: on }", "expected true or false"),
            (
                "{ id: a, action: pass, state: off }",
                "expected true or false",
            ),
            ("{ id: a, action: drop, log: no }", "expected true or false"),
        ];
        for (text, fragment) in cases {
            let err = parse(&format!("      - {text}\n")).unwrap_err();
            assert_eq!(err.items.len(), 1, "{text}: {err}");
            assert_eq!(err.items[0].line, FIRST, "{text}: {err}");
            assert!(err.items[0].column > 0, "{text}: {err}");
            assert!(err.to_string().contains(fragment), "{text}: {err}");
        }
    }

    // Issue 16: each row a rule with a mistake in its `limit:`, the column of the error (on
    // the rule's line) and its whole message.
    #[test]
    fn limit_mistakes_are_errors_at_their_position() {
        let cases = [
            (
                "{ id: a, action: drop, limit: { over: 10/d } }",
                47,
                "`10/d` is not a rate: write an amount per second, minute or hour, like 10/s, 30/min, 2mbit/s or 64kbytes/s",
            ),
            (
                "{ id: a, action: drop, limit: { over: 0/s } }",
                47,
                "`0/s`: a rate must be above zero",
            ),
            (
                "{ id: a, action: drop, limit: { over: 10/s, burst: 64kbytes } }",
                60,
                "`64kbytes`: the burst of a packet rate is a number of packets",
            ),
            (
                "{ id: a, action: drop, limit: { over: 2mbit/s, burst: 20 packets } }",
                63,
                "`20 packets`: the burst of a byte rate is in bytes (like 64kbytes)",
            ),
            (
                "{ id: a, action: drop, limit: { over: 10/s, per: src/64 } }",
                58,
                "`/64` is longer than an IPv4 address: the rule needs `family: ipv6`",
            ),
            (
                "{ id: a, action: drop, family: ipv4, limit: { over: 10/s, per: dst/33 } }",
                72,
                "`/33` is longer than an IPv4 address: the rule needs `family: ipv6`",
            ),
            (
                "{ id: a, action: drop, limit: { over: 10/s, per: sport } }",
                58,
                "`sport` is not a limit key: write src, dst, src/24 or dst/64",
            ),
            (
                "{ id: a, action: drop, limit: { over: 10/s, per: src/0 } }",
                58,
                "`src/0`: a prefix length is 1-128",
            ),
            (
                "{ id: a, action: pass, state: true, limit: { over: 10/s } }",
                39,
                "`state: true` cannot go with `limit`: the flows of a flood would be tracked",
            ),
            (
                "{ id: a, action: drop, limit: { over: 10/s, rate: 5 } }",
                53,
                "unknown field `rate`, expected one of over, burst, per",
            ),
            (
                "{ id: a, action: drop, limit: { burst: 5 } }",
                41,
                "missing field `over`",
            ),
        ];
        for (text, column, message) in cases {
            let err = parse(&format!("      - {text}\n")).unwrap_err();
            let found: Vec<(u32, u32, &str)> = err
                .items
                .iter()
                .map(|d| (d.line, d.column, d.message.as_str()))
                .collect();
            assert_eq!(found, [(FIRST, column, message)], "{text}");
        }
    }

    #[test]
    fn limits_are_kept_and_shown_as_written() {
        // Each row: a rule, and its line in `check`.
        let cases = [
            (
                "{ id: ssh-flood, action: drop, protocol: tcp, dst_port: 22, limit: { over: 10/s, burst: 20, per: src } }",
                "ssh-flood drop tcp dst_port 22 limit over 10/s, burst 20, per src",
            ),
            (
                "{ id: dns-cap, action: drop, protocol: udp, dst_port: 53, limit: { over: 50000/s } }",
                "dns-cap drop udp dst_port 53 limit over 50000/s, burst 50000",
            ),
            (
                "{ id: bw, action: drop, limit: { over: 2mbit/s, per: dst/24 } }",
                "bw drop any limit over 2000000bit/s, burst 250000 bytes, per dst/24",
            ),
            (
                "{ id: v6, action: drop, family: ipv6, limit: { over: 30/min, burst: 5, per: src/64 } }",
                "v6 drop ipv6 any limit over 30/min, burst 5, per src/64",
            ),
            (
                "{ id: b, action: drop, log: true, limit: { over: 64kbytes/h, burst: 1mbytes } }",
                "b drop any log limit over 65536bytes/h, burst 1048576 bytes",
            ),
        ];
        for (text, shown) in cases {
            assert_eq!(rule(text).to_string(), shown, "{text}");
        }
    }

    // Each row: a `tcp_flags` value as written, the mask and value it compiles to, and how
    // `check` shows the rule.
    #[test]
    fn tcp_flags_are_read_in_every_spelling() {
        let cases = [
            ("syn", 0x02, 0x02, "syn"),
            ("[syn, \"!ack\"]", 0x12, 0x02, "syn,!ack"),
            ("\"syn,!ack\"", 0x12, 0x02, "syn,!ack"),
            ("\"!ack, syn\"", 0x12, 0x02, "syn,!ack"),
            ("[SYN, \"!Ack\"]", 0x12, 0x02, "syn,!ack"),
            ("rst", 0x04, 0x04, "rst"),
            ("[fin, ack]", 0x11, 0x11, "fin,ack"),
            ("\"!ack\"", 0x10, 0x00, "!ack"),
            ("[syn, syn]", 0x02, 0x02, "syn"),
            (
                "[fin, syn, rst, psh, ack, urg, ece, \"!cwr\"]",
                0xff,
                0x7f,
                "fin,syn,rst,psh,ack,urg,ece,!cwr",
            ),
        ];
        for (written, mask, value, shown) in cases {
            let r = rule(&format!(
                "{{ id: a, action: drop, protocol: tcp, tcp_flags: {written} }}"
            ));
            assert_eq!(r.tcp_flags, Some(TcpFlags { mask, value }), "{written}");
            assert_eq!(r.to_string(), format!("a drop tcp tcp_flags {shown}"));
        }
        assert_eq!(
            rule("{ id: a, action: drop, protocol: tcp }").tcp_flags,
            None
        );
    }

    // Each row: a rule, the text its error points at (the column is where that text starts
    // on the rule's line) and the whole message.
    #[test]
    fn tcp_flags_errors_point_at_the_offending_element() {
        let unknown = |shown: &str| {
            format!(
                "{shown} is not a TCP flag: use fin, syn, rst, psh, ack, urg, ece or cwr, with \
                 `!` before a flag that must be clear (quoted: \"!ack\")"
            )
        };
        let cases = [
            (
                "{ id: a, action: drop, protocol: udp, tcp_flags: syn }",
                "syn",
                "`tcp_flags` needs `protocol: tcp`; this rule's protocol is udp".to_string(),
            ),
            (
                "{ id: a, action: drop, tcp_flags: [syn] }",
                "[syn]",
                "`tcp_flags` needs `protocol: tcp`; this rule's protocol is any".to_string(),
            ),
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: [syn, ack, \"!SYN\"] }",
                "\"!SYN\"",
                "`tcp_flags` has both `syn` and `!syn`: no packet can match".to_string(),
            ),
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: [syn, bogus, ack] }",
                "bogus",
                unknown("`bogus`"),
            ),
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: [syn, 2] }",
                "2]",
                unknown("`2`"),
            ),
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: [] }",
                "[]",
                "`tcp_flags` is an empty list; leave it out to match any flags".to_string(),
            ),
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: \"syn,,ack\" }",
                "\"syn,,ack\"",
                unknown("an empty name"),
            ),
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: \"syn,!syn\" }",
                "\"syn,!syn\"",
                "`tcp_flags` has both `syn` and `!syn`: no packet can match".to_string(),
            ),
        ];
        for (text, at, message) in cases {
            let err = parse(&format!("      - {text}\n")).unwrap_err();
            let column = "      - ".len() + text.find(at).unwrap() + 1;
            assert_eq!(err.items.len(), 1, "{text}: {err}");
            assert_eq!(
                (err.items[0].line, err.items[0].column as usize),
                (FIRST, column),
                "{text}: {err}"
            );
            assert_eq!(err.items[0].message, message, "{text}");
        }
    }

    // An unquoted `!ack` is a YAML tag on nothing: an error, in a list or alone, never a rule
    // that silently lost its condition.
    #[test]
    fn an_unquoted_bang_flag_is_an_error_not_a_missing_condition() {
        for value in ["[syn, !ack]", "!ack", ""] {
            let text =
                format!("      - {{ id: a, action: drop, protocol: tcp, tcp_flags: {value} }}\n");
            let err = parse(&text).unwrap_err();
            assert_eq!(err.items.len(), 1, "{value}: {err}");
            assert_eq!(err.items[0].line, FIRST, "{value}: {err}");
            assert_eq!(
                err.items[0].message,
                "an empty value; a value that starts with `!` must be quoted, like \"!ack\"",
                "{value}"
            );
        }
    }

    #[test]
    fn state_is_kept_on_pass_rules_and_its_error_points_at_the_value() {
        let set = parse("      - { id: a, action: pass, state: true }\n      - { id: b, action: drop, state: false }\n").unwrap();
        let rules = &set.rules.interfaces["lan0"].rules;
        assert!(rules[0].state && !rules[1].state);
        let err = parse("      - { id: a, action: drop, state: true }\n").unwrap_err();
        // The column of `true`, after `      - { id: a, action: drop, state: `.
        assert_eq!((err.items[0].line, err.items[0].column), (FIRST, 39));
    }

    #[test]
    fn file_level_mistakes() {
        let cases = [
            (
                "version: 2\ninterfaces: {lan0: {default: pass}}\n",
                "unsupported version 2",
            ),
            (
                "version: 1\ninterfaces: {lan0: {}}\n",
                "missing field `default`",
            ),
            (
                "version: 1\ninterfaces: {lan0: {default: pass, rules: [{id: a, action: drop}, {id: a, action: pass}]}}\n",
                "duplicate rule id `a`",
            ),
            (
                "version: 1\nsets: {s: []}\ninterfaces: {lan0: {default: pass}}\n",
                "set `s` is empty",
            ),
            (
                "version: 1\nsets: {s: [80, 198.18.0.1]}\ninterfaces: {lan0: {default: pass}}\n",
                "mixes ports and addresses",
            ),
            (
                "version: 1\nsets: {s: [$t]}\ninterfaces: {lan0: {default: pass}}\n",
                "refers to another set",
            ),
            (
                "version: 1\ninterfaces: {\"a/b\": {default: pass}}\n",
                "not a valid interface name",
            ),
            (
                "interfaces: {lan0: {default: pass}}\n",
                "missing field `version`",
            ),
        ];
        for (text, fragment) in cases {
            let err = RuleSet::parse(Path::new("r.yaml"), text).unwrap_err();
            assert!(err.to_string().contains(fragment), "{text}: {err}");
            assert!(err.items.iter().all(|d| d.line > 0), "{text}: {err}");
        }
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let err = parse(
            "      - { id: a, action: drop, src: 1.2.3.4/40 }\n      \
             - { id: a, action: drop, dst: 1.2.3.4/8 }\n",
        )
        .unwrap_err();
        let lines: Vec<u32> = err.items.iter().map(|d| d.line).collect();
        assert_eq!(lines, [FIRST, FIRST + 1, FIRST + 1], "{err}");
    }

    // Each row: a rule and whether it logs (drop logs: `log`, default false, drop rules only).
    #[test]
    fn log_is_off_unless_written_and_allowed_on_drop_rules() {
        let cases = [
            ("{ id: a, action: drop }", false),
            ("{ id: a, action: drop, log: true }", true),
            ("{ id: a, action: drop, log: false }", false),
            ("{ id: a, action: pass, log: false }", false),
        ];
        for (text, log) in cases {
            assert_eq!(rule(text).log, log, "{text}");
        }
    }

    #[test]
    fn non_ip_defaults_to_pass() {
        let set = parse("").unwrap().rules;
        assert_eq!(set.interfaces["lan0"].non_ip, Action::Pass);
    }

    // Each row: two rules, and whether the second is reported as shadowed by the first.
    #[test]
    fn shadowed_rules_are_warned_about() {
        let cases = [
            (
                "{ id: a, action: drop, protocol: tcp }",
                "{ id: b, action: pass, protocol: tcp, dst_port: 22 }",
                true,
            ),
            (
                "{ id: a, action: drop, src: 198.18.0.0/15 }",
                "{ id: b, action: pass, src: 198.19.1.0/24 }",
                true,
            ),
            (
                "{ id: a, action: drop, protocol: tcp, dst_port: [1-100, 101-200] }",
                "{ id: b, action: pass, protocol: tcp, dst_port: 50-150 }",
                true,
            ),
            (
                "{ id: a, action: drop, src: 198.18.0.0/24 }",
                "{ id: b, action: pass, src: 198.18.0.0/23 }",
                false,
            ),
            // Port rules never match non-first fragments; a rule without ports does.
            (
                "{ id: a, action: drop, protocol: udp, dst_port: 1-65535 }",
                "{ id: b, action: pass, protocol: udp }",
                false,
            ),
            (
                "{ id: a, action: drop, vlan: 10 }",
                "{ id: b, action: pass }",
                false,
            ),
            (
                "{ id: a, action: drop, family: ipv4 }",
                "{ id: b, action: pass, protocol: udp }",
                false,
            ),
            // Issue 16: a limit rule lets what is under its limit through to later rules.
            (
                "{ id: a, action: drop, protocol: tcp, limit: { over: 10/s } }",
                "{ id: b, action: pass, protocol: tcp, dst_port: 22 }",
                false,
            ),
            (
                "{ id: a, action: drop, limit: { over: 1/s, per: src } }",
                "{ id: b, action: drop, limit: { over: 1/s, per: src } }",
                false,
            ),
            // ... but is shadowed by an earlier rule without a limit like any other.
            (
                "{ id: a, action: drop, protocol: tcp }",
                "{ id: b, action: drop, protocol: tcp, dst_port: 22, limit: { over: 10/s } }",
                true,
            ),
            // A flag condition covers the narrower ones it is implied by, no others.
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: syn }",
                "{ id: b, action: pass, protocol: tcp, tcp_flags: [syn, \"!ack\"] }",
                true,
            ),
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: \"!ack\" }",
                "{ id: b, action: pass, protocol: tcp, dst_port: 22, tcp_flags: [syn, \"!ack\"] }",
                true,
            ),
            (
                "{ id: a, action: drop, protocol: tcp }",
                "{ id: b, action: pass, protocol: tcp, tcp_flags: rst }",
                true,
            ),
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: [syn, \"!ack\"] }",
                "{ id: b, action: pass, protocol: tcp, tcp_flags: syn }",
                false,
            ),
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: [syn, \"!ack\"] }",
                "{ id: b, action: pass, protocol: tcp, tcp_flags: [syn, ack] }",
                false,
            ),
            // A flag rule never matches a non-first fragment; a TCP rule without flags does.
            (
                "{ id: a, action: drop, protocol: tcp, tcp_flags: \"!cwr\" }",
                "{ id: b, action: pass, protocol: tcp }",
                false,
            ),
        ];
        for (first, second, shadowed) in cases {
            let checked = parse(&format!("      - {first}\n      - {second}\n")).unwrap();
            let warned = checked
                .warnings
                .iter()
                .any(|w| w.0.message.contains("shadowed by rule `a`"));
            assert_eq!(
                warned, shadowed,
                "{first} / {second}: {:?}",
                checked.warnings
            );
            if shadowed {
                assert_eq!(checked.warnings[0].0.line, FIRST + 1);
            }
        }
    }

    /// One rule of `sources` x `destinations` x `ports`, as in the issue (13 KB at 64 x 64 x
    /// 2,000).
    fn bomb(sources: usize, destinations: usize, ports: usize) -> String {
        let src: Vec<String> = (0..sources).map(|i| format!("198.18.{i}.0/24")).collect();
        let dst: Vec<String> = (0..destinations)
            .map(|i| format!("198.19.{i}.0/24"))
            .collect();
        let ports: Vec<String> = (0..ports).map(|i| (1000 + i).to_string()).collect();
        format!(
            "      - id: bomb\n        action: drop\n        protocol: tcp\n        src: [{}]\n        dst: [{}]\n        dst_port: [{}]\n",
            src.join(", "),
            dst.join(", "),
            ports.join(", ")
        )
    }

    #[test]
    fn a_rule_that_expands_beyond_its_cap_is_an_error_at_the_rule() {
        let text = format!("{HEAD}{}", bomb(64, 64, 2000));
        assert!(text.len() < 16 * 1024, "{} bytes", text.len());
        let started = std::time::Instant::now();
        let err =
            RuleSet::parse_checked(Path::new("r.yaml"), &text, &Limits::default()).unwrap_err();
        println!("validated {} bytes in {:?}", text.len(), started.elapsed());
        assert_eq!(err.items.len(), 1, "{err}");
        assert_eq!(
            (err.items[0].line, err.items[0].column),
            (FIRST, 13),
            "{err}"
        );
        assert_eq!(
            err.items[0].message,
            "rule `bomb` expands to 8192000 entries (64 sources x 64 destinations x 2000 \
             destination ports); at most 65535 per rule: use port ranges or wider networks, \
             or split the rule"
        );
    }

    // Each row: a rule, the entries it expands to (counted, and as built by compile).
    #[test]
    fn expansion_is_counted_as_compile_builds_it() {
        let cases = [
            ("{ id: a, action: drop }", 1),
            ("{ id: a, action: drop, src: $mgmt }", 3),
            ("{ id: a, action: drop, protocol: tcp, dst_port: $web }", 3),
            (
                "{ id: a, action: drop, protocol: tcp, src: $mgmt, src_port: [1, 2], dst_port: $web }",
                18,
            ),
            // Two IPv4 sources x one IPv4 destination, one IPv6 x one IPv6.
            (
                "{ id: a, action: drop, src: $mgmt, dst: [198.19.0.1, \"2001:2::1\"] }",
                3,
            ),
            (
                "{ id: a, action: drop, src: 198.18.0.0/24, dst: [198.19.0.1, \"2001:2::1\"] }",
                1,
            ),
        ];
        for (text, entries) in cases {
            let set = parse(&format!("      - {text}\n")).unwrap().rules;
            let expansion = crate::compile::Expansion::of(&set.interfaces["lan0"].rules[0]);
            assert_eq!(expansion.entries(), entries, "{text}");
            let compiled = crate::compile::ruleset(
                &set,
                &[("lan0".to_string(), 0)],
                &mut crate::compile::RuleCounters::default(),
            )
            .unwrap();
            assert_eq!(compiled.entries.len() as u64, entries, "{text}");
        }
    }

    #[test]
    fn a_file_beyond_its_entry_or_rule_cap_is_an_error_at_the_first_rule_over() {
        let rules = "      - { id: a, action: drop, src: $mgmt }\n      \
                     - { id: b, action: drop, protocol: tcp, dst_port: $web }\n      \
                     - { id: c, action: drop }\n";
        let text = format!("{HEAD}{rules}");
        let capped = |limits: Limits| {
            RuleSet::parse_checked(Path::new("r.yaml"), &text, &limits).map(|_| ())
        };
        // a: 3 entries, b: 3, c: 1.
        let err = capped(Limits {
            entries: 5,
            ..Limits::default()
        })
        .unwrap_err();
        assert_eq!(err.items.len(), 1, "{err}");
        assert_eq!(err.items[0].line, FIRST + 1, "{err}");
        assert!(
            err.items[0]
                .message
                .contains("rule `b` on lan0 brings the file to 6 entries; at most 5 in one file"),
            "{err}"
        );
        assert!(
            capped(Limits {
                entries: 7,
                ..Limits::default()
            })
            .is_ok()
        );
        let err = capped(Limits {
            rules: 2,
            ..Limits::default()
        })
        .unwrap_err();
        assert_eq!(err.items.len(), 1, "{err}");
        assert_eq!(err.items[0].line, FIRST + 2, "{err}");
        assert!(
            err.items[0]
                .message
                .contains("rule `c` on lan0 is rule 3 of the file; the dataplane counts at most 2"),
            "{err}"
        );
        let err = capped(Limits {
            entries_per_rule: 2,
            ..Limits::default()
        })
        .unwrap_err();
        let lines: Vec<u32> = err.items.iter().map(|d| d.line).collect();
        assert_eq!(lines, [FIRST, FIRST + 1], "{err}");
    }

    #[test]
    fn compile_refuses_more_entries_than_the_dataplane_holds_before_building_them() {
        // Validation was told to allow it; compile still refuses, without allocating 8M entries.
        let text = format!("{HEAD}{}", bomb(64, 64, 2000));
        let limits = Limits {
            entries_per_rule: u64::MAX,
            entries: u64::MAX,
            ..Limits::default()
        };
        let set = RuleSet::parse_checked(Path::new("r.yaml"), &text, &limits)
            .unwrap()
            .rules;
        let err = crate::compile::ruleset(
            &set,
            &[("lan0".to_string(), 0)],
            &mut crate::compile::RuleCounters::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            crate::compile::CompileError::TooManyEntries { entries: 8_192_000 }
        );
    }

    #[test]
    fn too_many_rules_is_a_warning_at_a_configurable_limit() {
        let rules: String = (0..5)
            .map(|i| {
                format!(
                    "      - {{ id: r{i}, action: drop, protocol: udp, dst_port: {} }}\n",
                    100 + i
                )
            })
            .collect();
        let text = format!("{HEAD}{rules}");
        let limits = Limits {
            rules_per_interface: 4,
            ..Limits::default()
        };
        let checked = RuleSet::parse_checked(Path::new("r.yaml"), &text, &limits).unwrap();
        assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
        assert!(
            checked.warnings[0]
                .0
                .message
                .contains("5 rules, more than the limit of 4")
        );
        let relaxed = Limits {
            rules_per_interface: 5,
            ..Limits::default()
        };
        assert!(
            RuleSet::parse_checked(Path::new("r.yaml"), &text, &relaxed)
                .unwrap()
                .warnings
                .is_empty()
        );
    }
}
