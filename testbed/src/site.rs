//! A small site: a LAN host, the adapter that runs smf-firewall (interfaces `lan0` and
//! `wan0`, routing between them) and a WAN host.
//!
//! ```text
//! lan (eth0 198.18.1.2/24) -- (lan0 198.18.1.1/24) adapter (wan0 198.19.1.1/24) -- (eth0 198.19.1.2/24) wan
//! ```

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
    time::Duration,
};

use crate::netns::{NetNs, veth};

pub const LAN_HOST: &str = "198.18.1.2";
pub const ADAPTER_LAN: &str = "198.18.1.1";
pub const ADAPTER_WAN: &str = "198.19.1.1";
pub const WAN_HOST: &str = "198.19.1.2";

/// The three namespaces; dropping the site removes all of them and their links.
#[derive(Debug)]
pub struct Site {
    pub lan: NetNs,
    pub adapter: NetNs,
    pub wan: NetNs,
}

impl Site {
    pub fn new() -> io::Result<Site> {
        let site = Site {
            lan: NetNs::new("lan")?,
            adapter: NetNs::new("fw")?,
            wan: NetNs::new("wan")?,
        };
        veth(&site.adapter, "lan0", &site.lan, "eth0")?;
        veth(&site.adapter, "wan0", &site.wan, "eth0")?;
        site.adapter
            .ip(&["addr", "add", &format!("{ADAPTER_LAN}/24"), "dev", "lan0"])?;
        site.adapter
            .ip(&["addr", "add", &format!("{ADAPTER_WAN}/24"), "dev", "wan0"])?;
        site.adapter.sysctl("net.ipv4.ip_forward=1")?;
        site.lan
            .ip(&["addr", "add", &format!("{LAN_HOST}/24"), "dev", "eth0"])?;
        site.lan
            .ip(&["route", "add", "default", "via", ADAPTER_LAN])?;
        site.wan
            .ip(&["addr", "add", &format!("{WAN_HOST}/24"), "dev", "eth0"])?;
        site.wan
            .ip(&["route", "add", "default", "via", ADAPTER_WAN])?;
        Ok(site)
    }
}

impl Site {
    /// Sends `count` datagrams of 100 bytes from the LAN host to the WAN host's UDP `port`;
    /// returns how many arrived (waiting up to half a second for each).
    pub fn udp_through(&self, port: u16, count: usize) -> io::Result<usize> {
        let rx = self.wan.run(move || UdpSocket::bind(("0.0.0.0", port)))??;
        rx.set_read_timeout(Some(Duration::from_millis(500)))?;
        let tx = self.lan.run(|| UdpSocket::bind("0.0.0.0:0"))??;
        let to = SocketAddr::from((
            WAN_HOST
                .parse::<std::net::Ipv4Addr>()
                .map_err(io::Error::other)?,
            port,
        ));
        for _ in 0..count {
            tx.send_to(&[7; 100], to)?;
        }
        let mut buf = [0; 200];
        Ok((0..count).take_while(|_| rx.recv(&mut buf).is_ok()).count())
    }
}

/// A TCP connection from `from` to `host:port`, a listener in `to`, that carries `message`
/// (connecting for at most `timeout`); true when the message arrived whole.
pub fn tcp_message(
    from: &NetNs,
    to: &NetNs,
    host: &str,
    port: u16,
    message: &'static str,
    timeout: Duration,
) -> bool {
    let listener = to
        .run(move || TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(false).unwrap();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().ok()?;
        let mut received = String::new();
        conn.read_to_string(&mut received).ok()?;
        Some(received)
    });
    let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
    let sent = from
        .run(move || {
            let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
            conn.write_all(message.as_bytes())
        })
        .unwrap();
    if sent.is_err() {
        // Unblock the listener so that its thread ends.
        let _ = to.run(move || TcpStream::connect(("127.0.0.1", port)));
    }
    sent.is_ok() && server.join().unwrap().as_deref() == Some(message)
}
