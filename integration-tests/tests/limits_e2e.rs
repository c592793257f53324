//! Rate limits end to end: the real daemon in the adapter namespace of a small site, raw
//! frames written into the LAN host's link (AF_PACKET) from sources the LAN host does not
//! own, and what arrives counted at the WAN host (the server) with a packet socket of its own.
//! A SYN flood against `syn-new` while a real TCP client connects; exact limited counts and
//! per-source buckets across reloads; a flood of a million IPv6 sources against a small table.
//!
//! The LAN host's link gets a qdisc: a veth whose peer runs XDP then pushes back when the
//! peer's ring is full (the sender sees ENOBUFS and writes the frame again) instead of
//! dropping, so every frame the sender counts as sent reached the XDP program.

use std::{
    ffi::CString,
    io, mem,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use std::io::{Read, Write};
use testbed::{LAN_HOST, NetNs, Signal, Site, WAN_HOST};

use crate::common::{self, metric, required_metric, start};

/// The LAN host's other addresses (198.18.1.0/24 is its own network).
const FLOOD_NET: [u8; 3] = [198, 18, 77];
const SERVER_PORT: u16 = 8080;

// --- raw frames in and out of a namespace's link ---------------------------------------

/// An AF_PACKET socket bound to `interface` of `ns`. With `protocol` 0 it only sends (frames
/// go out as written); with ETH_P_IP it also receives the link's IPv4 frames.
fn packet_socket(ns: &NetNs, interface: &str, protocol: u16) -> OwnedFd {
    let interface = CString::new(interface).unwrap();
    ns.run(move || {
        // SAFETY: a new socket, owned at once; `bind` reads the address it is given.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol.to_be()));
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let index = libc::if_nametoindex(interface.as_ptr());
            assert_ne!(index, 0, "{interface:?}: {}", io::Error::last_os_error());
            let mut address: libc::sockaddr_ll = mem::zeroed();
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_protocol = protocol.to_be();
            address.sll_ifindex = index as i32;
            let bound = libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(bound, 0, "bind: {}", io::Error::last_os_error());
            fd
        }
    })
    .unwrap()
}

