//! A whole connection, statefully: `client::serve` runs on one end of a `tokio::io::duplex`; the
//! other end sends a valid CONNECT (from our encoder) and then the fuzz input, cut into chunks with
//! pauses between some of them, and reads everything the broker answers.
//!
//! Checked: nothing panics; every byte the broker sends decodes as a packet of the negotiated
//! version (no truncated packet at the end, nothing after a DISCONNECT, valid PUBLISH topics); the session ends within a minute (virtual time)
//! of the client's EOF or broker shutdown; afterwards no client is counted as connected and a clean
//! session is gone from the router.
//!
//! Input layout:
//! - byte 0, flags: bits 0-1 version (0: 3.1, 1: 3.1.1, else 5.0); bit 2 clean session; bit 3
//!   will; bit 4 username and password; bit 5 load an ACL; bit 6 end with broker shutdown instead
//!   of EOF; bit 7 reconnect afterwards with the same client id (persistent session resumption);
//! - byte 1: keep alive in seconds;
//! - then chunks: a control byte `c`; `c >= 0xC0` sleeps `(c & 0x3F) * 100` ms (virtual time),
//!   otherwise the next `(c & 0x3F) + 1` bytes are written.
//!
//! Time is paused (`start_paused`): timeouts (keep alive, CONNECT timeout, close timeouts) elapse
//! as soon as nothing else can run, so an input never waits for real time; libFuzzer's `-timeout`
//! catches real hangs (busy loops).
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use mqttd::auth::{Auth, AuthCell};
use mqttd::client::Context;
use mqttd::config::{AuthConfig, Limits};
use mqttd::ingress::{Ingress, IngressLimits};
use mqttd::listener::InMemory;
use mqttd::protocol::{
    self, Connect, LastWill, Packet, Password, ProtocolVersion, QoS, decode, encode,
};
use mqttd::router::{Router, RouterLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const UNLIMITED: usize = 268_435_455 + 5;

/// Virtual time a session gets to end after the client's EOF (or shutdown).
const END_LIMIT: Duration = Duration::from_secs(60);

const ACL: &str = "\
topic read $SYS/#
topic readwrite public/#
user fuzz
topic readwrite #
topic deny secret/#
pattern readwrite clients/%c/#
pattern read users/%u/+
";

/// The ACL file, written once per process.
fn acl_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("mqttd-fuzz-{}.acl", std::process::id()));
        let mut f = std::fs::File::create(&path).expect("write the fuzz ACL");
        f.write_all(ACL.as_bytes()).expect("write the fuzz ACL");
        path
    })
}

