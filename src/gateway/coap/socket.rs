//! The gateway's task: one UDP socket, one [`Engine`], and what wakes it: a datagram, a task's
//! result, an observer's delivery, a retransmission deadline, the housekeeping tick, shutdown.
//!
//! **The DTLS seam.** rustls has no DTLS, so the gateway speaks plain CoAP. [`Datagrams`] is
//! where a DTLS layer would sit: a session per peer address, records unwrapped in `recv` before
//! the engine sees a datagram and wrapped in `send` after it answered. The engine never sees
//! the socket, so nothing else would change.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::engine::{Engine, Event};

/// Datagrams in and out (see the module doc: the DTLS seam).
#[derive(Debug)]
pub struct Datagrams {
    socket: UdpSocket,
}

impl Datagrams {
    pub fn new(socket: UdpSocket) -> Self {
        Datagrams { socket }
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }

    fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.socket.try_recv_from(buf)
    }

    async fn send(&self, peer: SocketAddr, bytes: &[u8]) {
        if let Err(e) = self.socket.send_to(bytes, peer).await {
            debug!(%peer, "CoAP send failed: {e}");
        }
    }
}

/// The engine's clock: tokio's (so tests on paused time move it), as a std `Instant`.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Datagrams handled per wake-up before the other sources get a turn.
const BATCH: usize = 64;

pub async fn serve(
    io: Datagrams,
    mut engine: Engine,
    mut events: mpsc::UnboundedReceiver<Event>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    let ready = engine.ready();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = engine.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = io.recv(&mut buf) => match r {
                Ok((n, peer)) => {
                    engine.on_datagram(peer, &buf[..n], now());
                    for _ in 1..BATCH {
                        let Ok((n, peer)) = io.try_recv(&mut buf) else { break };
                        engine.on_datagram(peer, &buf[..n], now());
                    }
                }
                Err(e) => {
                    // ICMP errors surface here on some systems; never a reason to stop.
                    warn!("CoAP receive error: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(event) = events.recv() => engine.on_event(event, now()),
            _ = ready.notify.notified() => engine.on_ready(now()),
            _ = sleep_until(deadline), if deadline.is_some() => engine.on_tick(now()),
            _ = tick.tick() => engine.housekeeping(now()),
        }
        for (peer, bytes) in std::mem::take(&mut engine.out) {
            io.send(peer, &bytes).await;
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
