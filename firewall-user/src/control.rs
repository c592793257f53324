//! The daemon's control socket (`runtime_dir/control.sock`, root only): one JSON request per
//! connection, one JSON answer. `smf-firewall reload` and `status` are its clients.

use std::{
    fs, io,
    io::{BufRead, BufReader, Write},
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt},
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tracing::warn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Reload,
    Status,
}

/// `{"ok": true, ...}` with the answer's fields, or `{"ok": false, "error": "..."}`.
pub type Answer = serde_json::Value;

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

    /// Accepts connections forever, handing each request to `calls`.
    pub async fn serve(&self, calls: mpsc::Sender<Call>) -> io::Result<()> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            let calls = calls.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, calls).await {
                    warn!(%error, "control connection failed");
                }
            });
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

async fn answer(stream: tokio::net::UnixStream, calls: mpsc::Sender<Call>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(read).read_line(&mut line).await?;
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            calls
                .send((request, tx))
                .await
                .map_err(|_| io::Error::other("the daemon is stopping"))?;
            rx.await
                .map_err(|_| io::Error::other("the daemon is stopping"))?
        }
        Err(error) => failure(format!("not a request: {error}")),
    };
    let mut text = serde_json::to_vec(&answer)?;
    text.push(b'\n');
    write.write_all(&text).await?;
    write.shutdown().await
}

/// `{"ok": false, "error": message}`.
pub fn failure(message: String) -> Answer {
    serde_json::json!({ "ok": false, "error": message })
}

/// Sends one request to the daemon listening on `path` and returns its answer.
pub fn call(path: &Path, request: Request, timeout: Duration) -> Result<Answer, ControlError> {
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
    serde_json::from_str(&line).map_err(|source| ControlError::Answer {
        path: path.to_path_buf(),
        source,
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
        tokio::spawn(async move { server.serve(tx).await });
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let _ = reply.send(serde_json::json!({"ok": true, "echo": request}));
            }
        });
        let client = path.clone();
        let answer = tokio::task::spawn_blocking(move || {
            call(&client, Request::Status, Duration::from_secs(5))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            answer,
            serde_json::json!({"ok": true, "echo": {"command": "status"}})
        );
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
