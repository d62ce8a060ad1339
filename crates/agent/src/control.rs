//! The agent end of a guest's control channel (QEMU serves it on a unix
//! socket; the guest's `duplex guest` answers). Requests are matched to
//! responses by id; events are logged and the latest `ready` kept.

use duplex_core::guest_proto::{decode, encode, Frame, Op, ProtoError, MAX_LINE};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control channel {0} unreachable: {1}")]
    Connect(String, std::io::Error),
    #[error("control channel closed")]
    Closed,
    #[error("guest did not answer `{0}` within {1} ms")]
    Timeout(String, u128),
    #[error("guest refused: {}: {}", .0.code, .0.message)]
    Refused(ProtoError),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, ProtoError>>>>>;

/// Receives the guest's unsolicited events (name, data).
pub type EventSink = Arc<dyn Fn(&str, &Value) + Send + Sync>;

pub struct ControlClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl ControlClient {
    pub async fn connect(
        path: &Path,
        vm: &str,
        sink: EventSink,
    ) -> Result<ControlClient, ControlError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| ControlError::Connect(path.display().to_string(), e))?;
        let (r, w) = stream.into_split();
        let pending: Pending = Arc::default();
        let reader = tokio::spawn(read_loop(
            BufReader::new(r),
            pending.clone(),
            vm.to_string(),
            sink,
        ));
        Ok(ControlClient {
            writer: tokio::sync::Mutex::new(w),
            pending,
            next_id: AtomicU64::new(1),
            reader,
        })
    }

    pub async fn request(&self, op: Op, timeout: Duration) -> Result<Value, ControlError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        let name = serde_json::to_value(&op)
            .ok()
            .and_then(|v| v["op"].as_str().map(str::to_string))
            .unwrap_or_default();
        let line = encode(&Frame::Request { id, op });
        self.writer
            .lock()
            .await
            .write_all(line.as_bytes())
            .await
            .map_err(|_| ControlError::Closed)?;
        let res = tokio::time::timeout(timeout, rx).await;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        match res {
            Err(_) => Err(ControlError::Timeout(name, timeout.as_millis())),
            Ok(Err(_)) => Err(ControlError::Closed),
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(ControlError::Refused(e)),
        }
    }
}

/// The next line from the guest, at most [`MAX_LINE`] bytes: `Ok(None)`
/// at the end, `Err` with the length of a longer line, which is skipped.
async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), usize>>> {
    buf.clear();
    if (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .await?
        == 0
    {
        return Ok(None);
    }
    if buf.len() <= MAX_LINE {
        return Ok(Some(Ok(())));
    }
    let mut skipped = buf.len();
    while !buf.ends_with(b"\n") {
        buf.clear();
        let n = (&mut *r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', buf)
            .await?;
        if n == 0 {
            break;
        }
        skipped += n;
    }
    Ok(Some(Err(skipped)))
}

async fn read_loop(
    mut r: BufReader<tokio::net::unix::OwnedReadHalf>,
    pending: Pending,
    vm: String,
    sink: EventSink,
) {
    let mut buf = Vec::new();
    while let Ok(Some(got)) = next_line(&mut r, &mut buf).await {
        if let Err(len) = got {
            tracing::warn!(vm = %vm, len, "guest sent a line longer than {MAX_LINE} bytes; skipped");
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        match decode(line.trim_end()) {
            Ok(Frame::Response { id, result }) => {
                if let Some(tx) = pending.lock().ok().and_then(|mut p| p.remove(&id)) {
                    let _ = tx.send(result);
                }
            }
            Ok(Frame::Event { event, data }) => {
                if event == "heartbeat" {
                    tracing::debug!(vm = %vm, data = %data, "guest heartbeat");
                } else {
                    tracing::info!(vm = %vm, event = %event, data = %data, "guest event");
                }
                sink(&event, &data);
            }
            Ok(Frame::Request { .. }) => tracing::warn!(vm = %vm, "guest sent a request; ignored"),
            Err(e) => tracing::warn!(vm = %vm, error = %e, "bad line from guest"),
        }
    }
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;

    #[tokio::test]
    async fn a_line_over_the_limit_is_skipped_and_the_next_read() {
        let mut input = vec![b'x'; MAX_LINE * 2 + 10];
        input.extend_from_slice(b"\n{\"next\":1}\n");
        let mut r = BufReader::new(&input[..]);
        let mut buf = Vec::new();
        let got = next_line(&mut r, &mut buf).await.unwrap();
        assert_eq!(got, Some(Err(MAX_LINE * 2 + 11)));
        assert_eq!(next_line(&mut r, &mut buf).await.unwrap(), Some(Ok(())));
        assert_eq!(buf, b"{\"next\":1}\n");
        assert_eq!(next_line(&mut r, &mut buf).await.unwrap(), None);
    }
}
