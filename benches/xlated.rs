//! Reading `bpftool prog dump xlated linum`: which part of the source each of a loaded
//! program's BPF instructions comes from (the benchmarks' breakdown inside the JIT-ed body).

use std::collections::{BTreeMap, btree_map::Entry};

/// From `bpftool prog dump xlated linum` output, the part of the source at the first
/// instruction of each source line: "lookup NAME" for a line whose instructions load map NAME
/// to look it up (an inlined lookup; for a hash map, the kernel's walk is in its own
/// symbols), else the file's name, with the crates inlined into the program named as such.
/// `map_name` names a map by its id.
pub fn parts<E>(
    dump: &str,
    mut map_name: impl FnMut(u32) -> Result<String, E>,
) -> Result<BTreeMap<u32, String>, E> {
    let mut names = BTreeMap::new();
    let mut parts = BTreeMap::new();
    let mut file = String::new();
    let mut open: Option<u32> = None;
    for line in dump.lines() {
        if let Some(source) = line.strip_prefix(';') {
            file = source_part(source);
            open = None;
            continue;
        }
        // "  42: (18) r1 = map[id:8640]"
        let Some((number, code)) = line.trim_start().split_once(": ") else {
            continue;
        };
        let Ok(number) = number.parse::<u32>() else {
            continue;
        };
        let start = *open.get_or_insert(number);
        if let Some(map) = map_id(code) {
            let name = match names.entry(map) {
                Entry::Occupied(name) => name.into_mut(),
                Entry::Vacant(slot) => slot.insert(map_name(map)?),
            };
            parts.insert(start, format!("lookup {name}"));
        } else {
            parts.entry(start).or_insert_with(|| file.clone());
        }
    }
    Ok(parts)
}

/// The part of the source a line annotation names: "; text [file:PATH line_num:N ...]".
fn source_part(annotation: &str) -> String {
    let path = annotation
        .split_once("[file:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    let file = path.rsplit('/').next().unwrap_or(path);
    if path.contains("/firewall-ebpf/") {
        file.to_string()
    } else if path.contains("/firewall-common/") {
        format!("firewall-common {file}")
    } else if path.contains("/aya-ebpf") {
        "aya-ebpf (inlined)".to_string()
    } else if path.contains("library/core") || path.contains("/rustc/") {
        "core (inlined)".to_string()
    } else {
        format!("other {file}")
    }
}

/// The map an instruction loads to look it up: "r1 = map[id:8640]"; not a direct read of
/// a map's value ("map[id:12][0]+8", a global).
fn map_id(code: &str) -> Option<u32> {
    let (_, rest) = code.split_once("map[id:")?;
    let (id, after) = rest.split_once(']')?;
    if after.starts_with('[') {
        return None;
    }
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
u32 smf_firewall(struct xdp_md * ctx):
; #[xdp] [file:/work/main/firewall-ebpf/src/main.rs line_num:31 line_col:0]
   0: (bf) r7 = r1
; unsafe { (*self.ctx).ingress_ifindex as usize } [file:/root/.cargo/registry/src/x/aya-ebpf-0.2.1/src/programs/xdp.rs line_num:39 line_col:18]
   1: (79) r1 = *(u64 *)(r7 +32)
; fun(map, key) [file:/root/.cargo/registry/src/x/aya-ebpf-0.2.1/src/helpers.rs line_num:10 line_col:5]
   2: (18) r1 = map[id:8629]
   4: (07) r1 += 272
; if !ptr.is_null() { [file:/rustc/abc/library/core/src/ptr/non_null.rs line_num:267 line_col:12]
   5: (15) if r0 == 0x0 goto pc+436
; generation * MAX_SLOTS + slot [file:/work/main/firewall-common/src/lib.rs line_num:702 line_col:5]
   6: (67) r1 <<= 7
   7: (18) r2 = map[id:12][0]+8
";

    fn names(id: u32) -> Result<String, String> {
        match id {
            8629 => Ok("INTERFACES".into()),
            _ => Err(format!("no map {id}")),
        }
    }

    #[test]
    fn each_source_line_is_its_file_or_the_map_it_looks_up() {
        let parts = parts(DUMP, names).unwrap();
        let expected = [
            (0, "main.rs"),
            (1, "aya-ebpf (inlined)"),
            (2, "lookup INTERFACES"),
            (5, "core (inlined)"),
            (6, "firewall-common lib.rs"),
        ];
        assert_eq!(
            parts
                .iter()
                .map(|(&n, p)| (n, p.as_str()))
                .collect::<Vec<_>>(),
            expected
        );
    }

    #[test]
    fn a_map_that_cannot_be_named_is_an_error() {
        let dump = "; x [file:/a/firewall-ebpf/src/main.rs line_num:1 line_col:0]\n   0: (18) r1 = map[id:99]\n";
        assert_eq!(parts(dump, names), Err("no map 99".to_string()));
    }

    #[test]
    fn map_ids_are_read_from_loads_of_a_map_for_a_lookup() {
        assert_eq!(map_id("(18) r1 = map[id:8640]"), Some(8640));
        assert_eq!(map_id("(18) r2 = map[id:12][0]+8"), None);
        assert_eq!(map_id("(85) call bpf_loop#1234"), None);
    }
}
