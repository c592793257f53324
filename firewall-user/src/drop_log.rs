//! Drop logs: the events the XDP program sends for packets dropped by rules with
//! `log: true` (sampled per rule in the kernel, `firewall-ebpf/src/drop_log.rs`), read from the
//! ring buffer as they come and written as structured log lines:
//!
//! ```text
//! INFO firewall_user::drop_log: dropped packet interface=lan0 rule=no-discard protocol=udp
//!     src=198.18.1.2 dst=198.19.1.2 src_port=40000 dst_port=9 vlan=0 bytes=142
//! ```
//!
//! Addresses and ports go to this local log only. The metrics count events per interface and
//! events suppressed by the rate limit or lost to a full ring, never an address (Art. 17).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, RwLock},
};

use aya::maps::{MapData, MapError, PerCpuArray, RingBuf};
use firewall_common::{DropEvent, DropLogControl, drop_log, family, l4};
use prometheus::{
    IntCounter, IntCounterVec, Opts, Registry,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
};
use tracing::{error, info, warn};

use firewall_common::protocol;
use firewall_dataplane::loader::{Dataplane, LoaderError};

use crate::config::DropLogConfig;

/// Interface names by slot and rule ids by counter slot: what an event's numbers stand for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    interfaces: HashMap<u32, String>,
    rules: HashMap<u32, String>,
}

impl Names {
    /// From the daemon's (interface, slot) pairs and the (counter slot, id) of the rules with
    /// `log: true`, the only ones whose events arrive (so the daemon keeps no other names).
    pub fn new(interfaces: &[(String, u32)], logged: &[(u32, String)]) -> Names {
        Names {
            interfaces: interfaces
                .iter()
                .map(|(name, slot)| (*slot, name.clone()))
                .collect(),
            rules: logged.iter().cloned().collect(),
        }
    }

    /// The interface of a directed slot (`firewall_common::directed_slot`).
    fn interface(&self, slot: u32) -> String {
        let slot = slot % firewall_common::MAX_INTERFACES;
        self.interfaces
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| format!("#{slot}"))
    }

    /// A rule removed by a reload an instant before its last event was read has no id any
    /// more: `#SLOT` then.
    fn rule(&self, slot: u32) -> String {
        self.rules
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| format!("#{slot}"))
    }
}

/// What follows the IP header of a dropped packet, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer4 {
    Ports {
        src: u16,
        dst: u16,
    },
    Icmp {
        icmp_type: u8,
        icmp_code: u8,
    },
    /// A non-first fragment: no ports.
    Fragment,
    Other,
}

/// One log line's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedPacket {
    pub interface: String,
    /// `in` (arriving, XDP) or `out` (leaving, TC egress).
    pub direction: &'static str,
    pub rule: String,
    /// `tcp`, `udp`, ... or the protocol number.
    pub protocol: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub layer4: Layer4,
    /// 0 when untagged.
    pub vlan: u16,
    /// The whole Ethernet frame.
    pub bytes: u32,
}

impl DroppedPacket {
    pub fn new(event: &DropEvent, names: &Names) -> DroppedPacket {
        let address = |words: [u32; 4]| {
            let mut bytes = [0u8; 16];
            for (chunk, word) in bytes.chunks_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            if event.family == family::IPV6 {
                IpAddr::V6(Ipv6Addr::from(bytes))
            } else {
                IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
            }
        };
        let layer4 = match event.l4 {
            l4::PORTS => Layer4::Ports {
                src: event.src_port,
                dst: event.dst_port,
            },
            l4::ICMP => Layer4::Icmp {
                icmp_type: event.src_port as u8,
                icmp_code: event.dst_port as u8,
            },
            l4::FRAGMENT => Layer4::Fragment,
            _ => Layer4::Other,
        };
        DroppedPacket {
            interface: names.interface(event.interface),
            direction: if event.interface >= firewall_common::MAX_INTERFACES {
                "out"
            } else {
                "in"
            },
            rule: names.rule(event.rule),
            protocol: protocol::name(event.protocol)
                .map_or_else(|| event.protocol.to_string(), str::to_string),
            src: address(event.src),
            dst: address(event.dst),
            layer4,
            vlan: event.vlan,
            bytes: event.bytes,
        }
    }

    /// Writes the log line.
    pub fn log(&self) {
        macro_rules! dropped {
            ($($layer4:tt)*) => {
                info!(
                    interface = %self.interface,
                    direction = self.direction,
                    rule = %self.rule,
                    protocol = %self.protocol,
                    src = %self.src,
                    dst = %self.dst,
                    $($layer4)*
                    vlan = self.vlan,
                    bytes = self.bytes,
                    "dropped packet"
                )
            };
        }
        match self.layer4 {
            Layer4::Ports { src, dst } => dropped!(src_port = src, dst_port = dst,),
            Layer4::Icmp {
                icmp_type,
                icmp_code,
            } => dropped!(icmp_type, icmp_code,),
            Layer4::Fragment => dropped!(fragment = true,),
            Layer4::Other => dropped!(),
        }
    }
}

