//! Inside the JIT-ed body: a profile's samples in the program, by the part of the source they
//! come from. The kernel keeps, for each line-info record of a loaded program, the JIT-ed
//! address where it starts (`jited_line_info`) and the BPF instruction it names (`line_info`);
//! `bpftool prog dump xlated linum` gives each instruction's source file and the maps it
//! loads. A sample's address thus names a record, the record an instruction, the instruction a
//! file or, for the instructions of an inlined map lookup, the map it looks up.

use std::{collections::BTreeMap, mem::size_of, process::Command};

use firewall_benches::xlated;
use firewall_dataplane::object::maps;
use nix::libc;

use crate::kernel::{Result, err};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

// Offsets in the kernel's `struct bpf_prog_info` (include/uapi/linux/bpf.h), stable ABI.
const NR_JITED_KSYMS: usize = 104;
const NR_JITED_FUNC_LENS: usize = 108;
const JITED_KSYMS: usize = 112;
const JITED_FUNC_LENS: usize = 120;
const NR_LINE_INFO: usize = 148;
const LINE_INFO: usize = 152;
const JITED_LINE_INFO: usize = 160;
const NR_JITED_LINE_INFO: usize = 168;
const LINE_INFO_REC_SIZE: usize = 172;
const JITED_LINE_INFO_REC_SIZE: usize = 176;
/// `struct bpf_map_info`'s `name` (16 bytes).
const MAP_NAME: usize = 24;
const INFO_SIZE: usize = 256;

/// Where a loaded program's JIT-ed code lies and which instruction each address runs.
pub struct JitMap {
    /// `(start, end)` of each JIT-ed function (the program and its subprograms).
    functions: Vec<(u64, u64)>,
    /// `(JIT-ed address, BPF instruction)` of each line-info record, sorted by address.
    records: Vec<(u64, u32)>,
    /// Each instruction's part of the source (a file, or the map an inlined lookup reads).
    parts: BTreeMap<u32, String>,
}

impl JitMap {
    /// Reads program `id`'s line info (it must still be loaded) and its xlated dump.
    pub fn read(id: u32) -> Result<JitMap> {
        let fd = Fd::program(id)?;
        let counts = fd.info(&[])?;
        let word = |at: usize| u32::from_ne_bytes(counts[at..at + 4].try_into().unwrap());
        let (n_ksyms, n_lens) = (word(NR_JITED_KSYMS), word(NR_JITED_FUNC_LENS));
        let (n_lines, n_jited) = (word(NR_LINE_INFO), word(NR_JITED_LINE_INFO));
        let (line_size, jited_size) = (word(LINE_INFO_REC_SIZE), word(JITED_LINE_INFO_REC_SIZE));
        if n_lines != n_jited || jited_size as usize != size_of::<u64>() || line_size < 4 {
            return Err(format!("prog {id}: no JIT-ed line info"));
        }
        let mut ksyms = vec![0u64; n_ksyms as usize];
        let mut lens = vec![0u32; n_lens as usize];
        let mut lines = vec![0u8; (n_lines * line_size) as usize];
        let mut jited = vec![0u64; n_jited as usize];
        fd.info(&[
            (NR_JITED_KSYMS, n_ksyms.into()),
            (NR_JITED_FUNC_LENS, n_lens.into()),
            (JITED_KSYMS, ksyms.as_mut_ptr() as u64),
            (JITED_FUNC_LENS, lens.as_mut_ptr() as u64),
            (NR_LINE_INFO, n_lines.into()),
            (LINE_INFO, lines.as_mut_ptr() as u64),
            (JITED_LINE_INFO, jited.as_mut_ptr() as u64),
            (NR_JITED_LINE_INFO, n_jited.into()),
            (LINE_INFO_REC_SIZE, line_size.into()),
            (JITED_LINE_INFO_REC_SIZE, jited_size.into()),
        ])?;
        let functions = ksyms
            .iter()
            .zip(&lens)
            .map(|(&start, &len)| (start, start + u64::from(len)))
            .collect();
        // A record's first field is its instruction (`bpf_line_info.insn_off`).
        let instructions = lines
            .chunks(line_size as usize)
            .map(|r| u32::from_ne_bytes(r[..4].try_into().unwrap()));
        let mut records: Vec<(u64, u32)> = jited.into_iter().zip(instructions).collect();
        records.sort_unstable();
        Ok(JitMap {
            functions,
            parts: xlated::parts(&xlated(id)?, map_name)?,
            records,
        })
    }

