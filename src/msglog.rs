//! The message logger: `[MSG] Topic: ...` / `Payload: ...` for every accepted PUBLISH.
//!
//! The format is the Python prototype's, two lines per message:
//!
//! ```text
//! [MSG] Topic: sensors/temperature
//! Payload: 24.3°C
//! ```
//!
//! The logger is a router subscriber like any other (an *observer* of `#`, see
//! [`crate::router::subscriber`]): it logs exactly what the router routed, from every source
//! (clients, wills, HTTP, gateways). Writing happens on one dedicated std thread, never on the
//! async runtime; fan-out only pushes a refcounted message into the logger's bounded queue (at
//! most [`DEFAULT_CAPACITY`] messages and [`MAX_QUEUED_BYTES`]), so a slow disk or a blocked
//! terminal can never stall the broker or slow a publisher. When the queue is full the message is
//! left out of the log and counted in [`MessageLogger::dropped`]. (`$`-topics such as `$SYS` are
//! not matched by `#`, so the broker's own statistics stay out of the log.)
//!
//! Payloads are shown as UTF-8 (invalid bytes become U+FFFD), cut after [`MAX_PAYLOAD_SHOWN`]
//! bytes, and control characters (and Unicode line separators / bidi overrides) are escaped, so a
//! client cannot forge log lines with `\n` in a topic or payload. Backslashes are left alone.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crate::protocol::QoS;
use crate::router::Router;
use crate::router::subscriber::{DropCounter, SubscriberHandle, SubscriberOptions};

/// Payload bytes shown before the rest is summarised as `... (N bytes)`.
pub const MAX_PAYLOAD_SHOWN: usize = 512;

/// Messages that may wait for the writer thread before new ones are dropped.
pub const DEFAULT_CAPACITY: usize = 8192;

/// Bytes of messages that may wait for the writer thread (payloads are held whole until
/// written, though only [`MAX_PAYLOAD_SHOWN`] bytes of each are shown).
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// Handle to the logging thread, kept by the broker for its lifetime.
pub struct MessageLogger {
    stop: Arc<AtomicBool>,
    dropped: DropCounter,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MessageLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageLogger")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl MessageLogger {
    /// Subscribes to every message `router` routes and starts the writer thread, with room for
    /// [`DEFAULT_CAPACITY`] waiting messages.
    pub fn start(sink: Box<dyn Write + Send>, router: &Arc<Router>) -> MessageLogger {
        MessageLogger::with_capacity(sink, router, DEFAULT_CAPACITY)
    }

    /// As [`MessageLogger::start`], with room for `capacity` (at least 1) waiting messages.
    pub fn with_capacity(
        sink: Box<dyn Write + Send>,
        router: &Arc<Router>,
        capacity: usize,
    ) -> MessageLogger {
        let options = SubscriberOptions::observer("$msglog", capacity, MAX_QUEUED_BYTES);
        let mut handle = router.subscriber(options, None);
        if let Err(e) = handle.subscribe("#", QoS::AtMostOnce) {
            tracing::error!("message log disabled: {e}");
        }
        let dropped = handle.drop_counter();
        let stop = Arc::new(AtomicBool::new(false));
        let spawned = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("mqttd-msglog".into())
                .spawn(move || write_loop(handle, sink, &stop))
        };
        let thread = spawned
            .inspect_err(|e| {
                // Not worth refusing to start the broker over.
                tracing::error!("message log disabled: cannot start its thread: {e}");
            })
            .ok();
        MessageLogger {
            stop,
            dropped,
            thread,
        }
    }

    /// Messages left out of the log because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// A counter of [`MessageLogger::dropped`] to keep elsewhere.
    pub fn drop_counter(&self) -> DropCounter {
        self.dropped.clone()
    }

    /// Stops logging new messages, writes everything already queued, flushes and joins the
    /// thread. (Dropping the logger does the same.)
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!("message log thread panicked");
            }
        }
    }
}

impl Drop for MessageLogger {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Standard output as a sink.
pub fn stdout() -> Box<dyn Write + Send> {
    Box::new(io::stdout())
}

/// Opens (creating it if needed, mode 0600 on Unix: payloads may be private) `path` for appending.
pub fn open_file(path: &Path) -> io::Result<Box<dyn Write + Send>> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    Ok(Box::new(options.open(path)?))
}

