//! A capped, truncating sink for the guest's stdout and stderr.
//!
//! wasmtime-wasi's `MemoryOutputPipe` traps the guest once full; a chatty program should
//! instead keep running with its excess output dropped and the result flagged as truncated.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest write the sink offers to take at once, as wasmtime-wasi's own streams do, so the
/// host never allocates a guest-chosen amount in one go.
const WRITE_PERMIT: usize = 64 * 1024;

/// Collects up to `cap` bytes; clones share the same buffer.
#[derive(Clone)]
pub struct OutputSink {
    // Guards the captured bytes and the truncation flag, written from the guest's thread.
    buffer: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl OutputSink {
    /// A sink keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        OutputSink {
            buffer: Arc::new(Mutex::new(Captured {
                cap,
                ..Captured::default()
            })),
        }
    }

    fn append(&self, data: &[u8]) {
        let mut captured = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let room = captured.cap - captured.bytes.len();
        if data.len() > room {
            captured.truncated = true;
        }
        let kept = &data[..data.len().min(room)];
        captured.bytes.extend_from_slice(kept);
    }

    /// The captured bytes as (lossy) UTF-8, and whether anything was dropped.
    pub fn take(&self) -> (String, bool) {
        let mut captured = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = std::mem::take(&mut captured.bytes);
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        };
        (text, captured.truncated)
    }
}

impl IsTerminal for OutputSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for OutputSink {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: once full, writes still "succeed" and are dropped.
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputSink {
    async fn ready(&mut self) {}
}

impl AsyncWrite for OutputSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_flags_the_rest() {
        let sink = OutputSink::new(5);
        let mut stream = sink.p2_stream();
        stream.write(Bytes::from_static(b"abc")).unwrap();
        stream.write(Bytes::from_static(b"defg")).unwrap();
        stream.write(Bytes::from_static(b"h")).unwrap();
        assert_eq!(stream.check_write().unwrap(), WRITE_PERMIT);
        assert_eq!(sink.take(), ("abcde".to_string(), true));
    }

    #[test]
    fn exact_fit_is_not_truncated() {
        let sink = OutputSink::new(3);
        sink.append(b"abc");
        sink.append(b"");
        assert_eq!(sink.take(), ("abc".to_string(), false));
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let sink = OutputSink::new(10);
        sink.append(&[b'a', 0xff, b'b']);
        assert_eq!(sink.take().0, "a\u{fffd}b");
    }
}