/// The broker context as `Server::bind` builds it (no parker: in-memory connections never park),
/// with small limits so that queue overflow, the in-flight window and "packet too large" are
/// reachable, and its timer service running.
fn context(with_acl: bool) -> Arc<Context> {
    let auth_config = AuthConfig {
        acl_file: with_acl.then(|| acl_path().clone()),
        ..AuthConfig::default()
    };
    let auth = Arc::new(AuthCell::new(
        Auth::load(&auth_config).expect("fuzz auth config loads"),
    ));
    let limits = Limits {
        max_packet_size: 4096,
        max_inflight: 4,
        max_queued_messages: 8,
        connect_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let router = Arc::new(Router::new(RouterLimits::from(&limits)));
    let ingress = Arc::new(Ingress::new(
        router.clone(),
        auth.clone(),
        IngressLimits::from(&limits),
    ));
    let ctx = Arc::new(Context {
        router,
        ingress,
        auth,
        limits,
        msglog: None,
        shutdown: Default::default(),
        parker: None,
        connections_per_ip: Default::default(),
    });
    tokio::spawn(ctx.router.timer().clone().run(ctx.shutdown.clone()));
    ctx
}

fn connect_bytes(flags: u8, keep_alive: u8, clean: bool) -> (ProtocolVersion, Vec<u8>) {
    let protocol = match flags & 0x03 {
        0 => ProtocolVersion::V31,
        1 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    };
    let will = (flags & 0x08 != 0).then(|| LastWill {
        topic: "public/will".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: None,
    });
    let creds = flags & 0x10 != 0;
    let connect = Connect {
        protocol,
        clean_start: clean,
        keep_alive: u16::from(keep_alive),
        client_id: "fuzz-client".into(),
        will,
        username: creds.then(|| "fuzz".into()),
        password: creds.then(|| Password::new(b"secret".to_vec())),
        properties: None,
    };
    let mut out = BytesMut::new();
    encode(&Packet::Connect(Box::new(connect)), protocol, &mut out).expect("a small CONNECT");
    (protocol, out.to_vec())
}

/// Reads the broker's side to EOF, checking that it is a sequence of whole, valid packets.
async fn drain(mut rd: tokio::io::ReadHalf<DuplexStream>, version: ProtocolVersion) {
    let mut buf = BytesMut::new();
    let mut disconnected = false;
    loop {
        while let Some(p) = decode(&mut buf, version, UNLIMITED)
            .unwrap_or_else(|e| panic!("broker sent a malformed packet: {e}"))
        {
            // MQTT-3.14.4-1: nothing may follow a DISCONNECT.
            assert!(!disconnected, "broker sent {} after DISCONNECT", p.name());
            disconnected = matches!(p, Packet::Disconnect(_));
            if let Packet::Publish(publish) = &p {
                assert!(
                    protocol::topic::validate_topic_name(&publish.topic).is_ok(),
                    "broker sent PUBLISH to {:?}",
                    publish.topic
                );
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(
        buf.is_empty(),
        "broker stream ended inside a packet: {:02x?}",
        &buf[..]
    );
}

/// One connection: CONNECT, then `script`; returns when the session task has finished.
async fn connection(
    ctx: &Arc<Context>,
    connect: (ProtocolVersion, Vec<u8>),
    script: &[u8],
    end_by_shutdown: bool,
) {
    let (client, serve) = InMemory::new(ctx.clone(), true)
        .connect_task()
        .expect("an in-memory connection");
    let (rd, mut wr) = tokio::io::split(client);
    let reader = tokio::spawn(drain(rd, connect.0));
    let mut ok = wr.write_all(&connect.1).await.is_ok();
    let mut rest = script;
    while ok {
        let Some((&c, tail)) = rest.split_first() else {
            break;
        };
        if c >= 0xC0 {
            tokio::time::sleep(Duration::from_millis(u64::from(c & 0x3F) * 100)).await;
            rest = tail;
            continue;
        }
        let n = (usize::from(c & 0x3F) + 1).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        ok = wr.write_all(chunk).await.is_ok();
        rest = tail;
    }
    if end_by_shutdown {
        ctx.shutdown.cancel();
    } else {
        let _ = wr.shutdown().await;
    }
    match tokio::time::timeout(END_LIMIT, serve).await {
        Err(_) => panic!("session still running {END_LIMIT:?} after the client's EOF / shutdown"),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(_) => {}
    }
    drop(wr);
    match tokio::time::timeout(END_LIMIT, reader).await {
        Err(_) => panic!("broker side not closed after the session ended"),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(_) => {}
    }
    let connected = ctx.router.stats.clients_connected.load(Ordering::Relaxed);
    assert_eq!(
        connected, 0,
        "clients still counted as connected after the session ended"
    );
}

async fn run(data: &[u8]) {
    let [flags, keep_alive, script @ ..] = data else {
        return;
    };
    let ctx = context(flags & 0x20 != 0);
    let clean = flags & 0x04 != 0;
    let shutdown = flags & 0x40 != 0;
    let reconnect = flags & 0x80 != 0 && !shutdown;
    connection(
        &ctx,
        connect_bytes(*flags, *keep_alive, clean),
        script,
        shutdown,
    )
    .await;
    if clean {
        assert_eq!(
            ctx.router.session_count(),
            0,
            "clean session kept after disconnect"
        );
    }
    if reconnect {
        // Resume (or replace) the session and ping once: in-flight messages are re-sent.
        let ping = [0x01, 0xC0, 0x00, 0xC5];
        connection(
            &ctx,
            connect_bytes(*flags, *keep_alive, false),
            &ping,
            false,
        )
        .await;
    }
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(run(data));
});
