//! `limit:` on a rule: its text (`over: 10/s`, `2mbit/s`, `burst`, `per: src/24`) and the
//! integer token arithmetic the kernel runs (`firewall_common::limit`).

use std::fmt;

use firewall_common::limit::{self as kernel, per, unit};

/// Nanoseconds in a second: the token arithmetic counts time in nanoseconds.
const SECOND_NS: u64 = 1_000_000_000;

/// A validated `limit:`. The rule matches only the packets over `amount` per `period_s`
/// (with `burst`), counted in the bucket `key` picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub amount: u64,
    pub unit: RateUnit,
    /// Seconds the amount is per: 1, 60 or 3,600.
    pub period_s: u64,
    /// Packets, or bytes for a byte or bit rate, that a full bucket lets through at once.
    pub burst: u64,
    pub key: LimitKey,
}

/// What a rate counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateUnit {
    Packets,
    Bytes,
    Bits,
}

/// Whose bucket a packet takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// One bucket for the rule.
    Rule,
    /// One per source address, or per source network of `prefix` bits.
    Src { prefix: Option<u8> },
    /// One per destination address or network.
    Dst { prefix: Option<u8> },
}

impl LimitKey {
    /// The prefix length, if it is longer than an IPv4 address (the rule must be IPv6-only).
    pub fn ipv6_prefix(self) -> Option<u8> {
        match self {
            LimitKey::Src { prefix: Some(p) } | LimitKey::Dst { prefix: Some(p) } if p > 32 => {
                Some(p)
            }
            _ => None,
        }
    }
}

/// Parses `over:`: an amount, an optional byte or bit unit, `/` and a period
/// (`10/s`, `50000/second`, `2mbit/s`, `64kbytes/s`, `30/min`, `100/h`).
pub fn rate(text: &str) -> Result<(u64, RateUnit, u64), String> {
    let bad = || {
        format!(
            "`{text}` is not a rate: write an amount per second, minute or hour, like 10/s, 30/min, 2mbit/s or 64kbytes/s"
        )
    };
    let (amount, period) = text.split_once('/').ok_or_else(bad)?;
    let period_s = match period.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3_600,
        _ => return Err(bad()),
    };
    let amount = amount.trim();
    let digits = amount
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(amount.len());
    let (number, suffix) = amount.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let (unit, scale) = byte_unit(suffix.trim()).ok_or_else(bad)?;
    let amount = number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if amount == 0 {
        return Err(format!("`{text}`: a rate must be above zero"));
    }
    Ok((amount, unit, period_s))
}

/// A unit after a number: none (packets), bytes (1,024 steps, as nftables counts them) or bits
/// (1,000 steps, as links are rated); the unit and its multiplier.
fn byte_unit(suffix: &str) -> Option<(RateUnit, u64)> {
    Some(match suffix.to_ascii_lowercase().as_str() {
        "" => (RateUnit::Packets, 1),
        "b" | "byte" | "bytes" => (RateUnit::Bytes, 1),
        "kb" | "kbyte" | "kbytes" => (RateUnit::Bytes, 1 << 10),
        "mb" | "mbyte" | "mbytes" => (RateUnit::Bytes, 1 << 20),
        "gb" | "gbyte" | "gbytes" => (RateUnit::Bytes, 1 << 30),
        "bit" | "bits" => (RateUnit::Bits, 1),
        "kbit" | "kbits" => (RateUnit::Bits, 1_000),
        "mbit" | "mbits" => (RateUnit::Bits, 1_000_000),
        "gbit" | "gbits" => (RateUnit::Bits, 1_000_000_000),
        _ => return None,
    })
}

