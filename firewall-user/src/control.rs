//! The daemon's control socket (`runtime_dir/control.sock`, root only): one JSON request per
//! connection, one JSON answer ([`protocol`]); a trace request is answered with a line per
//! traced packet for as long as the connection stays open (`crate::trace`). `smf-firewall
//! reload`, `status` and `trace` are its clients.

pub mod protocol;

use std::{
    fs, io,
    io::{BufRead, BufReader, Write},
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize as _;
use std::sync::Arc;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tracing::warn;

pub use protocol::{Answer, Request};

use crate::trace::Tracer;

/// A request and where its answer goes.
pub type Call = (Request, oneshot::Sender<Answer>);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create the control socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error(
        "cannot reach the daemon at {}: {source} (is `smf-firewall run` running with this config?)",
        path.display()
    )]
    Connect { path: PathBuf, source: io::Error },
    #[error("the daemon at {} did not answer: {source}", path.display())]
    Exchange { path: PathBuf, source: io::Error },
    #[error("the daemon at {} answered something that is not JSON: {source}", path.display())]
    Answer {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the daemon at {} answered something this smf-firewall does not understand: {source}", path.display())]
    Unknown {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The socket, bound: only root (the owner) may connect.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    pub fn bind(path: &Path) -> Result<Server, ControlError> {
        let bind_error = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(bind_error)?;
        }
        // A socket left by a daemon that was killed; a live one would have answered.
        if path.exists() && UnixStream::connect(path).is_err() {
            fs::remove_file(path).map_err(bind_error)?;
        }
        let listener = UnixListener::bind(path).map_err(bind_error)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Accepts connections forever, handing each request to `calls`, a trace to `tracer` (none:
    /// traces are refused). An accept() error (out of file descriptors, a connection aborted)
    /// is logged and retried after [`ACCEPT_BACKOFF`]: it never stops the daemon.
    pub async fn serve(
        &self,
        calls: mpsc::Sender<Call>,
        tracer: Option<Arc<Tracer>>,
    ) -> io::Result<()> {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "cannot accept a control connection; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let (calls, tracer) = (calls.clone(), tracer.clone());
            tokio::spawn(async move {
                if let Err(error) = answer(stream, calls, tracer.as_deref()).await {
                    warn!(%error, "control connection failed");
                }
            });
        }
    }
}

/// The longest request line the daemon reads; a longer one is answered with an error.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How long a client may take to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after an accept() error before the next accept().
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

async fn answer(
    stream: tokio::net::UnixStream,
    calls: mpsc::Sender<Call>,
    tracer: Option<&Tracer>,
) -> io::Result<()> {
    let (mut read, mut write) = stream.into_split();
    let answer = match (read_request(&mut read).await, tracer) {
        (Ok(Request::Trace(request)), Some(tracer)) => {
            return tracer.serve(request, read, write).await;
        }
        (Ok(Request::Trace(_)), None) => failure("this daemon cannot trace".into()),
        (Ok(request), _) => {
            let (tx, rx) = oneshot::channel();
            calls
                .send((request, tx))
                .await
                .map_err(|_| io::Error::other("the daemon is stopping"))?;
            rx.await
                .map_err(|_| io::Error::other("the daemon is stopping"))?
        }
        (Err(message), _) => failure(message),
    };
    let mut text = serde_json::to_vec(&answer)?;
    text.push(b'\n');
    write.write_all(&text).await?;
    write.shutdown().await
}

/// One request line: at most [`MAX_REQUEST_BYTES`], within [`READ_TIMEOUT`]; else what was
/// wrong, for the answer.
async fn read_request(read: impl tokio::io::AsyncRead + Unpin) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut limited = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES));
    match tokio::time::timeout(READ_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
        Err(_) => return Err(format!("no request within {} s", READ_TIMEOUT.as_secs())),
        Ok(Err(error)) => return Err(format!("cannot read the request: {error}")),
        Ok(Ok(_)) => {}
    }
    if !line.ends_with(b"\n") && line.len() as u64 >= MAX_REQUEST_BYTES {
        return Err(format!(
            "the request is longer than {MAX_REQUEST_BYTES} bytes"
        ));
    }
    serde_json::from_slice::<Request>(&line).map_err(|error| format!("not a request: {error}"))
}

/// `{"error":message,"ok":false}`.
pub fn failure(message: String) -> Answer {
    Answer::Failed(protocol::Failure::new(message))
}

/// A daemon's answer as it came: `--json` prints it as it is (so it shows what the daemon
/// sent, even fields this version does not know); [`Reply::answer`] reads it.
#[derive(Debug, Clone)]
pub struct Reply {
    json: serde_json::Value,
    path: PathBuf,
}

impl Reply {
    pub fn answer(&self) -> Result<Answer, ControlError> {
        Answer::deserialize(&self.json).map_err(|source| ControlError::Unknown {
            path: self.path.clone(),
            source,
        })
    }
}

/// The answer's JSON on one line.
impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.json.fmt(f)
    }
}

/// Sends one request to the daemon listening on `path` and returns its answer.
pub fn call(path: &Path, request: Request, timeout: Duration) -> Result<Reply, ControlError> {
    let connect = |source| ControlError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let exchange = |source| ControlError::Exchange {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(connect)?;
    stream.set_read_timeout(Some(timeout)).map_err(exchange)?;
    let mut text = serde_json::to_vec(&request).map_err(|e| exchange(e.into()))?;
    text.push(b'\n');
    stream.write_all(&text).map_err(exchange)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(exchange)?;
    let json = serde_json::from_str(&line).map_err(|source| ControlError::Answer {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Reply {
        json,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_reaches_the_daemon_and_its_answer_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/control.sock");
        let server = Server::bind(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(async move { server.serve(tx, None).await });
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let _ = reply.send(failure(format!("asked {request:?}")));
            }
        });
        let client = path.clone();
        let reply = tokio::task::spawn_blocking(move || {
            call(&client, Request::Status, Duration::from_secs(5))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(reply.to_string(), r#"{"error":"asked Status","ok":false}"#);
        assert_eq!(reply.answer().unwrap(), failure("asked Status".into()));
    }

    /// A line longer than the limit is refused once the limit is read, not buffered to its end.
    #[tokio::test]
    async fn an_oversized_or_missing_request_is_refused_without_reading_it_all() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            // 10 MB without a newline: the reader stops at the limit, so this blocks and
            // fails once the server side is gone.
            let chunk = vec![b'x'; 1 << 16];
            for _ in 0..160 {
                if client.write_all(&chunk).await.is_err() {
                    return false;
                }
            }
            true
        });
        let refused = read_request(server).await.unwrap_err();
        assert!(refused.contains("longer than 65536 bytes"), "{refused}");
        assert!(!writer.await.unwrap(), "the whole line was read");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_answered_after_the_read_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let refused = read_request(server).await.unwrap_err();
        assert_eq!(refused, "no request within 5 s");
    }

    #[test]
    fn no_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let error = call(&path, Request::Reload, Duration::from_secs(1)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is `smf-firewall run` running with this config?"),
            "{error}"
        );
    }
}
