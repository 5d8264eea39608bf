//! Raw datagrams through the CoAP gateway's whole request path ([`Engine::on_datagram`]: parse,
//! rate limit, duplicates, Block1 assembly, credentials, routes, observers), not only
//! coap-lite's parser; MQTT publishes in between make observers notify, and time moves so
//! retransmissions, token expiry and housekeeping run.
//!
//! Checked: nothing panics; everything the gateway sends parses as CoAP 1 and fits a UDP
//! datagram; the observer gauge never exceeds the configured bound.
//!
//! Input layout: records `[selector, len_hi, len_lo, bytes...]` (`len` mod 2048, cut to what is
//! left). Selector bits 5-7: 0-3 a datagram from peer `127.0.0.(1 + bits 0-1)`, port
//! `5000 + bits 2-4`; 4 an MQTT publish (QoS = bits 0-1 mod 3, retain = bit 2) whose topic is
//! the bytes (as UTF-8, lossy) and whose payload is the topic again; 5 time moves by
//! `len` ms and deadlines run; 6 housekeeping; 7 observers drain.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mqttd::auth::{Auth, AuthCell};
use mqttd::client::Context;
use mqttd::config::{AuthConfig, CoapConfig, Config, Limits};
use mqttd::gateway::GatewayStatus;
use mqttd::gateway::coap::Engine;
use mqttd::gateway::coap::status::Status;
use mqttd::ingress::{Ingress, IngressLimits, Source};
use mqttd::protocol::QoS;
use mqttd::router::{Message, Router, RouterLimits};

const MAX_OBSERVERS: usize = 8;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn context() -> Arc<Context> {
    let auth = Arc::new(AuthCell::new(
        Auth::load(&AuthConfig::default()).expect("auth config loads"),
    ));
    let limits = Limits {
        max_packet_size: 4096,
        max_inflight: 4,
        max_queued_messages: 8,
        ..Limits::default()
    };
    let router = Arc::new(Router::new(RouterLimits::from(&limits)));
    let ingress = Arc::new(Ingress::new(
        router.clone(),
        auth.clone(),
        IngressLimits::from(&limits),
    ));
    Arc::new(Context {
        router,
        ingress,
        auth,
        limits,
        msglog: None,
        shutdown: Default::default(),
        parker: None,
        connections_per_ip: Default::default(),
    })
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let ctx = context();
        let mut config = Config::default();
        config.limits = ctx.limits.clone();
        let mut cfg = CoapConfig::new("fuzz", "127.0.0.1:5683".parse().unwrap());
        cfg.ack_timeout = Duration::from_millis(10);
        cfg.max_retransmit = 2;
        cfg.heartbeat = Duration::from_millis(500);
        cfg.max_observers = MAX_OBSERVERS;
        cfg.max_observers_per_client = 4;
        cfg.max_sessions = 8;
        cfg.block_size = 64;
        let status = Arc::new(Status::new("fuzz".into(), cfg.bind));
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let mut engine = Engine::new(ctx.clone(), &cfg, &config, status.clone(), tx);
        let mut now = Instant::now();
        let mut rest = data;
        while rest.len() >= 3 {
            let sel = rest[0];
            let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])) % 2048;
            rest = &rest[3..];
            let (bytes, tail) = rest.split_at(len.min(rest.len()));
            rest = tail;
            match sel >> 5 {
                0..=3 => {
                    let peer = SocketAddr::from((
                        [127, 0, 0, 1 + (sel & 3)],
                        5000 + u16::from((sel >> 2) & 7),
                    ));
                    engine.on_datagram(peer, bytes, now);
                }
                4 => {
                    let topic = String::from_utf8_lossy(bytes).into_owned();
                    let qos = QoS::from_u8(sel % 3).unwrap_or(QoS::AtMostOnce);
                    let msg = Message::new(topic.as_str().into(), Bytes::from(topic.clone()), qos, sel & 4 != 0);
                    let mut p = ctx.ingress.publisher("mqtt".into(), None, Source::Mqtt);
                    let _ = ctx.ingress.publish_now(&mut p, msg);
                    engine.on_ready(now);
                }
                5 => {
                    now += Duration::from_millis(len as u64);
                    engine.on_tick(now);
                }
                6 => engine.housekeeping(now),
                _ => engine.on_ready(now),
            }
            tokio::task::yield_now().await;
            while let Ok(event) = events.try_recv() {
                engine.on_event(event, now);
            }
            for (_, out) in std::mem::take(&mut engine.out) {
                assert!(out.len() <= 65_507, "a datagram over UDP's limit");
                let p = coap_lite::Packet::from_bytes(&out).expect("the gateway sends valid CoAP");
                assert_eq!(p.header.get_version(), 1);
            }
            let observers = status.metrics().iter().find(|m| m.name == "observers").map_or(0, |m| m.value);
            assert!(observers <= MAX_OBSERVERS as u64, "observer bound");
        }
    });
});
