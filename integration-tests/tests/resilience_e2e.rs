//! The management plane (metrics, the control socket, signals) keeps answering whatever one
//! client or one file does, end to end with the real daemon: idle connections by the
//! thousand under a 1,024 file descriptor limit, huge unterminated control requests, a log
//! reader that goes away, a rules path that is a FIFO; and the CLI into a closed pipe or a
//! full disk.

use std::{
    io::Write,
    net::TcpStream,
    os::unix::{net::UnixStream, process::ExitStatusExt},
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use testbed::{NetNs, Process, Signal};

use crate::{
    common::{self, CONFIG, DISCARD_RULES, metrics_address, text},
    smf_firewall,
};

/// `smf-firewall ARGS --config CONFIG` in the adapter's namespace, killed after 20 s (a
/// daemon that stopped answering must fail the test, not hang it).
fn cli(adapter: &NetNs, args: &[&str], config: &Path) -> Output {
    adapter
        .command("timeout")
        .arg("20")
        .arg(smf_firewall())
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap()
}

/// `smf-firewall status` succeeds, and how long it took.
fn status(adapter: &NetNs, config: &Path) -> Duration {
    let started = Instant::now();
    let out = cli(adapter, &["status"], config);
    assert!(out.status.success(), "status: {out:?}");
    started.elapsed()
}

/// A scrape succeeds, and how long it took.
fn scrape(adapter: &NetNs) -> Duration {
    let started = Instant::now();
    let scraped = testbed::scrape(adapter, metrics_address());
    assert!(scraped.is_ok(), "scrape: {scraped:?}");
    started.elapsed()
}

/// A line of /proc/PID/status, in kB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Waits up to `limit` for the process to exit; whether it did.
fn exits_within(process: &mut Process, limit: Duration) -> bool {
    testbed::eventually(limit, || process.exited().unwrap())
}

/// This test process may open `n` files (it holds the idle connections).
fn allow_open_files(n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct it is given; root may raise its own limit.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn idle_connections_and_huge_control_requests_leave_metrics_and_status_answering() {
    let Some(site) = common::site("resilience_e2e::idle_connections") else {
        return;
    };
    let (dir, config) = common::files(CONFIG, DISCARD_RULES);
    // As under systemd without LimitNOFILE: 1,024 descriptors.
    let mut daemon = site
        .adapter
        .start_until(
            "prlimit",
            &[
                "--nofile=1024",
                "--",
                smf_firewall(),
                "run",
                "--config",
                config.to_str().unwrap(),
            ],
            || testbed::scrape(&site.adapter, metrics_address()).is_ok(),
        )
        .unwrap();
    let pid = daemon.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
        "{limits}"
    );

    // 1,100 idle TCP connections to /metrics, held open.
    allow_open_files(8192);
    let address = metrics_address();
    let idle: Vec<TcpStream> = site
        .adapter
        .run(move || {
            (0..1100)
                .filter_map(|_| {
                    TcpStream::connect_timeout(&address, Duration::from_millis(300)).ok()
                })
                .collect()
        })
        .unwrap();
    assert!(idle.len() > 1024, "only {} connected", idle.len());
    // The connections beyond the cap are closed at once, the idle ones within the
    // header-read timeout (10 s): scrapes answer again by then.
    assert!(
        testbed::eventually(Duration::from_secs(20), || {
            testbed::scrape(&site.adapter, address).is_ok()
        }),
        "scrapes keep failing"
    );
    status(&site.adapter, &config);
    assert!(!daemon.exited().unwrap(), "the daemon stopped");
    let fds = open_fds(pid);
    assert!(fds < 600, "the daemon holds {fds} descriptors");

    // 20 clients each sending an unterminated 10 MB line to the control socket.
    let socket = dir.path().join("run/control.sock");
    let before = proc_kib(pid, "VmRSS:");
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let socket = socket.clone();
            thread::spawn(move || {
                let mut stream = UnixStream::connect(&socket).unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let chunk = vec![b'x'; 1 << 20];
                for _ in 0..10 {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
                // Held open, the line never ended.
                stream
            })
        })
        .collect();
    let streams: Vec<UnixStream> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let after = proc_kib(pid, "VmRSS:");
    let peak = proc_kib(pid, "VmHWM:");
    assert!(
        after < before + 50 * 1024 && peak < before + 100 * 1024,
        "resident memory went from {before} kB to {after} kB (peak {peak} kB)"
    );
    status(&site.adapter, &config);
    scrape(&site.adapter);
    drop((idle, streams));

    daemon.signal(Signal::SIGTERM).unwrap();
    assert!(exits_within(&mut daemon, Duration::from_secs(10)));
    let out = daemon.wait().unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_lost_log_reader_does_not_stop_the_daemon() {
    let Some(site) = common::site("resilience_e2e::lost_log_reader") else {
        return;
    };
    let (_dir, config) = common::files(CONFIG, DISCARD_RULES);
    let mut child = site
        .adapter
        .command(smf_firewall())
        .args(["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = child.stderr.take().unwrap();
    let mut daemon = Process::from(child);
    assert!(
        testbed::eventually(testbed::READY_LIMIT, || {
            testbed::scrape(&site.adapter, metrics_address()).is_ok()
        }),
        "the daemon did not start"
    );
    // journald restarted, a `tee` killed: the read end of the log pipe is gone.
    drop(log);
    // A reload logs several lines, each a write into the broken pipe.
    for _ in 0..3 {
        let out = cli(&site.adapter, &["reload"], &config);
        assert!(out.status.success(), "reload: {out:?}");
    }
    status(&site.adapter, &config);
    scrape(&site.adapter);
    assert!(!daemon.exited().unwrap(), "the daemon stopped");
    daemon.signal(Signal::SIGTERM).unwrap();
    assert!(exits_within(&mut daemon, Duration::from_secs(10)));
    let out = daemon.wait().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !site.adapter.has_xdp("lan0").unwrap(),
        "detached on SIGTERM"
    );
}

#[test]
fn check_into_a_closed_pipe_or_a_full_disk_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, DISCARD_RULES).unwrap();
    let check = || {
        let mut command = Command::new(smf_firewall());
        command.arg("check").arg(&rules).stderr(Stdio::piped());
        command
    };

    // `smf-firewall check FILE | head -0`: the reader is gone before the first write.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = check().stdout(writer).output().unwrap();
    assert!(
        out.status.signal() == Some(libc::SIGPIPE) || out.status.code() == Some(141),
        "{out:?}"
    );
    assert!(!text(&out.stderr).contains("panicked"), "{out:?}");

    // `smf-firewall check FILE > /dev/full`: one line of error, exit 1.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = check().stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot write the output: No space left on device"),
        "{stderr}"
    );

    // Every other command's output likewise (`explain` prints with `println!`).
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(smf_firewall())
        .arg("explain")
        .arg(&rules)
        .args([
            "--interface",
            "lan0",
            "--packet",
            "udp 198.18.1.2:40000 -> 198.19.1.2:9",
        ])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot write the output: No space left on device"),
        "{stderr}"
    );
}

