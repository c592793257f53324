//! Addresses and networks as operators write them, read one way by the rule file and by
//! `explain --packet`: no leading zeros in an IPv4 octet (`198.18.010.0` reads as octal in
//! some tools and decimal in others) or in a prefix length (`/016`).

use std::net::IpAddr;

use ipnet::IpNet;

/// An IPv4 or IPv6 address; `None` for anything else, including an IPv4 octet with a
/// leading zero.
pub fn parse_addr(text: &str) -> Option<IpAddr> {
    // The standard library's parser refuses leading zeros in IPv4 octets (also inside an
    // IPv6 address's embedded IPv4).
    text.parse().ok()
}

/// An address (a /32 or /128) or `ADDRESS/PREFIX`, the prefix in decimal without leading
/// zeros and at most the address's length. Host bits are left as written.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let Some((addr, prefix)) = text.split_once('/') else {
        return parse_addr(text).map(IpNet::from);
    };
    let addr = parse_addr(addr)?;
    let canonical = !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_digit())
        && (prefix == "0" || !prefix.starts_with('0'));
    let prefix: u8 = prefix.parse().ok().filter(|_| canonical)?;
    IpNet::new(addr, prefix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each row: text, and the network it is (None: refused).
    #[test]
    fn addresses_and_networks_without_leading_zeros() {
        let cases = [
            ("198.18.0.0/24", Some("198.18.0.0/24")),
            ("198.18.0.1", Some("198.18.0.1/32")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("2001:2::/48", Some("2001:2::/48")),
            ("2001:2::1", Some("2001:2::1/128")),
            ("198.18.010.0/24", None),
            ("198.18.0.01", None),
            ("198.18.0.0/016", None),
            ("198.18.0.0/00", None),
            ("2001:2::/048", None),
            ("198.18.0.0/33", None),
            ("198.18.0.0/+8", None),
            ("198.18.0.0/", None),
            ("::ffff:198.18.01.1", None),
            ("198.18.0.0/24/1", None),
        ];
        for (text, expected) in cases {
            let expected = expected.map(|e| e.parse::<IpNet>().unwrap());
            assert_eq!(parse_net(text), expected, "{text}");
        }
        assert_eq!(
            parse_addr("198.18.0.1"),
            Some("198.18.0.1".parse().unwrap())
        );
        assert_eq!(parse_addr("198.18.00.1"), None);
    }
}
