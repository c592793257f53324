//! Reading the daemon's `/metrics` from inside its namespace, and picking samples out of the
//! Prometheus text format.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::netns::NetNs;

/// `GET /metrics` from `address` as seen inside `ns`; returns the body.
pub fn scrape(ns: &NetNs, address: SocketAddr) -> io::Result<String> {
    http_get(ns, address, "/metrics")
}

/// `GET path` (with its query string, already encoded) from `address` as seen inside `ns`;
/// returns the body of a 200 response.
pub fn http_get(ns: &NetNs, address: SocketAddr, path: &str) -> io::Result<String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    ns.run(move || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        match response.split_once("\r\n\r\n") {
            Some((head, body))
                if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
            {
                Ok(body.to_string())
            }
            _ => Err(io::Error::other(format!("unexpected response: {response}"))),
        }
    })?
}

/// The value of the sample `name{labels}` (labels in any order), if present.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
            let label_text = rest.strip_suffix('}')?;
            let wanted = series_name == name
                && labels.iter().all(|(k, v)| {
                    label_text
                        .split(',')
                        .any(|pair| pair == format!("{k}=\"{v}\""))
                })
                && label_text.split(',').filter(|p| !p.is_empty()).count() == labels.len();
            wanted.then(|| value.parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn finds_labelled_and_plain_samples() {
        let text = "# HELP x\nsmf_a{interface=\"lan0\",verdict=\"drop\"} 8\nsmf_a{interface=\"lan0\",verdict=\"pass\"} 3\nsmf_b 2\n";
        assert_eq!(
            sample(text, "smf_a", &[("verdict", "drop"), ("interface", "lan0")]),
            Some(8.0)
        );
        assert_eq!(
            sample(text, "smf_a", &[("interface", "lan0"), ("verdict", "pass")]),
            Some(3.0)
        );
        assert_eq!(sample(text, "smf_b", &[]), Some(2.0));
        assert_eq!(sample(text, "smf_a", &[("interface", "lan0")]), None);
        assert_eq!(sample(text, "smf_c", &[]), None);
    }
}
