//! The hook's worker: drains its router queue into the bounded buffer (oldest dropped when full)
//! and sends from the buffer, `concurrency` requests at a time, each retried with exponential
//! back-off on connection errors, timeouts, 429 (its `Retry-After` honoured up to
//! `max_retry_delay`) and 5xx. Any other status is final.
//!
//! The drain and the sender run in one task but never wait for each other: requests run in tasks
//! of their own, so a slow receiver fills the buffer, never the router's queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use reqwest::{StatusCode, Url};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::request::json_body;
use super::status::Status;
use crate::router::Message;
use crate::router::subscriber::SubscriberHandle;

/// A message waiting to be sent.
pub(super) struct Queued {
    msg: Arc<Message>,
    /// When the hook took it from the router (the body's `time`).
    time: SystemTime,
}

impl Queued {
    fn size(&self) -> usize {
        self.msg.payload.len() + self.msg.topic.len()
    }
}

/// The bounded buffer between the router and the sender.
pub(super) struct Buffer {
    queue: Mutex<(VecDeque<Queued>, usize)>,
    max: usize,
    max_bytes: usize,
    ready: Notify,
}

impl Buffer {
    pub fn new(max: usize, max_bytes: usize) -> Buffer {
        Buffer {
            queue: Mutex::new((VecDeque::new(), 0)),
            max: max.max(1),
            max_bytes,
            ready: Notify::new(),
        }
    }

    /// Adds `item`, dropping (and counting) the oldest while over either bound.
    fn push(&self, item: Queued, status: &Status) {
        let mut dropped = 0;
        let len = {
            let mut guard = self.queue.lock();
            let (queue, bytes) = &mut *guard;
            *bytes += item.size();
            queue.push_back(item);
            while queue.len() > self.max || (*bytes > self.max_bytes && queue.len() > 1) {
                let Some(old) = queue.pop_front() else { break };
                *bytes -= old.size();
                dropped += 1;
            }
            queue.len()
        };
        if dropped > 0 {
            status
                .dropped
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        }
        status
            .queued
            .store(len as u64, std::sync::atomic::Ordering::Relaxed);
        self.ready.notify_one();
    }

    /// The oldest waiting message, waiting for one if there is none.
    async fn pop(&self, status: &Status) -> Queued {
        loop {
            let notified = self.ready.notified();
            {
                let mut guard = self.queue.lock();
                let (queue, bytes) = &mut *guard;
                if let Some(item) = queue.pop_front() {
                    *bytes -= item.size();
                    status
                        .queued
                        .store(queue.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    return item;
                }
            }
            notified.await;
        }
    }
}

/// How a hook retries.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    pub max_retries: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Retry {
    /// The wait before retry number `retry` (1 for the first), or the receiver's `Retry-After`,
    /// never more than `max`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self
            .first
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        retry_after.unwrap_or(backoff).min(self.max)
    }
}

/// What a hook sends with and where.
#[derive(Debug)]
pub(super) struct Sender {
    pub client: reqwest::Client,
    pub url: Url,
    pub method: reqwest::Method,
    pub retry: Retry,
    pub concurrency: usize,
    pub status: Arc<Status>,
    pub log: FailureLog,
}

