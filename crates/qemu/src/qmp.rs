//! Async QMP client: capabilities negotiation, commands matched to answers
//! by id, events broadcast to whoever listens.

use crate::QemuError;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};

#[derive(Debug, Clone)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, QemuError>>>>>;

pub struct Qmp {
    path: PathBuf,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    events: broadcast::Sender<QmpEvent>,
    next_id: AtomicU64,
}

impl Qmp {
    /// Connects, retrying until the socket answers or `timeout` passes, then
    /// negotiates capabilities.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QemuError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(_) => {
                    return Err(QemuError::QmpTimeout {
                        path: path.to_path_buf(),
                        secs: timeout.as_secs(),
                    })
                }
            }
        };
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let io = |e| QemuError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let greeting = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .map_err(|_| QemuError::QmpTimeout {
                path: path.to_path_buf(),
                secs: timeout.as_secs(),
            })?
            .map_err(io)?
            .ok_or(QemuError::Disconnected)?;
        let g: Value = serde_json::from_str(&greeting)
            .map_err(|e| QemuError::Protocol(format!("bad greeting: {e}")))?;
        if g.get("QMP").is_none() {
            return Err(QemuError::Protocol(format!(
                "unexpected greeting {greeting}"
            )));
        }
        let (events, _) = broadcast::channel(256);
        let pending: Pending = Arc::default();
        tokio::spawn(read_loop(lines, pending.clone(), events.clone()));
        let qmp = Qmp {
            path: path.to_path_buf(),
            writer: tokio::sync::Mutex::new(write),
            pending,
            events,
            next_id: AtomicU64::new(1),
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    pub async fn execute(&self, cmd: &str, args: Option<Value>) -> Result<Value, QemuError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"execute": cmd, "id": id});
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        let mut line = msg.to_string();
        line.push('\n');
        {
            let mut w = self.writer.lock().await;
            if let Err(e) = w.write_all(line.as_bytes()).await {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                return Err(QemuError::Io {
                    path: self.path.clone(),
                    source: e,
                });
            }
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(QemuError::Command { class, desc, .. })) => Err(QemuError::Command {
                cmd: cmd.to_string(),
                class,
                desc,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(QemuError::Disconnected),
        }
    }

    /// `query-status` → e.g. "running", "paused", "inmigrate", "postmigrate".
    pub async fn run_state(&self) -> Result<String, QemuError> {
        let v = self.execute("query-status", None).await?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }
}

async fn read_loop(
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    pending: Pending,
    events: broadcast::Sender<QmpEvent>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!(line, "unparsable QMP line");
            continue;
        };
        if let Some(name) = v.get("event").and_then(Value::as_str) {
            let _ = events.send(QmpEvent {
                name: name.to_string(),
                data: v.get("data").cloned().unwrap_or(Value::Null),
            });
            continue;
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            continue;
        };
        let Some(tx) = pending.lock().ok().and_then(|mut p| p.remove(&id)) else {
            continue;
        };
        let result = if let Some(r) = v.get("return") {
            Ok(r.clone())
        } else {
            let e = &v["error"];
            Err(QemuError::Command {
                cmd: String::new(),
                class: e["class"].as_str().unwrap_or("?").to_string(),
                desc: e["desc"].as_str().unwrap_or("?").to_string(),
            })
        };
        let _ = tx.send(result);
    }
    // Connection gone: every waiter learns it at once (senders dropped).
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}