    /// The part of the source that the instruction at JIT-ed address `ip` belongs to, or None
    /// outside the program.
    pub fn part(&self, ip: u64) -> Option<&str> {
        if !self
            .functions
            .iter()
            .any(|&(lo, hi)| (lo..hi).contains(&ip))
        {
            return None;
        }
        let at = self.records.partition_point(|&(address, _)| address <= ip);
        let (_, instruction) = self.records.get(at.checked_sub(1)?)?;
        self.parts
            .range(..=instruction)
            .next_back()
            .map(|(_, p)| p.as_str())
    }
}

/// `bpftool prog dump xlated id ID linum`: each instruction with its source line above it.
fn xlated(id: u32) -> Result<String> {
    let out = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &id.to_string(), "linum"])
        .output()
        .map_err(|e| format!("bpftool: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "bpftool prog dump xlated: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Map `id`'s name: the kernel keeps 15 bytes of it, so the program's own map whose name
/// begins with them, else those bytes.
fn map_name(id: u32) -> Result<String> {
    let fd = Fd::map(id)?;
    let info = fd.info(&[])?;
    let name = &info[MAP_NAME..MAP_NAME + 16];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    let kernel = String::from_utf8_lossy(&name[..end]).into_owned();
    Ok(maps::ALL
        .iter()
        .find(|full| full.starts_with(&kernel))
        .map_or(kernel, |full| full.to_string()))
}

/// A file descriptor of a program or map, by id; closed on drop.
struct Fd(i32);

impl Fd {
    fn program(id: u32) -> Result<Fd> {
        Self::by_id(BPF_PROG_GET_FD_BY_ID, id)
    }

    fn map(id: u32) -> Result<Fd> {
        Self::by_id(BPF_MAP_GET_FD_BY_ID, id)
    }

    fn by_id(command: libc::c_long, id: u32) -> Result<Fd> {
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        bpf(command, &mut attr)
            .map(Fd)
            .map_err(|e| format!("bpf get fd by id {id}: {e}"))
    }

    /// BPF_OBJ_GET_INFO_BY_FD, with `fields` (offset, value) set before the call: the counts
    /// and buffers the kernel fills.
    fn info(&self, fields: &[(usize, u64)]) -> Result<[u8; INFO_SIZE]> {
        let mut info = [0u8; INFO_SIZE];
        for &(at, value) in fields {
            // The counts and record sizes are u32 fields, the buffers u64 pointers.
            if at == JITED_KSYMS
                || at == JITED_FUNC_LENS
                || at == LINE_INFO
                || at == JITED_LINE_INFO
            {
                info[at..at + 8].copy_from_slice(&value.to_ne_bytes());
            } else {
                info[at..at + 4].copy_from_slice(&(value as u32).to_ne_bytes());
            }
        }
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&self.0.to_ne_bytes());
        attr[4..8].copy_from_slice(&(INFO_SIZE as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|e| format!("bpf obj get info: {e}"))?;
        Ok(info)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours, opened by `by_id`.
        unsafe { libc::close(self.0) };
    }
}

fn bpf(command: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i32> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` of the command's layout, and the
    // buffers it points at outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fd as i32)
    }
}

/// `perf script -F ip` of `data`: the samples' addresses.
pub fn sample_addresses(data: &std::path::Path) -> Result<Vec<u64>> {
    let out = Command::new("perf")
        .args(["script", "-F", "ip", "-i"])
        .arg(data)
        .output()
        .map_err(err)?;
    if !out.status.success() {
        return Err(format!(
            "perf script: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| u64::from_str_radix(l.trim(), 16).ok())
        .collect())
}
