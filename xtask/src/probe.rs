//! `cargo xtask probe`: checks, without any of our built objects, that the kernel has what the
//! tests need: BTF, BPF_PROG_TEST_RUN for XDP, and native (driver mode) XDP on veth.
//!
//! It loads a two-instruction XDP program (`r0 = XDP_PASS; exit`) with raw bpf(2) calls, runs
//! it once on a zeroed frame, and attaches it with a BPF link to a veth inside a throwaway
//! network namespace.

use std::{
    fs::File,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::{self, Command},
    thread,
};

use anyhow::{Context, Result, bail};

use crate::{output, require_root, run_quiet};

/// Check the kernel: BTF, BPF_PROG_TEST_RUN for XDP, native XDP on veth.
///
/// Uses a two-instruction program of its own, so nothing needs to be built. Needs root.
#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub fn run(self) -> Result<()> {
        require_root("probe needs root: it loads and attaches an XDP program")?;
        check()
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_PASS: u32 = 2;

/// `r0 = 2 (XDP_PASS); exit`, as little-endian instruction words.
const PROGRAM: [u64; 2] = [
    u64::from_le_bytes([0xb7, 0x00, 0, 0, 2, 0, 0, 0]),
    u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
];

// The leading fields of the kernel's `union bpf_attr` for each command, in its order; the rest
// of the 128 bytes must be zero, which the padding provides.

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    _pad: [u8; 128 - 48],
}

#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    _pad: [u8; 128 - 40],
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _pad: [u8; 128 - 16],
}

const _: () = assert!(size_of::<ProgLoadAttr>() == 128);
const _: () = assert!(size_of::<TestRunAttr>() == 128);
const _: () = assert!(size_of::<LinkCreateAttr>() == 128);

/// Runs every kernel check and prints one line naming them; fails naming the first one missing.
pub fn check() -> Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("kernel: no BTF (/sys/kernel/btf/vmlinux is missing); aya needs a kernel with BTF");
    }
    let prog = load_xdp_pass().context("kernel: cannot load an XDP program")?;
    test_run(&prog).context("kernel: BPF_PROG_TEST_RUN for XDP is not available")?;
    native_xdp_on_veth(&prog).context("kernel: native XDP on veth is not available")?;
    println!("kernel: BTF ok, BPF_PROG_TEST_RUN for XDP ok, native XDP on veth ok");
    Ok(())
}

/// bpf(2) with `attr`; a non-negative result is returned, -1 becomes the errno.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, 128-byte #[repr(C)] bpf_attr layout for `cmd`, and every
    // pointer stored in it points at memory that outlives this call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned_fd(fd: libc::c_long) -> Result<OwnedFd> {
    let fd = i32::try_from(fd).context("bpf(2) returned an out-of-range fd")?;
    // SAFETY: bpf(2) just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn load_xdp_pass() -> Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        _pad: [0; 80],
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => owned_fd(fd),
        Err(err) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let verifier = String::from_utf8_lossy(&log[..end]);
            bail!("BPF_PROG_LOAD: {err}; verifier log: {}", verifier.trim())
        }
    }
}

fn test_run(prog: &OwnedFd) -> Result<()> {
    // A minimal Ethernet frame: zero addresses, EtherType IPv4, zero payload.
    let mut frame = [0u8; 60];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut out = [0u8; 256];
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog),
        retval: 0,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        duration: 0,
        _pad: [0; 88],
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    if attr.retval != XDP_PASS {
        bail!(
            "BPF_PROG_TEST_RUN returned {} where the program returns XDP_PASS ({XDP_PASS})",
            attr.retval
        );
    }
    Ok(())
}

fn fd_u32(fd: &OwnedFd) -> u32 {
    // Open fds are never negative.
    fd.as_raw_fd() as u32
}

/// Deletes the namespace when dropped, so that a failed check leaves nothing behind.
struct Netns(String);

impl Netns {
    fn add(name: String) -> Result<Self> {
        // Left over from a probe that was killed (same pid, reused): start clean.
        if Path::new("/run/netns").join(&name).exists() {
            output(Command::new("ip").args(["netns", "del", &name]))?;
        }
        run_quiet(Command::new("ip").args(["netns", "add", &name]))?;
        Ok(Self(name))
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        run_quiet(Command::new("ip").args(["-n", &self.0]).args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = Command::new("ip").args(["netns", "del", &self.0]).status();
        if !deleted.is_ok_and(|status| status.success()) {
            eprintln!("warning: could not delete network namespace {}", self.0);
        }
    }
}

fn native_xdp_on_veth(prog: &OwnedFd) -> Result<()> {
    let netns = Netns::add(format!("smf-probe-{}", process::id()))?;
    netns.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"])?;
    netns.ip(&["link", "set", "p0", "up"])?;
    netns.ip(&["link", "set", "p1", "up"])?;

    // setns() moves only the calling thread, so a short-lived thread does the attach and the
    // rest of xtask stays in our own namespace.
    let path = Path::new("/run/netns").join(&netns.0);
    let prog_fd = fd_u32(prog);
    thread::scope(|scope| {
        scope
            .spawn(|| attach_in_netns(&path, prog_fd))
            .join()
            .map_err(|_| anyhow::anyhow!("the attach thread panicked"))?
    })
}

fn attach_in_netns(netns: &Path, prog_fd: u32) -> Result<()> {
    let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    // SAFETY: a valid namespace fd; this thread is ours and ends right after.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).context("setns into the probe namespace");
    }
    // SAFETY: a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c"p0".as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error()).context("if_nametoindex(p0)");
    }
    let mut attr = LinkCreateAttr {
        prog_fd,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
        _pad: [0; 112],
    };
    // Closing the link (dropping the fd) detaches the program.
    let link = bpf(BPF_LINK_CREATE, &mut attr).context("BPF_LINK_CREATE (XDP, driver mode)")?;
    drop(owned_fd(link)?);
    Ok(())
}
