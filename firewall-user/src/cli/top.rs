//! `smf-firewall top`: the terminal loop around `crate::top`.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    thread,
    time::Duration,
};

use crate::top::{self, Frame, Source};
use anyhow::Context as _;

/// The environment variable that holds the basic-auth password (never on the command line,
/// where other users could read it).
const PASSWORD_ENV: &str = "SMF_FIREWALL_METRICS_PASSWORD";

/// A terminal clears and redraws in place; anything else gets plain frames one after another.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// A live view of the running daemon from its /metrics: packets/s and bits/s per
/// interface and verdict, utilization against the model's capacity, the busiest rules,
/// the licence state. Refreshes every second; --once prints one frame and exits.
#[derive(clap::Args)]
pub struct Args {
    /// The daemon's metrics endpoint.
    #[arg(long, default_value = "http://127.0.0.1:9775/metrics")]
    url: String,
    /// Print one frame (two readings one interval apart) and exit.
    #[arg(long)]
    once: bool,
    /// Time between readings, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// For https: trust this CA certificate (PEM), e.g. the daemon's self-signed one.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// For basic auth: the user name; the password is read from SMF_FIREWALL_METRICS_PASSWORD.
    #[arg(long)]
    user: Option<String>,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        self.show()
            .context("cannot show the daemon's metrics")
            .map(|()| ExitCode::SUCCESS)
    }

    fn show(self) -> anyhow::Result<()> {
        let args = self;
        let credentials = match args.user {
            Some(user) => {
                let password = std::env::var(PASSWORD_ENV).with_context(|| {
                    format!("--user {user} needs the password in {PASSWORD_ENV}")
                })?;
                Some((user, password))
            }
            None => None,
        };
        let source = Source::new(&args.url, args.cacert.as_deref(), credentials)?;
        let tty = std::io::stdout().is_terminal();
        let mut before = source.read()?;
        loop {
            thread::sleep(args.interval);
            let title = format!(
                "smf-firewall top   {}   every {}   {} UTC",
                args.url,
                humantime::format_duration(args.interval),
                chrono::Utc::now().format("%H:%M:%S")
            );
            let text = match source.read() {
                Ok(after) => {
                    let text = top::render(&Frame::between(&before, &after), &title);
                    before = after;
                    text
                }
                // One frame is all there is to show: its failure is the command's.
                Err(error) if args.once => return Err(error.into()),
                // Live, a daemon that restarts comes back: say so and keep trying.
                Err(error) => format!("{title}\n{error}\n"),
            };
            let mut stdout = std::io::stdout().lock();
            if tty {
                write!(stdout, "{CLEAR}")?;
            }
            writeln!(stdout, "{text}")?;
            stdout.flush()?;
            if args.once {
                return Ok(());
            }
        }
    }
}