/// Parses `burst:` text for a rate of `unit`: packets (a number), or bytes (a number with an
/// optional byte unit) for a byte or bit rate.
pub fn burst(text: &str, unit: RateUnit) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a burst: write a number of packets (or bytes, like 64kbytes, for a byte rate)"))?;
    let scale = match (unit, byte_unit(suffix.trim())) {
        (_, Some((RateUnit::Packets, _))) => 1,
        (RateUnit::Packets, _) => {
            return Err(format!(
                "`{text}`: the burst of a packet rate is a number of packets"
            ));
        }
        (_, Some((RateUnit::Bytes, scale))) => scale,
        _ => {
            return Err(format!(
                "`{text}`: the burst of a byte rate is in bytes (like 64kbytes)"
            ));
        }
    };
    let burst = number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if burst == 0 {
        return Err(format!("`{text}`: a burst must be above zero"));
    }
    Ok(burst)
}

/// Parses `per:`: `src`, `dst`, or either with a prefix length (`src/24`, `dst/64`).
pub fn key(text: &str) -> Result<LimitKey, String> {
    let bad = || format!("`{text}` is not a limit key: write src, dst, src/24 or dst/64");
    let (field, prefix) = match text.split_once('/') {
        Some((field, prefix)) => {
            let prefix: u8 = prefix.trim().parse().map_err(|_| bad())?;
            if !(1..=128).contains(&prefix) {
                return Err(format!("`{text}`: a prefix length is 1-128"));
            }
            (field.trim(), Some(prefix))
        }
        None => (text.trim(), None),
    };
    match field {
        "src" => Ok(LimitKey::Src { prefix }),
        "dst" => Ok(LimitKey::Dst { prefix }),
        _ => Err(bad()),
    }
}

impl RateLimit {
    /// The burst when none is written: one period's worth (at least one packet or byte).
    pub fn default_burst(amount: u64, unit: RateUnit) -> u64 {
        match unit {
            RateUnit::Bits => (amount / 8).max(1),
            _ => amount,
        }
    }

