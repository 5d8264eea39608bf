//! mqtt-bench's WebSocket client (`mqttd_tools::bench::ws`) reads what a broker sends: frames
//! after the upgrade, and the upgrade's HTTP answer. Neither may panic, and reading frames does
//! not depend on how the bytes were cut into reads: the same bytes come out, then the same end
//! (clean or an error), whatever the read sizes.
//!
//! Input: one byte choosing the read size (1 to 64) and, by its top bit, frames or an upgrade
//! answer; then the bytes as they would come off the socket.
#![no_main]

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqttd_tools::bench::ws::{WsStream, upgrade};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A socket that hands out `data` `step` bytes per read, then the end; writes vanish.
struct Script {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.step.min(self.data.len() - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs `fut` to the end: nothing here ever waits.
fn run<T>(fut: impl Future<Output = T>) -> T {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a scripted socket never blocks"),
    }
}

/// Everything readable from `wire` cut into `step`-byte reads, and whether it ended cleanly.
fn read_all(wire: &[u8], step: usize) -> (Vec<u8>, bool) {
    let script = Script {
        data: wire.to_vec(),
        at: 0,
        step,
    };
    let mut ws = WsStream::new(script, BytesMut::new());
    let mut out = Vec::new();
    let clean = run(ws.read_to_end(&mut out)).is_ok();
    assert!(out.len() <= wire.len(), "more bytes out than came in");
    (out, clean)
}

fuzz_target!(|data: &[u8]| {
    let [mode, wire @ ..] = data else {
        return;
    };
    let step = usize::from(*mode % 64) + 1;
    if mode & 0x80 == 0 {
        let whole = read_all(wire, wire.len().max(1));
        let chunked = read_all(wire, step);
        assert_eq!(chunked, whole, "the read sizes changed what came out");
    } else {
        let script = Script {
            data: wire.to_vec(),
            at: 0,
            step,
        };
        // The key is random, so an answer is (almost) never accepted; it must never panic.
        if let Ok(mut ws) = run(upgrade(script, "127.0.0.1:1883", "/mqtt")) {
            let mut rest = Vec::new();
            let _ = run(ws.read_to_end(&mut rest));
        }
    }
});