/// Runs the hook until `shutdown` fires. What is still buffered then is lost (counted nowhere:
/// the broker is stopping).
pub(super) async fn run(
    sender: Arc<Sender>,
    mut handle: SubscriberHandle,
    buffer: Arc<Buffer>,
    shutdown: CancellationToken,
) {
    let drain = async {
        while let Some(first) = handle.recv().await {
            // Take everything waiting at once: the router's queue stays short.
            let mut next = Some(first);
            while let Some(r) = next {
                if r.id != 0 {
                    handle.ack(r.id);
                }
                let time = SystemTime::now();
                buffer.push(Queued { msg: r.msg, time }, &sender.status);
                next = handle.try_recv();
            }
        }
        // Closed by the router (cannot happen with QoS 0 subscriptions): nothing more comes.
        tracing::warn!(webhook = %sender.status.name, "stopped receiving messages");
        std::future::pending::<()>().await;
    };
    let mut inflight = JoinSet::new();
    let send = async {
        loop {
            while inflight.len() >= sender.concurrency {
                inflight.join_next().await;
            }
            let item = buffer.pop(&sender.status).await;
            let sender = sender.clone();
            inflight.spawn(async move { sender.send(item).await });
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = drain => {}
        _ = send => {}
    }
    inflight.shutdown().await;
}

/// Why an attempt failed.
enum Failure {
    /// Worth another attempt; `Some`: the receiver asked for this wait (429 Retry-After).
    Retry(String, Option<Duration>),
    /// A status that will not change by asking again.
    Final(StatusCode),
}

impl Sender {
    /// Sends one message, retrying as configured; counts the outcome.
    async fn send(&self, item: Queued) {
        let body = Bytes::from(json_body(&item.msg, item.msg.retain, item.time));
        let mut retry = 0;
        loop {
            // A 5.0 publisher's expiry holds here as for MQTT subscribers: a message that waited
            // (in the buffer, or between retries) past it is not sent.
            if item.msg.expired(crate::timer::wall_now()) {
                Status::count(&self.status.expired);
                return;
            }
            let started = Instant::now();
            let failure = match self.attempt(body.clone()).await {
                Ok(()) => {
                    self.status.delivered(started.elapsed());
                    return;
                }
                Err(failure) => failure,
            };
            self.status.attempt_failed();
            match failure {
                Failure::Final(code) => {
                    Status::count(&self.status.failed);
                    self.log.warn(
                        &self.status.name,
                        &item.msg.topic,
                        &format!("HTTP {code}, not retried"),
                    );
                    return;
                }
                Failure::Retry(why, after) if retry < self.retry.max_retries => {
                    retry += 1;
                    Status::count(&self.status.retries);
                    let delay = self.retry.delay(retry, after);
                    tracing::debug!(webhook = %self.status.name, "{why}; retry {retry} in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                Failure::Retry(why, _) => {
                    Status::count(&self.status.failed);
                    let attempts = retry + 1;
                    self.log.warn(
                        &self.status.name,
                        &item.msg.topic,
                        &format!("{why}; given up after {attempts} attempt(s)"),
                    );
                    return;
                }
            }
        }
    }

    /// One request: Ok for a 2xx answer.
    async fn attempt(&self, body: Bytes) -> Result<(), Failure> {
        let request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .body(body);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Err(Failure::Retry(describe(e), None)),
        };
        let code = response.status();
        let retry_after = retry_after(response.headers());
        // Read (a bounded amount of) the answer so the connection can be used again.
        let mut read = 0;
        while read < MAX_ANSWER_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        if code.is_success() {
            Ok(())
        } else if code == StatusCode::TOO_MANY_REQUESTS {
            Err(Failure::Retry(format!("HTTP {code}"), retry_after))
        } else if code.is_server_error() {
            Err(Failure::Retry(format!("HTTP {code}"), None))
        } else {
            Err(Failure::Final(code))
        }
    }
}

/// The most of an answer's body read (and thrown away) to keep the connection.
const MAX_ANSWER_READ: usize = 64 * 1024;

/// An error without the URL (its query may hold a token), with its causes.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` in seconds (the HTTP-date form is not read: the back-off applies then).
pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Failure warnings at most once per [`FailureLog::EVERY`] per hook; the rest are counted
/// and their number given with the next one shown.
#[derive(Debug, Default)]
pub(super) struct FailureLog(Mutex<(Option<Instant>, u64)>);

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn warn(&self, hook: &str, topic: &str, why: &str) {
        let now = Instant::now();
        let mut guard = self.0.lock();
        let (last, suppressed) = &mut *guard;
        if last.is_some_and(|at| now.duration_since(at) < Self::EVERY) {
            *suppressed += 1;
            return;
        }
        let more = std::mem::take(suppressed);
        *last = Some(now);
        drop(guard);
        let topic = topic.escape_debug();
        match more {
            0 => tracing::warn!(webhook = %hook, "message on \"{topic}\" not delivered: {why}"),
            n => tracing::warn!(
                webhook = %hook,
                "message on \"{topic}\" not delivered: {why} ({n} more failures since the last report)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn queued(payload: &'static [u8]) -> Queued {
        let msg = Message::new(
            "t".into(),
            Bytes::from_static(payload),
            QoS::AtMostOnce,
            false,
        );
        Queued {
            msg: Arc::new(msg),
            time: SystemTime::now(),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_retry_after_is_bounded() {
        let retry = Retry {
            max_retries: 10,
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<_> = (1..=6).map(|n| retry.delay(n, None).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            retry.delay(1, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            retry.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(1)
        );
        assert_eq!(retry.delay(u32::MAX, None), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_seconds_only() {
        let cases = [
            ("3", Some(3)),
            (" 0 ", Some(0)),
            ("-1", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
            ("", None),
        ];
        for (value, secs) in cases {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            assert_eq!(
                retry_after(&headers),
                secs.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_full_buffer_drops_the_oldest() {
        let status = Status::new("t".into(), String::new());
        let buffer = Buffer::new(2, 1 << 20);
        for payload in [b"1", b"2", b"3"] {
            buffer.push(queued(payload), &status);
        }
        assert_eq!(status.dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(status.queued.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(&buffer.pop(&status).await.msg.payload[..], b"2");
        assert_eq!(&buffer.pop(&status).await.msg.payload[..], b"3");
        assert_eq!(status.queued.load(std::sync::atomic::Ordering::Relaxed), 0);

        // The byte bound: 3 bytes fit, a fourth pushes the oldest out.
        let buffer = Buffer::new(100, 3);
        for payload in [b"a", b"b", b"c"] {
            buffer.push(queued(payload), &status);
        }
        // Each is 2 bytes (topic and payload): a and b were pushed out.
        assert_eq!(status.dropped.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(&buffer.pop(&status).await.msg.payload[..], b"c");
    }
}
