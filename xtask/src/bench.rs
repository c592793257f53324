//! `cargo xtask bench`: the benchmarks in `benches/`, one table per part.

use anyhow::Result;

use crate::{cargo, run, setup, workspace_root};

/// Time the XDP program and its peers, in one run, and print one table per part (docs/dataplane.md
/// "Speed" says how to read them), then issues 16's and 17's targets computed from that run.
/// Needs root.
///
/// Parts: `rules` (BPF_PROG_TEST_RUN of 1, 1k, 10k and 100k generated rules, the probe rule
/// first, last, or no match), `peers` (xdp-filter and ours with the same content: 1,000 hosts
/// each its own rule, or one rule over a set of them, plus a UDP port rule; verifier counts),
/// `tracking` (the flow table's cost without a `state: true` rule, an untracked packet with
/// one, the established flow, opening a flow, the table's memory), `limits` (a packet through
/// a `per: src` limit rule under and over its limit, the same rule without `limit`, and the
/// floor of one 24-byte LRU lookup: issue 16's target), `floors` (each building
/// block alone as a tiny program: XDP_DROP, a parse, a 16-byte flow lookup, a hash set),
/// `live` (frames pushed with XDP live frames through veth into a trivial XDP_DROP,
/// xdp-filter, smf-firewall and nftables netdev ingress, interleaved, medians;
/// SMF_BENCH_LIVE_SECS, default 10, SMF_BENCH_LIVE_RUNS, default 3, SMF_BENCH_CPU),
/// `breakdown` (perf samples of the main cases, per symbol, and inside the JIT-ed program per
/// source file and map lookup; SMF_BENCH_PERF_SECS, default 5),
/// `control` (compile and swap 10k and 100k rules, the daemon's RSS with 100k), `pipeline`
/// (criterion benches of parse + validate and the reference classifier). Writes
/// target/bench/{dataplane,conntrack,live,breakdown,control,targets,rules}.json.
/// SMF_BENCH_REPEAT (default 10,000,000) and SMF_BENCH_MAX_RULES shorten a run.
#[derive(clap::Args)]
pub struct Args {
    /// Run only these parts (comma-separated or repeated); the default runs them all.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Rules,
    Peers,
    Tracking,
    Limits,
    Floors,
    Live,
    Breakdown,
    Control,
    Pipeline,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Rules => "rules",
            Part::Peers => "peers",
            Part::Tracking => "tracking",
            Part::Limits => "limits",
            Part::Floors => "floors",
            Part::Live => "live",
            Part::Breakdown => "breakdown",
            Part::Control => "control",
            Part::Pipeline => "pipeline",
        }
    }
}

impl Args {
    pub fn run(self) -> Result<()> {
        setup::ensure()?;
        let wants = |part: Part| self.only.is_empty() || self.only.contains(&part);
        let kernel: Vec<&str> = self
            .only
            .iter()
            .filter(|p| **p != Part::Pipeline)
            .map(|p| p.name())
            .collect();
        if self.only.is_empty() || !kernel.is_empty() {
            let mut bench = cargo();
            bench
                .args(["bench", "-p", "firewall-benches", "--features", "kernel"])
                .args(["--bench", "dataplane"]);
            if wants(Part::Control) {
                // The daemon whose memory the control part measures.
                run(cargo().args(["build", "--release", "-p", "firewall-user"]))?;
                bench.env(
                    "SMF_FIREWALL_BIN",
                    workspace_root().join("target/release/smf-firewall"),
                );
            }
            if !kernel.is_empty() {
                bench.args(["--", "--only", &kernel.join(",")]);
            }
            run(&mut bench)?;
        }
        if wants(Part::Pipeline) {
            run(cargo().args(["bench", "-p", "firewall-benches", "--bench", "rules"]))?;
        }
        Ok(())
    }
}