    /// The kernel's form (epoch 0: the daemon gives it one), or why the numbers are out of
    /// the arithmetic's range.
    pub fn kernel(&self) -> Result<kernel::Limit, String> {
        // A packet or byte costs `cost` tokens; `amount` of them (bits: an eighth of a byte
        // each) come per period, so the bucket gains `amount` tokens per nanosecond.
        let per_unit = match self.unit {
            RateUnit::Bits => 8,
            _ => 1,
        };
        let cost = SECOND_NS * self.period_s * per_unit;
        let refill = self.amount;
        let capacity = self.burst.checked_mul(cost).filter(|c| *c <= u64::MAX / 4);
        let (Some(capacity), true) = (capacity, refill <= u64::MAX / 4) else {
            return Err(format!(
                "the limit {self} is beyond what the dataplane counts: lower the burst or the rate"
            ));
        };
        let (per, prefix) = match self.key {
            LimitKey::Rule => (per::RULE, 0),
            LimitKey::Src { prefix } => (per::SRC, prefix.unwrap_or(128)),
            LimitKey::Dst { prefix } => (per::DST, prefix.unwrap_or(128)),
        };
        Ok(kernel::Limit {
            refill,
            cost,
            capacity,
            full_after_ns: capacity.div_ceil(refill),
            epoch: 0,
            per,
            prefix,
            unit: match self.unit {
                RateUnit::Packets => unit::PACKETS,
                _ => unit::BYTES,
            },
            coarse: u8::from(capacity / kernel::COARSE_TICKS_NS >= refill),
            _pad: [0; 2],
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let period = match self.period_s {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        let (amount, unit) = match self.unit {
            RateUnit::Packets => (self.amount, ""),
            RateUnit::Bytes => (self.amount, "bytes"),
            RateUnit::Bits => (self.amount, "bit"),
        };
        write!(f, "over {amount}{unit}/{period}, burst {}", self.burst)?;
        if self.unit != RateUnit::Packets {
            f.write_str(" bytes")?;
        }
        match self.key {
            LimitKey::Rule => Ok(()),
            LimitKey::Src { prefix: None } => f.write_str(", per src"),
            LimitKey::Dst { prefix: None } => f.write_str(", per dst"),
            LimitKey::Src { prefix: Some(p) } => write!(f, ", per src/{p}"),
            LimitKey::Dst { prefix: Some(p) } => write!(f, ", per dst/{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_packets_bytes_and_bits_per_period() {
        assert_eq!(rate("10/s"), Ok((10, RateUnit::Packets, 1)));
        assert_eq!(rate("50000/second"), Ok((50_000, RateUnit::Packets, 1)));
        assert_eq!(rate("30/min"), Ok((30, RateUnit::Packets, 60)));
        assert_eq!(rate("100 / h"), Ok((100, RateUnit::Packets, 3_600)));
        assert_eq!(rate("2mbit/s"), Ok((2_000_000, RateUnit::Bits, 1)));
        assert_eq!(rate("64kbytes/s"), Ok((65_536, RateUnit::Bytes, 1)));
        for bad in ["10", "10/d", "/s", "ten/s", "10furlongs/s", "-1/s", "1.5/s"] {
            assert!(rate(bad).unwrap_err().contains("is not a rate"), "{bad}");
        }
        assert_eq!(rate("0/s").unwrap_err(), "`0/s`: a rate must be above zero");
        assert!(
            rate("99999999999999gbit/s")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn bursts_and_keys() {
        assert_eq!(burst("20", RateUnit::Packets), Ok(20));
        assert_eq!(burst("64kbytes", RateUnit::Bits), Ok(65_536));
        assert_eq!(burst("1500", RateUnit::Bytes), Ok(1_500));
        assert!(
            burst("64kbytes", RateUnit::Packets)
                .unwrap_err()
                .contains("number of packets")
        );
        assert!(
            burst("0", RateUnit::Packets)
                .unwrap_err()
                .contains("above zero")
        );
        assert_eq!(key("src"), Ok(LimitKey::Src { prefix: None }));
        assert_eq!(key("dst/64"), Ok(LimitKey::Dst { prefix: Some(64) }));
        assert_eq!(
            key("src/0").unwrap_err(),
            "`src/0`: a prefix length is 1-128"
        );
        assert!(key("sport").unwrap_err().contains("is not a limit key"));
        assert!(key("src/x").unwrap_err().contains("is not a limit key"));
    }

    #[test]
    fn the_kernel_form_refills_the_rate_and_holds_the_burst() {
        let limit = RateLimit {
            amount: 10,
            unit: RateUnit::Packets,
            period_s: 1,
            burst: 20,
            key: LimitKey::Src { prefix: Some(24) },
        };
        let k = limit.kernel().unwrap();
        assert_eq!(
            (k.refill, k.cost, k.capacity),
            (10, SECOND_NS, 20 * SECOND_NS)
        );
        assert_eq!(k.full_after_ns, 2 * SECOND_NS);
        assert_eq!((k.per, k.prefix, k.unit), (per::SRC, 24, unit::PACKETS));
        // A burst of two seconds' worth may count coarse time; one of a millisecond's may not.
        assert_eq!(k.coarse, 1);
        let tight = RateLimit {
            amount: 100_000,
            burst: 100,
            ..limit
        };
        assert_eq!(tight.kernel().unwrap().coarse, 0);
        // 2 Mbit/s is 250,000 bytes per second: a byte costs 8 bit-tokens.
        let bits = RateLimit {
            amount: 2_000_000,
            unit: RateUnit::Bits,
            period_s: 1,
            burst: 250_000,
            key: LimitKey::Rule,
        };
        let k = bits.kernel().unwrap();
        assert_eq!(
            (k.refill, k.cost, k.unit),
            (2_000_000, 8 * SECOND_NS, unit::BYTES)
        );
        let mut bucket = kernel::LimitBucket::default();
        let t = 1_000 * SECOND_NS;
        assert!(!bucket.over(&k, t, 250_000));
        assert!(bucket.over(&k, t, 1));
        // A second later 250,000 bytes again.
        assert!(!bucket.over(&k, t + SECOND_NS, 250_000));
        let huge = RateLimit {
            burst: u64::MAX / 2,
            ..bits
        };
        assert!(
            huge.kernel()
                .unwrap_err()
                .contains("beyond what the dataplane counts")
        );
    }
}