#[test]
fn a_rules_path_that_is_a_fifo_fails_the_reload_at_once_and_nothing_stops_answering() {
    let Some(site) = common::site("resilience_e2e::fifo") else {
        return;
    };
    let (dir, config) = common::files(CONFIG, DISCARD_RULES);
    let mut daemon = common::start(&site.adapter, &config);
    assert_eq!(site.udp_through(9, 3).unwrap(), 0);

    // The rules path becomes a FIFO that no one ever writes to.
    let rules = dir.path().join("rules.yaml");
    std::fs::remove_file(&rules).unwrap();
    let made = Command::new("mkfifo").arg(&rules).status().unwrap();
    assert!(made.success());

    let started = Instant::now();
    let out = cli(&site.adapter, &["reload"], &config);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("not a regular file but a FIFO"),
        "{}",
        text(&out.stderr)
    );
    assert!(took < Duration::from_secs(3), "the reload took {took:?}");

    daemon.signal(Signal::SIGHUP).unwrap();
    thread::sleep(Duration::from_millis(200));
    let took = status(&site.adapter, &config);
    assert!(took < Duration::from_secs(1), "status took {took:?}");
    let took = scrape(&site.adapter);
    assert!(took < Duration::from_secs(1), "a scrape took {took:?}");
    let out = cli(&site.adapter, &["status", "--json"], &config);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["last_reload"]["trigger"], "SIGHUP", "{status}");
    assert_eq!(status["last_reload"]["result"], "error", "{status}");
    assert_eq!(status["reloads"]["error"], 2, "{status}");

    // The old rules stay enforced.
    assert_eq!(site.udp_through(9, 3).unwrap(), 0);
    assert_eq!(site.udp_through(10, 3).unwrap(), 3);

    let started = Instant::now();
    daemon.signal(Signal::SIGTERM).unwrap();
    assert!(
        exits_within(&mut daemon, Duration::from_secs(5)),
        "SIGTERM took more than 5 s"
    );
    let out = daemon.wait().unwrap();
    assert!(out.status.success(), "{out:?}");
    eprintln!("stopped in {:?}", started.elapsed());
}
