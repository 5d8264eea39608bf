//! Parking glue: the packet loop's driver ([`drive`]) hands an idle connection to the parker
//! ([`crate::park`]) as an [`Idle`], which resumes it as a new task when something happens.

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::connection::{Connection, Stream};
use crate::park::Parkable;
use crate::transport::Framing;
use crate::transport::tls::TlsStream;
use crate::transport::ws::WsStream;

use super::exit::Exit;
use super::{Client, Guard};

/// Where the packet loop starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Start {
    /// Just after CONNACK: in-flight messages of a resumed session are re-sent, and the
    /// connection parks at its first wait (most clients are idle after connecting).
    Connected,
    /// Resumed from parking: the keep-alive deadline carries on.
    Resumed { deadline: Option<Instant> },
    /// Parking failed: serve on as a task.
    Unparked { deadline: Option<Instant> },
}

/// Runs the packet loop until the connection ends or parks.
pub(super) async fn drive<S: Stream>(
    mut conn: Connection<S>,
    mut client: Client,
    guard: Guard,
    start: Start,
) {
    let (mut guard, mut start) = (guard, start);
    loop {
        let exit = client.run(&mut conn, start).await;
        let Exit::Idle { deadline } = exit else {
            Box::pin(client.finish(&mut conn, exit)).await;
            drop(guard);
            return;
        };
        start = Start::Unparked { deadline };
        let Some(parker) = client.ctx.parker.clone() else {
            continue;
        };
        let max_packet_size = client.ctx.limits.max_packet_size;
        let (stream, parked) = conn.park();
        let (socket, framing) = match stream.into_socket() {
            Ok(Ok(parts)) => parts,
            Err(stream) => {
                conn = Connection::unpark(stream, parked, max_packet_size);
                continue;
            }
            Ok(Err(e)) => {
                let why = format!("cannot park the connection: {e}");
                client.close(Exit::Abnormal { why, reason: None });
                return;
            }
        };
        let idle = Idle {
            socket,
            framing,
            conn: parked,
            client,
            guard,
        };
        let Err(idle) = parker.park(idle, deadline) else {
            return;
        };
        // Not parked (the broker is shutting down): back into tokio's reactor, on as a task.
        match idle.unpark::<S>() {
            Some((c, cl, g)) => (conn, client, guard) = (c, cl, g),
            None => return,
        }
    }
}

/// A parked connection (see [`crate::park`]): what its task held, without the task.
pub struct Idle {
    socket: std::net::TcpStream,
    /// Raw MQTT, or WebSocket frames, TLS, or both, with their state.
    framing: Framing,
    conn: crate::connection::Parked,
    client: Client,
    guard: Guard,
}

impl Parkable for Idle {
    fn socket(&self) -> &std::net::TcpStream {
        &self.socket
    }

    fn link(&self) -> &crate::router::state::Link {
        &self.client.attached.link
    }

    /// Serves the connection on as a task (spawned by the parker when something happened).
    async fn resume(mut self, deadline: Option<Instant>, readable: bool) {
        if readable {
            let n = self.conn.read_ahead(&self.socket, &mut self.framing);
            let stats = &self.client.ctx.router.stats;
            stats
                .bytes_received
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(info) = self.client.attached.link.info() {
                crate::router::clients::ConnCounters::add(&info.counters.bytes_in, n as u64);
            }
        }
        let start = Start::Resumed { deadline };
        match self.framing {
            Framing::Raw => self.serve_on::<TcpStream>(start).await,
            // Boxed, so a plain connection's resumed task is not sized for the others' streams.
            Framing::Ws(_) => Box::pin(self.serve_on::<WsStream<TcpStream>>(start)).await,
            Framing::Tls(_) => Box::pin(self.serve_on::<TlsStream<TcpStream>>(start)).await,
            Framing::Wss(_) => {
                Box::pin(self.serve_on::<WsStream<TlsStream<TcpStream>>>(start)).await;
            }
        }
    }
}

impl Idle {
    /// Back in tokio's reactor as a `S`, served on as a task.
    async fn serve_on<S: Stream>(self, start: Start) {
        if let Some((conn, client, guard)) = self.unpark::<S>() {
            drive(conn, client, guard, start).await;
        }
    }

    /// The socket back in tokio's reactor, as a connection again. `None`: that failed, and the
    /// connection has ended (will published, session detached).
    pub(super) fn unpark<S: Stream>(self) -> Option<(Connection<S>, Client, Guard)> {
        let Idle {
            socket,
            framing,
            conn,
            mut client,
            guard,
        } = self;
        match S::from_socket(socket, framing) {
            Ok(stream) => {
                let conn = Connection::unpark(stream, conn, client.ctx.limits.max_packet_size);
                Some((conn, client, guard))
            }
            Err(e) => {
                let why = format!("cannot unpark the connection: {e}");
                client.close(Exit::Abnormal { why, reason: None });
                None
            }
        }
    }
}