/// Writes each message the handle receives; flushes whenever the queue is momentarily empty.
/// Ends once `stop` is set and the queue is empty (and drops the handle: no more subscription).
fn write_loop(mut handle: SubscriberHandle, sink: Box<dyn Write + Send>, stop: &AtomicBool) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    let mut line = String::new();
    let mut warned = false;
    let mut report = |result: io::Result<()>| {
        if let Err(e) = result
            && !std::mem::replace(&mut warned, true)
        {
            tracing::warn!("message log write failed (further failures not reported): {e}");
        }
    };
    let waker = crate::router::subscriber::thread_waker();
    let mut cx = Context::from_waker(&waker);
    // Set once `stop` is seen: one more look at the queue (what arrived while flushing), then out.
    let mut last_look = false;
    loop {
        match handle.poll_recv(&mut cx) {
            Poll::Ready(Some(r)) => {
                format_entry(&mut line, &r.msg.topic, &r.msg.payload);
                report(out.write_all(line.as_bytes()));
            }
            Poll::Ready(None) => break,
            Poll::Pending => {
                // The queue is momentarily empty: make what we have visible.
                report(out.flush());
                if last_look {
                    break;
                }
                if stop.load(Ordering::Acquire) {
                    last_look = true;
                    continue;
                }
                std::thread::park();
            }
        }
    }
    report(out.flush());
}