/// The event in one ring buffer record; `None` if the record is too short (a program and a
/// daemon of different builds).
pub fn event(record: &[u8]) -> Option<DropEvent> {
    (record.len() >= size_of::<DropEvent>()).then(|| {
        // SAFETY: the record holds at least size_of::<DropEvent>() bytes, and DropEvent is
        // plain data valid for any bit pattern; read_unaligned copes with any alignment.
        unsafe { record.as_ptr().cast::<DropEvent>().read_unaligned() }
    })
}

/// Every event waiting in the ring buffer, oldest first.
pub fn drain(ring: &mut RingBuf<MapData>) -> Vec<DropEvent> {
    let mut events = Vec::new();
    while let Some(record) = ring.next() {
        match event(&record) {
            Some(event) => events.push(event),
            None => warn!(bytes = record.len(), "drop log: a record too short to read"),
        }
    }
    events
}

/// A `DROP_LOG_STATS` counter (`drop_log::SENT`, `SUPPRESSED`, `LOST`), summed over CPUs.
pub fn total(stats: &PerCpuArray<MapData, u64>, index: u32) -> Result<u64, MapError> {
    Ok(stats.get(&index, 0)?.iter().sum())
}

/// The daemon's drop log: a task that reads the ring buffer and logs each event, and the
/// metrics. Dropping it stops the task.
pub struct DropLog {
    names: Arc<RwLock<Names>>,
    collector: DropLogCollector,
    task: JoinHandle<()>,
}

impl DropLog {
    /// Sets the kernel's rate from `config`, takes the ring buffer from `dataplane` and starts
    /// reading it. `interfaces` and `counters` name what events carry as numbers.
    pub fn start(
        dataplane: &mut Dataplane,
        config: &DropLogConfig,
        interfaces: &[(String, u32)],
        logged: &[(u32, String)],
    ) -> Result<DropLog, LoaderError> {
        dataplane.set_drop_log(DropLogControl {
            rate_per_second: config.rate_per_second,
            ..DropLogControl::default()
        })?;
        let (ring, stats) = dataplane.take_drop_log()?;
        // SAFETY: the RingBuf owns its map's fd, which stays open and is the one as_raw_fd
        // returns for as long as the RingBuf lives, i.e. as long as the AsyncFd that owns it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|error| LoaderError::DropLogPoll(error.into_parts().1))?;
        let names = Arc::new(RwLock::new(Names::new(interfaces, logged)));
        let collector = DropLogCollector::new(stats, interfaces);
        let task = tokio::spawn(read(ring, Arc::clone(&names), collector.events.clone()));
        info!(
            rate_per_second = config.rate_per_second,
            "drop logs: reading events"
        );
        Ok(DropLog {
            names,
            collector,
            task,
        })
    }

    /// Registers `smf_firewall_drop_log_*`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.collector.clone()))
    }

    /// Takes the rule ids of a new compile (after a reload).
    pub fn rename(&self, interfaces: &[(String, u32)], logged: &[(u32, String)]) {
        let names = Names::new(interfaces, logged);
        match self.names.write() {
            Ok(mut guard) => *guard = names,
            Err(poisoned) => *poisoned.into_inner() = names,
        }
    }
}

impl Drop for DropLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Logs every event as it arrives, until the ring cannot be polled any more.
async fn read(
    mut ring: AsyncFd<RingBuf<MapData>>,
    names: Arc<RwLock<Names>>,
    events: IntCounterVec,
) {
    loop {
        let mut guard = match ring.readable_mut().await {
            Ok(guard) => guard,
            Err(error) => {
                error!(%error, "drop log: cannot poll the ring buffer; no more drop logs");
                return;
            }
        };
        let batch = drain(guard.get_inner_mut());
        guard.clear_ready();
        let names = match names.read() {
            Ok(names) => names,
            Err(poisoned) => poisoned.into_inner(),
        };
        for event in &batch {
            let packet = DroppedPacket::new(event, &names);
            // Logged, then counted: a scrape that counts an event finds its line written.
            packet.log();
            events.with_label_values(&[&packet.interface]).inc();
        }
    }
}

/// `smf_firewall_drop_log_events_total{interface}` (counted as they are logged) and the
/// kernel's suppressed and lost counters, read at scrape time.
#[derive(Clone)]
struct DropLogCollector {
    stats: Arc<PerCpuArray<MapData, u64>>,
    events: IntCounterVec,
    suppressed: IntCounter,
    lost: IntCounter,
}

impl DropLogCollector {
    fn new(stats: PerCpuArray<MapData, u64>, interfaces: &[(String, u32)]) -> Self {
        let events = IntCounterVec::new(
            Opts::new(
                "smf_firewall_drop_log_events_total",
                "Drop-log events logged (packets dropped by rules with `log: true`, sampled), by interface.",
            ),
            &["interface"],
        )
        .expect("valid metric definition");
        // Every interface from the start: traffic moves values, never the set of series.
        for (name, _) in interfaces {
            events.with_label_values(&[name]);
        }
        Self {
            stats: Arc::new(stats),
            events,
            suppressed: suppressed(),
            lost: lost(),
        }
    }
}

