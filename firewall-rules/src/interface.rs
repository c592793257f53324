//! What the kernel accepts as an interface name, checked wherever an operator writes one (the
//! rule file's interfaces, the daemon's `interfaces:`).

/// Why `name` cannot be an interface name, or `None` when it can.
pub fn name_problem(name: &str) -> Option<String> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(char::is_whitespace);
    bad.then(|| {
        format!("`{name}` is not a valid interface name (1-15 characters, no '/', ':' or spaces)")
    })
}