/// Replaces `line` with the two log lines for one message.
fn format_entry(line: &mut String, topic: &str, payload: &[u8]) {
    line.clear();
    line.push_str("[MSG] Topic: ");
    push_escaped(line, topic);
    line.push_str("\nPayload: ");
    if payload.len() > MAX_PAYLOAD_SHOWN {
        // Back off to the start of a UTF-8 sequence so the cut does not leave half a character.
        let mut cut = MAX_PAYLOAD_SHOWN;
        while cut > MAX_PAYLOAD_SHOWN - 3 && is_continuation(payload[cut]) {
            cut -= 1;
        }
        push_escaped(line, &String::from_utf8_lossy(&payload[..cut]));
        let _ = write!(line, "... ({} bytes)", payload.len());
    } else {
        push_escaped(line, &String::from_utf8_lossy(payload));
    }
    line.push('\n');
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// Characters that could break or disguise a log line.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find(needs_escape) {
        out.push_str(&rest[..at]);
        let Some(c) = rest[at..].chars().next() else {
            break;
        };
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::time::Duration;

    /// An in-memory sink the test can read while the logger owns a clone.
    #[derive(Clone, Default)]
    struct Shared(Arc<parking_lot::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock()).into_owned()
        }
    }

    fn router() -> Arc<Router> {
        Arc::new(Router::new(crate::router::RouterLimits {
            max_queued_messages: 1000,
            max_queued_bytes: 1 << 30,
            max_queued_bytes_per_client: 1 << 30,
            slow_subscriber_timeout: std::time::Duration::from_secs(1),
        }))
    }

    /// Routes a QoS 0 message, as the ingress does after its checks.
    fn publish(router: &Router, topic: &str, payload: Bytes) {
        let msg = crate::router::Message::new(topic.into(), payload, QoS::AtMostOnce, false);
        router.publish(Arc::new(msg));
    }

    fn format(topic: &str, payload: &[u8]) -> String {
        let mut line = String::new();
        format_entry(&mut line, topic, payload);
        line
    }

    #[test]
    fn exact_format() {
        let sink = Shared::default();
        let router = router();
        let logger = MessageLogger::start(Box::new(sink.clone()), &router);
        publish(&router, "sensors/temperature", Bytes::from("24.3°C"));
        publish(&router, "device/status", Bytes::from_static(b""));
        logger.close();
        assert_eq!(
            sink.text(),
            "[MSG] Topic: sensors/temperature\nPayload: 24.3°C\n\
             [MSG] Topic: device/status\nPayload: \n"
        );
    }

    #[test]
    fn escaping_table() {
        let cases: [(&[u8], &str); 8] = [
            (b"plain text", "plain text"),
            (b"two\nlines", "two\\nlines"),
            (b"a\r\n[MSG] Topic: fake", "a\\r\\n[MSG] Topic: fake"),
            (b"tab\there", "tab\\there"),
            (b"esc\x1b[31mred\x7f", "esc\\x1b[31mred\\x7f"),
            (b"nul\0", "nul\\x00"),
            (
                "sep\u{2028}\u{202e}\u{85}".as_bytes(),
                "sep\\u{2028}\\u{202e}\\u{85}",
            ),
            (b"bad \xff utf8 \\n", "bad \u{fffd} utf8 \\n"),
        ];
        for (payload, shown) in cases {
            assert_eq!(
                format("t", payload),
                format!("[MSG] Topic: t\nPayload: {shown}\n"),
                "{payload:?}"
            );
        }
        assert_eq!(format("a\nb", b"x"), "[MSG] Topic: a\\nb\nPayload: x\n");
    }

    #[test]
    fn long_payloads_are_cut() {
        let exact = vec![b'a'; MAX_PAYLOAD_SHOWN];
        assert_eq!(
            format("t", &exact),
            format!("[MSG] Topic: t\nPayload: {}\n", "a".repeat(512))
        );

        let long = vec![b'b'; 2000];
        assert_eq!(
            format("t", &long),
            format!(
                "[MSG] Topic: t\nPayload: {}... (2000 bytes)\n",
                "b".repeat(512)
            )
        );

        // 'é' is two bytes: 511 ASCII bytes then 'é' straddles the 512-byte cut.
        let mut straddle = vec![b'c'; 511];
        straddle.extend_from_slice("é and more".as_bytes());
        let len = straddle.len();
        assert_eq!(
            format("t", &straddle),
            format!(
                "[MSG] Topic: t\nPayload: {}... ({len} bytes)\n",
                "c".repeat(511)
            )
        );

        // Binary made of continuation bytes only: must not panic or loop.
        let binary = vec![0x80u8; 600];
        let shown = format("t", &binary);
        assert!(shown.ends_with("... (600 bytes)\n"), "{shown}");
    }

    /// A sink whose writes wait until the test lets them through.
    struct Gated {
        inner: Shared,
        entered: Sender<()>,
        gate: Receiver<()>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            // Blocks until a token arrives or the gate's sender is dropped (then everything flows).
            let _ = self.gate.recv_timeout(Duration::from_secs(10));
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn drops_are_counted_when_the_writer_is_stalled() {
        let sink = Shared::default();
        let (entered_tx, entered) = channel();
        let (open, gate) = channel();
        let router = router();
        let logger = MessageLogger::with_capacity(
            Box::new(Gated {
                inner: sink.clone(),
                entered: entered_tx,
                gate,
            }),
            &router,
            2,
        );
        let topic = "t";
        publish(&router, topic, Bytes::from("first"));
        // The thread has taken "first" off the queue and is stuck writing it.
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("writer thread never wrote");
        for payload in ["second", "third", "lost1", "lost2", "lost3"] {
            publish(&router, topic, Bytes::from(payload));
        }
        assert_eq!(logger.dropped(), 3);
        drop(open);
        logger.close();
        let text = sink.text();
        for kept in ["first", "second", "third"] {
            assert!(text.contains(&format!("Payload: {kept}\n")), "{text}");
        }
        assert!(!text.contains("lost"), "{text}");
    }

    #[test]
    fn close_writes_everything_queued() {
        let sink = Shared::default();
        let router = router();
        let logger = MessageLogger::start(Box::new(sink.clone()), &router);
        let topic = "load/test";
        for i in 0..1000 {
            publish(&router, topic, Bytes::from(i.to_string()));
        }
        assert_eq!(logger.dropped(), 0);
        logger.close();
        let text = sink.text();
        assert_eq!(text.lines().count(), 2000);
        assert!(text.ends_with("[MSG] Topic: load/test\nPayload: 999\n"));
    }

    #[test]
    fn drop_also_flushes() {
        let sink = Shared::default();
        {
            let router = router();
            let _logger = MessageLogger::start(Box::new(sink.clone()), &router);
            publish(&router, "a", Bytes::from("b"));
        }
        assert_eq!(sink.text(), "[MSG] Topic: a\nPayload: b\n");
    }

    #[test]
    fn open_file_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("messages.log");
        for payload in ["one", "two"] {
            let router = router();
            let logger = MessageLogger::start(open_file(&path).expect("open"), &router);
            publish(&router, "t", Bytes::from(payload));
            logger.close();
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "[MSG] Topic: t\nPayload: one\n[MSG] Topic: t\nPayload: two\n"
        );
    }
}