fn suppressed() -> IntCounter {
    IntCounter::new(
        "smf_firewall_drop_log_suppressed_total",
        "Drop-log events not sent because their rule reached drop_log.rate_per_second.",
    )
    .expect("valid metric definition")
}

fn lost() -> IntCounter {
    IntCounter::new(
        "smf_firewall_drop_log_lost_total",
        "Drop-log events lost because the ring buffer was full (the daemon did not keep up).",
    )
    .expect("valid metric definition")
}

impl Collector for DropLogCollector {
    fn desc(&self) -> Vec<&Desc> {
        [self.events.desc(), self.suppressed.desc(), self.lost.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.events.collect();
        // Fresh counters each scrape: concurrent scrapes share nothing to reset.
        for (index, counter) in [
            (drop_log::SUPPRESSED, suppressed()),
            (drop_log::LOST, lost()),
        ] {
            match total(&self.stats, index) {
                Ok(value) => {
                    counter.inc_by(value);
                    families.extend(counter.collect());
                }
                Err(error) => warn!(%error, "cannot read the drop-log counters"),
            }
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use firewall_common::{family, l4};

    use super::*;

    fn words(bytes: [u8; 16]) -> [u32; 4] {
        let mut out = [0u32; 4];
        for (word, chunk) in out.iter_mut().zip(bytes.chunks(4)) {
            *word = u32::from_ne_bytes(chunk.try_into().unwrap());
        }
        out
    }

    fn names() -> Names {
        Names {
            interfaces: [(0, "lan0".to_string()), (1, "wan0".to_string())].into(),
            rules: [(7, "no-discard".to_string())].into(),
        }
    }

    // Each row: an event as the program writes it, and the log line's fields.
    #[test]
    fn events_become_log_fields_with_names_for_their_slots() {
        let v4 = |a: [u8; 4]| {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&a);
            words(bytes)
        };
        let six: Ipv6Addr = "2001:2::1".parse().unwrap();
        let cases = [
            (
                DropEvent {
                    src: v4([198, 18, 1, 2]),
                    dst: v4([198, 19, 1, 2]),
                    interface: 0,
                    rule: 7,
                    bytes: 142,
                    src_port: 40000,
                    dst_port: 9,
                    family: family::IPV4,
                    protocol: protocol::UDP,
                    l4: l4::PORTS,
                    ..DropEvent::default()
                },
                DroppedPacket {
                    interface: "lan0".into(),
                    direction: "in",
                    rule: "no-discard".into(),
                    protocol: "udp".into(),
                    src: "198.18.1.2".parse().unwrap(),
                    dst: "198.19.1.2".parse().unwrap(),
                    layer4: Layer4::Ports { src: 40000, dst: 9 },
                    vlan: 0,
                    bytes: 142,
                },
            ),
            (
                DropEvent {
                    src: words(six.octets()),
                    dst: words(six.octets()),
                    interface: firewall_common::directed_slot(1, firewall_common::direction::OUT),
                    rule: 8,
                    bytes: 90,
                    src_port: 128,
                    dst_port: 0,
                    vlan: 10,
                    family: family::IPV6,
                    protocol: protocol::ICMPV6,
                    l4: l4::ICMP,
                    ..DropEvent::default()
                },
                DroppedPacket {
                    interface: "wan0".into(),
                    direction: "out",
                    rule: "#8".into(),
                    protocol: "icmpv6".into(),
                    src: IpAddr::V6(six),
                    dst: IpAddr::V6(six),
                    layer4: Layer4::Icmp {
                        icmp_type: 128,
                        icmp_code: 0,
                    },
                    vlan: 10,
                    bytes: 90,
                },
            ),
            (
                DropEvent {
                    interface: 9,
                    rule: 7,
                    protocol: 47,
                    family: family::IPV4,
                    l4: l4::OTHER,
                    ..DropEvent::default()
                },
                DroppedPacket {
                    interface: "#9".into(),
                    direction: "in",
                    rule: "no-discard".into(),
                    protocol: "47".into(),
                    src: "0.0.0.0".parse().unwrap(),
                    dst: "0.0.0.0".parse().unwrap(),
                    layer4: Layer4::Other,
                    vlan: 0,
                    bytes: 0,
                },
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(DroppedPacket::new(&event, &names()), expected);
        }
    }

    #[test]
    fn a_record_is_read_whole_or_not_at_all() {
        let event = DropEvent {
            rule: 3,
            bytes: 60,
            ..DropEvent::default()
        };
        // SAFETY: DropEvent is plain data; its bytes are what the program writes.
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts(
                (&event as *const DropEvent).cast::<u8>(),
                size_of::<DropEvent>(),
            )
        };
        assert_eq!(super::event(bytes), Some(event));
        assert_eq!(super::event(&bytes[..bytes.len() - 1]), None);
        assert_eq!(
            size_of::<DropEvent>(),
            72,
            "the ring's sizing assumes 72 bytes"
        );
    }
}
