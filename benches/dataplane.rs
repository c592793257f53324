//! Times the XDP program with BPF_PROG_TEST_RUN next to a trivial `XDP_PASS` program from the
//! same build, in one run, and reports ratios. Never a pass/fail test. Needs root.
//!
//! Without a context the kernel runs the program as if the frame arrived on loopback
//! (ifindex 1), so the rules are installed there.

use std::path::Path;

use aya::{Ebpf, programs::Xdp};
use firewall_benches::{Row, ns_per_packet, print_table, udp_frame, write_json};
use firewall_user::{
    loader::{Capacity, Dataplane, XDP_PASS_OBJECT},
    rules::{
        RuleSet,
        compile::{self, RuleCounters},
    },
};

const LOOPBACK: u32 = 1;
const SRC: [u8; 4] = [198, 18, 0, 2];
const DST: [u8; 4] = [198, 19, 0, 1];
/// The port of the benchmark frame.
const PORT: u16 = 9;

/// Which rule, if any, matches the frame.
#[derive(Clone, Copy)]
enum Case {
    First,
    Last,
    Nothing,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::First => "udp-60B matches first rule",
            Case::Last => "udp-60B matches last rule",
            Case::Nothing => "udp-60B matches no rule",
        }
    }
}

/// `count` UDP port rules on `lo`; the one matching the frame is first, last or absent.
fn rules(count: usize, case: Case) -> String {
    let matching = match case {
        Case::First => Some(0),
        Case::Last => Some(count - 1),
        Case::Nothing => None,
    };
    let mut text = String::from("version: 1\ninterfaces:\n  lo:\n    default: pass\n    rules:\n");
    for i in 0..count {
        let port = if Some(i) == matching {
            PORT
        } else {
            1000 + i as u16
        };
        text.push_str(&format!(
            "      - {{ id: r{i}, action: drop, protocol: udp, dst: 198.19.0.0/16, dst_port: {port} }}\n"
        ));
    }
    text
}

fn firewall_row(count: usize, case: Case, frame: &[u8]) -> Result<(String, usize, f64), String> {
    let set =
        RuleSet::parse(Path::new("bench.yaml"), &rules(count, case)).map_err(|e| e.to_string())?;
    let compiled = compile::ruleset(&set, &[("lo".to_string(), 0)], &mut RuleCounters::default())
        .map_err(|e| e.to_string())?;
    let mut dataplane =
        Dataplane::load(Capacity::for_compiled(&compiled)).map_err(|e| e.to_string())?;
    // Licensed: time the rules' path, not the pass-all one.
    dataplane.set_enforcing(true).map_err(|e| e.to_string())?;
    dataplane.bind(LOOPBACK, 0).map_err(|e| e.to_string())?;
    dataplane.install(&compiled).map_err(|e| e.to_string())?;
    let program = dataplane.program().map_err(|e| e.to_string())?;
    let ns = ns_per_packet(program, frame).map_err(|e| e.to_string())?;
    Ok((case.name().to_string(), count, ns))
}

fn trivial_ns(frame: &[u8]) -> Result<f64, String> {
    let mut ebpf = Ebpf::load(XDP_PASS_OBJECT).map_err(|e| e.to_string())?;
    let program: &mut Xdp = ebpf
        .program_mut("xdp_pass")
        .ok_or("xdp_pass missing")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    program.load().map_err(|e| e.to_string())?;
    ns_per_packet(program, frame).map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    // `cargo bench` passes `--bench`; a `cargo test` of the benches must not run them.
    if !std::env::args().any(|arg| arg == "--bench") {
        return Ok(());
    }
    let frame = udp_frame(SRC, DST, PORT);
    assert_eq!(frame.len(), 60);
    let trivial = trivial_ns(&frame)?;
    let mut rows = vec![Row {
        program: "xdp-pass".into(),
        rules: 0,
        case: "udp-60B".into(),
        ns_per_packet: trivial,
        ratio_to_trivial: 1.0,
    }];
    let layouts = [
        (1, Case::First),
        (64, Case::First),
        (64, Case::Last),
        (64, Case::Nothing),
    ];
    for (count, case) in layouts {
        let (case, rules, ns) = firewall_row(count, case, &frame)?;
        rows.push(Row {
            program: "smf-firewall".into(),
            rules,
            case,
            ns_per_packet: ns,
            ratio_to_trivial: ns / trivial,
        });
    }
    print_table(&rows);
    let path = write_json("dataplane", &rows).map_err(|e| e.to_string())?;
    println!("wrote {}", path.display());
    Ok(())
}