fn set_socket_option(fd: RawFd, level: i32, name: i32, value: &impl Sized) {
    // SAFETY: the option's value is read from `value`, of its own size.
    let set = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(value).cast(),
            mem::size_of_val(value) as u32,
        )
    };
    assert_eq!(set, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// Writes `frames` to `fd` in batches (sendmmsg), writing again what the link pushed back
/// (ENOBUFS: the qdisc was full); returns how many were sent (all of them).
fn send_frames(fd: &OwnedFd, frames: &[&[u8]]) -> u64 {
    let mut iovecs: Vec<libc::iovec> = frames
        .iter()
        .map(|frame| libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iovec| {
            // SAFETY: an all-zero mmsghdr is a valid empty one; its iovec is set next.
            let mut header: libc::mmsghdr = unsafe { mem::zeroed() };
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect();
    let mut done = 0;
    while done < headers.len() {
        let rest = &mut headers[done..];
        // SAFETY: each header points at one iovec of a frame that outlives the call.
        let sent =
            unsafe { libc::sendmmsg(fd.as_raw_fd(), rest.as_mut_ptr(), rest.len() as u32, 0) };
        if sent > 0 {
            done += sent as usize;
            continue;
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::ENOBUFS | libc::EAGAIN) => thread::yield_now(),
            _ => panic!("sendmmsg: {error}"),
        }
    }
    frames.len() as u64
}

/// The MAC address of `interface` in `ns`.
fn mac(ns: &NetNs, interface: &str) -> [u8; 6] {
    let out = ns.ip(&["-j", "link", "show", "dev", interface]).unwrap();
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = links[0]["address"].as_str().unwrap();
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// The LAN host's link, with a FIFO so that a full peer ring pushes back instead of dropping,
/// and its own and the adapter's MAC addresses (raw frames are addressed to the adapter).
struct LanLink {
    socket: OwnedFd,
    src: [u8; 6],
    dst: [u8; 6],
}

fn lan_link(site: &Site) -> LanLink {
    site.lan
        .exec(
            "tc",
            &[
                "qdisc", "replace", "dev", "eth0", "root", "pfifo", "limit", "1000",
            ],
        )
        .unwrap();
    LanLink {
        socket: packet_socket(&site.lan, "eth0", 0),
        src: mac(&site.lan, "eth0"),
        dst: mac(&site.adapter, "lan0"),
    }
}

/// A SYN from FLOOD_NET.`host`:`port` to the server, with correct checksums.
fn syn(link: &LanLink, host: u8, port: u16) -> Vec<u8> {
    let [a, b, c] = FLOOD_NET;
    let server: Ipv4Addr = WAN_HOST.parse().unwrap();
    let builder = PacketBuilder::ethernet2(link.src, link.dst)
        .ipv4([a, b, c, host], server.octets(), 64)
        .tcp(port, SERVER_PORT, u32::from(port) << 8, 1024)
        .syn();
    let mut frame = Vec::with_capacity(builder.size(0));
    builder.write(&mut frame, &[]).unwrap();
    frame
}

/// Counts, on `interface` of `ns`, the SYNs (without ACK) from FLOOD_NET to SERVER_PORT that
/// arrive, until stopped.
struct SynCounter {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    reader: Option<thread::JoinHandle<()>>,
}

impl SynCounter {
    fn start(ns: &NetNs, interface: &str) -> SynCounter {
        let socket = packet_socket(ns, interface, libc::ETH_P_IP as u16);
        // Far more than ever queues: the count must not lose frames to a full buffer.
        set_socket_option(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &(16i32 << 20),
        );
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        set_socket_option(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout,
        );
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (count, stop) = (Arc::clone(&count), Arc::clone(&stop));
            thread::spawn(move || {
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: reads into a buffer of the length given.
                    let n = unsafe {
                        libc::recv(
                            socket.as_raw_fd(),
                            buffer.as_mut_ptr().cast(),
                            buffer.len(),
                            0,
                        )
                    };
                    if n > 0 && is_flood_syn(&buffer[..n as usize]) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        SynCounter {
            count,
            stop,
            reader: Some(reader),
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for SynCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn is_flood_syn(frame: &[u8]) -> bool {
    let Ok(packet) = SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let from_flood = matches!(&packet.net, Some(NetSlice::Ipv4(ip))
        if ip.header().source()[..3] == FLOOD_NET);
    let syn_to_server = matches!(&packet.transport, Some(TransportSlice::Tcp(tcp))
        if tcp.syn() && !tcp.ack() && tcp.destination_port() == SERVER_PORT);
    from_flood && syn_to_server
}

// --- the daemon ------------------------------------------------------------------------

/// `name{interface="lan0",rule=RULE}`, which must be there.
fn rule_metric(adapter: &NetNs, name: &str, rule: &str) -> u64 {
    required_metric(adapter, name, &[("interface", "lan0"), ("rule", rule)]) as u64
}

fn limited(adapter: &NetNs, rule: &str) -> u64 {
    rule_metric(adapter, "smf_firewall_rule_limited_packets_total", rule)
}

fn keys(adapter: &NetNs, rule: &str) -> u64 {
    rule_metric(adapter, "smf_firewall_rule_limit_keys", rule)
}

/// Waits (the census is refreshed every few seconds) until `rule` has `want` live keys.
fn keys_become(adapter: &NetNs, rule: &str, want: impl Fn(u64) -> bool) -> u64 {
    let mut seen = 0;
    let settled = testbed::eventually(Duration::from_secs(20), || {
        seen = keys(adapter, rule);
        want(seen)
    });
    assert!(settled, "{rule}: the key census stays at {seen}");
    seen
}

/// `smf-firewall ARGS` against the daemon, killed after 20 s (a daemon that stopped
/// answering must fail the test, not hang it); its output, which must be a success.
fn cli_ok(adapter: &NetNs, args: &[&str], config: &Path) -> String {
    let out = adapter
        .command("timeout")
        .arg("20")
        .arg(crate::smf_firewall())
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    common::text(&out.stdout)
}

fn successful_reloads(adapter: &NetNs) -> f64 {
    metric(
        adapter,
        "smf_firewall_rules_reloads_total",
        &[("result", "success")],
    )
    .unwrap_or(0.0)
}

/// The daemon's resident memory, in kB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

// --- 1. a SYN flood while a real client connects ---------------------------------------

const SYN_RULES: &str = r#"version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: syn-new, action: drop, protocol: tcp, tcp_flags: [syn, "!ack"], limit: { over: 100/s, per: src/24 } }
      - { id: flood-passed, action: pass, protocol: tcp, src: 198.18.77.0/24, tcp_flags: [syn, "!ack"] }
  wan0:
    default: pass
"#;
/// `syn-new`'s rate and burst (`over: 100/s` bursts one second's worth).
const SYN_RATE: f64 = 100.0;
const SYN_BURST: f64 = 100.0;
/// The real client's connections: fewer than the burst of its own /24's bucket, so none of
/// its SYNs (retransmissions included, at most one each in practice) can be over the limit.
const CONNECTIONS: usize = 40;
/// The flood sends at least this many SYNs, and on until the client is done.
const FLOOD_AT_LEAST: usize = 100_000;

/// A flag that a thread of the test polls to end; set when dropped too, so that the thread
/// ends when the test fails.
struct SetOnDrop(Arc<AtomicBool>);

impl SetOnDrop {
    fn new() -> SetOnDrop {
        SetOnDrop(Arc::new(AtomicBool::new(false)))
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.set();
    }
}

/// Accepts connections on SERVER_PORT in the server's namespace and counts the whole
/// messages it receives, until stopped.
fn tcp_server(ns: &NetNs, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    let listener = ns
        .run(|| TcpListener::bind(("0.0.0.0", SERVER_PORT)))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let mut messages = 0;
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut received = String::new();
                    if conn.read_to_string(&mut received).is_ok() && received == "hello" {
                        messages += 1;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("accept: {error}"),
            }
        }
        messages
    })
}

#[test]
fn a_syn_flood_is_cut_to_the_limit_while_a_real_client_keeps_connecting() {
    let Some(site) = common::site("limits_e2e::syn_flood") else {
        return;
    };
    let (_dir, config) = common::files(common::CONFIG, SYN_RULES);
    let _daemon = start(&site.adapter, &config);
    let link = lan_link(&site);
    let counter = SynCounter::start(&site.wan, "eth0");
    let stop_server = SetOnDrop::new();
    let server = tcp_server(&site.wan, Arc::clone(&stop_server.0));
    // Neighbours resolved both ways before the flood, so no frame waits in an ARP queue.
    assert_eq!(site.udp_through(common::PASSED, 1).unwrap(), 1);

    let frames: Vec<Vec<u8>> = (0..1024u32)
        .map(|n| syn(&link, 1 + (n % 254) as u8, 10_000 + n as u16))
        .collect();
    let client_done = SetOnDrop::new();
    let started = Instant::now();
    let flood = {
        let client_done = Arc::clone(&client_done.0);
        thread::spawn(move || {
            let batch: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let mut sent = 0;
            while sent < FLOOD_AT_LEAST as u64 || !client_done.load(Ordering::Relaxed) {
                sent += send_frames(&link.socket, &batch);
            }
            sent
        })
    };
    let server_address = SocketAddr::from((WAN_HOST.parse::<Ipv4Addr>().unwrap(), SERVER_PORT));
    let connected = site
        .lan
        .run(move || {
            (0..CONNECTIONS)
                .filter(|_| {
                    thread::sleep(Duration::from_millis(20));
                    TcpStream::connect_timeout(&server_address, Duration::from_secs(5))
                        .and_then(|mut conn| conn.write_all(b"hello"))
                        .is_ok()
                })
                .count()
        })
        .unwrap();
    client_done.set();
    let sent = flood.join().unwrap();

    let passed = rule_metric(
        &site.adapter,
        "smf_firewall_rule_hits_total",
        "flood-passed",
    );
    let over = limited(&site.adapter, "syn-new");
    // Read after the last frame was judged: the bucket cannot have refilled for longer.
    let elapsed = started.elapsed().as_secs_f64();
    // What reached the server is what the XDP program passed, once the forwarding drained.
    testbed::eventually(Duration::from_secs(5), || counter.count() >= passed);
    let at_server = counter.count();
    stop_server.set();
    let messages = server.join().unwrap();
    eprintln!(
        "syn flood: sent {sent}, limited {over}, passed {passed}, at the server {at_server}, \
         {elapsed:.2} s, client {connected}/{CONNECTIONS}"
    );

    assert_eq!(connected, CONNECTIONS, "every client connection succeeds");
    assert_eq!(messages, CONNECTIONS, "and carries its message");
    // Every SYN written reached the XDP program (the link pushes back, it does not drop) and
    // was either over the limit or passed; the client's own SYNs were never over (its /24
    // has a bucket of its own, and it sent fewer than its burst).
    assert_eq!(over + passed, sent, "limited + passed = sent");
    // A new bucket is full: at least the burst passed. No more than the burst and what the
    // rate refilled over the whole test (+1 for the partial token at either end).
    let allowance = SYN_BURST + SYN_RATE * elapsed + 1.0;
    assert!(passed >= SYN_BURST as u64, "passed {passed}");
    assert!(
        (passed as f64) <= allowance,
        "passed {passed} > allowance {allowance:.0} ({elapsed:.2} s)"
    );
    assert!(passed * 50 < sent, "passed {passed} of {sent}");
    // The flood's SYNs beyond the limit never reach the server: exactly those passed do.
    assert_eq!(at_server, passed, "SYNs at the server = SYNs passed");
}

// --- 2. exact counts, the key census and reloads ---------------------------------------

/// A burst of 10 and one token an hour: within a test, a source's bucket only empties.
fn udp_rules(burst: u32, extra: &str) -> String {
    format!(
        "version: 1
interfaces:
  lan0:
    default: pass
    rules:
{extra}      - {{ id: udp-cap, action: drop, protocol: udp, dst_port: 7000, limit: {{ over: 1/h, burst: {burst}, per: src }} }}
  wan0:
    default: pass
"
    )
}

const SOURCES: [&str; 3] = [LAN_HOST, "198.18.1.3", "198.18.1.4"];
/// 100 bytes of UDP payload: 142-byte frames (Ethernet, IPv4, UDP headers).
const FRAME_BYTES: u64 = 142;

/// Sends `count` datagrams of 100 bytes from `source` (a LAN host address) to the WAN host's
/// UDP 7000.
fn udp_from(site: &Site, source: &'static str, count: usize) {
    site.lan
        .run(move || {
            let socket = UdpSocket::bind((source, 0)).unwrap();
            for _ in 0..count {
                socket.send_to(&[7; 100], (WAN_HOST, 7000)).unwrap();
            }
        })
        .unwrap();
}

/// How many datagrams the WAN host's UDP 7000 has received, waiting up to half a second for
/// each next one.
fn received(socket: &UdpSocket) -> usize {
    let mut buf = [0; 200];
    std::iter::from_fn(|| socket.recv(&mut buf).ok()).count()
}

#[test]
fn limited_counts_and_keys_are_exact_and_reloads_keep_unchanged_buckets() {
    let Some(site) = common::site("limits_e2e::metrics_reload") else {
        return;
    };
    for source in &SOURCES[1..] {
        site.lan
            .ip(&["addr", "add", &format!("{source}/24"), "dev", "eth0"])
            .unwrap();
    }
    let (dir, config) = common::files(common::CONFIG, &udp_rules(10, ""));
    let daemon = start(&site.adapter, &config);
    let rx = site
        .wan
        .run(|| UdpSocket::bind(("0.0.0.0", 7000)))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(
        site.udp_through(common::PASSED, 1).unwrap(),
        1,
        "neighbours resolved"
    );
    assert_eq!(limited(&site.adapter, "udp-cap"), 0);
    assert_eq!(
        required_metric(&site.adapter, "smf_firewall_limit_keys_capacity", &[]),
        65536.0,
        "the default table"
    );

    for source in SOURCES {
        udp_from(&site, source, 50);
    }
    assert_eq!(received(&rx), 30, "each source's burst of 10 went on");
    assert_eq!(limited(&site.adapter, "udp-cap"), 120);
    assert_eq!(
        rule_metric(
            &site.adapter,
            "smf_firewall_rule_limited_bytes_total",
            "udp-cap"
        ),
        120 * FRAME_BYTES
    );
    assert_eq!(
        rule_metric(&site.adapter, "smf_firewall_rule_hits_total", "udp-cap"),
        120,
        "a limit rule decides only what is over its limit"
    );
    assert_eq!(keys_become(&site.adapter, "udp-cap", |k| k == 3), 3);

    // SIGHUP with the rules unchanged, then `reload` after adding a rule before it: the
    // buckets stay empty, the next datagram from each of them is over.
    let reloads = successful_reloads(&site.adapter);
    daemon.signal(Signal::SIGHUP).unwrap();
    assert!(
        testbed::eventually(Duration::from_secs(30), || {
            successful_reloads(&site.adapter) > reloads
        }),
        "the SIGHUP reload never succeeded"
    );
    udp_from(&site, LAN_HOST, 1);
    assert_eq!(limited(&site.adapter, "udp-cap"), 121);
    let rules = dir.path().join("rules.yaml");
    let other = "      - { id: no-discard, action: drop, protocol: udp, dst_port: 9 }\n";
    std::fs::write(&rules, udp_rules(10, other)).unwrap();
    cli_ok(&site.adapter, &["reload"], &config);
    udp_from(&site, SOURCES[1], 1);
    assert_eq!(limited(&site.adapter, "udp-cap"), 122);
    assert_eq!(received(&rx), 0, "nothing over the limit went on");

    // A changed limit starts with full buckets, for every source; the old keys are not
    // counted any more.
    std::fs::write(&rules, udp_rules(20, other)).unwrap();
    cli_ok(&site.adapter, &["reload"], &config);
    udp_from(&site, LAN_HOST, 25);
    assert_eq!(received(&rx), 20, "a new burst of 20");
    assert_eq!(limited(&site.adapter, "udp-cap"), 127);
    assert_eq!(keys_become(&site.adapter, "udp-cap", |k| k == 1), 1);
    udp_from(&site, SOURCES[2], 1);
    assert_eq!(received(&rx), 1, "another source's bucket is full too");
    assert_eq!(limited(&site.adapter, "udp-cap"), 127);
    assert_eq!(keys_become(&site.adapter, "udp-cap", |k| k == 2), 2);

    let text = common::scrape(&site.adapter);
    for source in SOURCES {
        assert!(!text.contains(source), "{source} in /metrics:\n{text}");
    }
    daemon.signal(Signal::SIGTERM).unwrap();
    assert!(daemon.wait().unwrap().status.success());
}

// --- 3. a million sources against a small table ----------------------------------------

const MAX_KEYS: u32 = 4096;
const V6_SOURCES: u32 = 1_000_000;
/// Every source sends once: its new bucket is full, so `v6-flood` limits none of them and
/// `v6-rest` drops all of them in XDP (the adapter's stack never sees the flood).
const V6_RULES: &str = "version: 1
interfaces:
  lan0:
    default: pass
    rules:
      - { id: v6-flood, action: drop, family: ipv6, protocol: udp, dst_port: 7001, limit: { over: 1/h, burst: 1, per: src } }
      - { id: v6-rest, action: drop, family: ipv6, protocol: udp, dst_port: 7001 }
  wan0:
    default: pass
";

/// A UDP datagram from 2001:2:0:1::`n` (n in the last 32 bits) to 2001:2:0:ff::1 port 7001.
/// Frames of other sources are this one with the source patched: their UDP checksum is then
/// wrong, which nothing reads (the XDP program drops them all).
fn v6_frame(link: &LanLink, n: u32) -> Vec<u8> {
    let mut src = [0x20, 0x01, 0, 0x02, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    src[12..].copy_from_slice(&n.to_be_bytes());
    let dst = [0x20, 0x01, 0, 0x02, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 1];
    let builder = PacketBuilder::ethernet2(link.src, link.dst)
        .ipv6(src, dst, 64)
        .udp(40000, 7001);
    let mut frame = Vec::with_capacity(builder.size(18));
    builder.write(&mut frame, &[0; 18]).unwrap();
    frame
}

/// The offset of the last 32 bits of the IPv6 source in `v6_frame`'s frames.
const V6_SOURCE_LOW: usize = 14 + 8 + 12;

/// Sends one frame from each of the sources `first..first + count`, in batches.
fn v6_flood(link: &LanLink, first: u32, count: u32) -> u64 {
    const BATCH: u32 = 512;
    let template = v6_frame(link, 0);
    let mut frames = vec![template; BATCH as usize];
    let mut sent = 0;
    let mut next = first;
    while next < first + count {
        let n = BATCH.min(first + count - next);
        for (i, frame) in frames.iter_mut().take(n as usize).enumerate() {
            frame[V6_SOURCE_LOW..V6_SOURCE_LOW + 4]
                .copy_from_slice(&(next + i as u32).to_be_bytes());
        }
        let batch: Vec<&[u8]> = frames.iter().take(n as usize).map(Vec::as_slice).collect();
        sent += send_frames(&link.socket, &batch);
        next += n;
    }
    sent
}

#[test]
fn a_million_sources_leave_the_table_at_its_size_and_the_daemon_flat() {
    let Some(site) = common::site("limits_e2e::million_sources") else {
        return;
    };
    let (_dir, config) = common::files(
        &format!("{}limits: {{max_keys: {MAX_KEYS}}}\n", common::CONFIG),
        V6_RULES,
    );
    let daemon = start(&site.adapter, &config);
    let pid = daemon.id();
    let link = Arc::new(lan_link(&site));
    let dropped = |adapter: &NetNs| {
        required_metric(
            adapter,
            "smf_firewall_packets_total",
            &[("interface", "lan0"), ("verdict", "drop")],
        ) as u64
    };
    // Warm the daemon's scrape and status paths up before taking its memory as the base.
    for _ in 0..3 {
        common::scrape(&site.adapter);
        cli_ok(&site.adapter, &["status"], &config);
    }
    let dropped_before = dropped(&site.adapter);
    let rss_before = rss_kib(pid);

    let started = Instant::now();
    let flood = {
        let link = Arc::clone(&link);
        thread::spawn(move || v6_flood(&link, 0, V6_SOURCES))
    };
    // The management plane answers while the flood runs (each scrape also walks the table).
    let mut answered = 0;
    while !flood.is_finished() {
        common::scrape(&site.adapter);
        cli_ok(&site.adapter, &["status"], &config);
        answered += 1;
        thread::sleep(Duration::from_millis(200));
    }
    let sent = flood.join().unwrap();
    let elapsed = started.elapsed().as_secs_f64();

    let arrived = dropped(&site.adapter) - dropped_before;
    let rest = rule_metric(&site.adapter, "smf_firewall_rule_hits_total", "v6-rest");
    let keys_now = keys_become(&site.adapter, "v6-flood", |k| k >= u64::from(MAX_KEYS) / 2);
    cli_ok(&site.adapter, &["status"], &config);
    let rss_after = rss_kib(pid);
    eprintln!(
        "{sent} sources in {elapsed:.1} s ({:.0}/s), {arrived} dropped in XDP, v6-rest {rest}, \
         keys {keys_now}, VmRSS {rss_before} -> {rss_after} kB, {answered} scrapes+status during",
        sent as f64 / elapsed
    );

    assert_eq!(sent, u64::from(V6_SOURCES));
    assert!(answered >= 1, "the flood ended before a scrape");
    // The flood arrived (the link pushes back rather than dropping; 90% is the floor).
    assert!(arrived * 10 >= sent * 9, "{arrived} of {sent} arrived");
    assert_eq!(
        rest, arrived,
        "every source's first frame is under its limit"
    );
    assert_eq!(limited(&site.adapter, "v6-flood"), 0);
    assert!(keys_now <= u64::from(MAX_KEYS), "{keys_now} keys");
    assert_eq!(
        required_metric(&site.adapter, "smf_firewall_limit_keys_capacity", &[]),
        f64::from(MAX_KEYS)
    );
    // The buckets are kernel memory; what the daemon holds for them is the census of at most
    // MAX_KEYS keys (~100 kB of keys walked, a map of counts by rule). 4 MiB is far above
    // that and the scrape buffers, and far below a leak of even 4 bytes per source (1M
    // sources).
    assert!(
        rss_after < rss_before + 4 * 1024,
        "VmRSS grew from {rss_before} kB to {rss_after} kB"
    );

    // The full table still takes a new source: its second frame is over.
    assert_eq!(v6_flood(&link, V6_SOURCES, 1), 1);
    assert_eq!(v6_flood(&link, V6_SOURCES, 1), 1);
    assert_eq!(limited(&site.adapter, "v6-flood"), 1);
    assert!(keys(&site.adapter, "v6-flood") <= u64::from(MAX_KEYS));

    daemon.signal(Signal::SIGTERM).unwrap();
    assert!(daemon.wait().unwrap().status.success());
}
