//! What the kernel accepts as an interface name, checked wherever an operator writes one (the
//! rule file's interfaces, the daemon's `interfaces:`).

/// Bytes of an interface name (`IFNAMSIZ` less the terminating NUL).
pub const MAX_NAME_BYTES: usize = 15;

/// Why `name` cannot be an interface name, or `None` when it can.
pub fn name_problem(name: &str) -> Option<String> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(|c| c.is_whitespace() || c.is_control());
    bad.then(|| {
        format!(
            "`{}` is not a valid interface name (1-{MAX_NAME_BYTES} bytes, no '/', ':', spaces \
             or control characters)",
            name.escape_debug()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each row: a name and whether the kernel would take it.
    #[test]
    fn names_the_kernel_takes() {
        let cases = [
            ("lan0", true),
            ("a", true),
            ("vlan.10", true),
            ("abcdefghijklmno", true),
            ("abcdefghijklmnop", false),
            ("éééééééé", false), // 16 bytes in 8 characters
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a:b", false),
            ("a b", false),
            ("lan\0", false),
            ("\0", false),
            ("lan\u{1b}[0m", false),
            ("lan\u{7f}", false),
            ("lan\u{85}", false),
        ];
        for (name, ok) in cases {
            assert_eq!(name_problem(name).is_none(), ok, "{name:?}");
        }
        assert!(name_problem("a\0").unwrap().contains("`a\\0`"));
    }
}
