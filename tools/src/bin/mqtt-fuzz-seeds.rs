//! Writes the seed corpora of the cargo-fuzz targets in `fuzz/` from our own encoder, so every
//! seed is a valid packet (or file) the fuzzer can mutate from:
//!
//! ```text
//! cargo run -p mqttd-tools --bin mqtt-fuzz-seeds -- fuzz/corpus
//! ```
//!
//! Files are named `seed-<what>`; re-running overwrites them and leaves other files alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use mqttd::protocol::{
    Auth, AuthReason, ConnAck, ConnAckReason, Connect, Disconnect, DisconnectReason, LastWill,
    Packet, Password, Properties, ProtocolVersion, PubAckReason, PubResp, Publish, QoS,
    RetainHandling, SubAck, SubAckReason, Subscribe, SubscribeFilter, SubscriptionOptions,
    UnsubAck, UnsubAckReason, Unsubscribe, encode,
};

#[derive(Parser, Debug)]
#[command(about = "Writes the seed corpora for the mqttd fuzz targets")]
struct Args {
    /// The corpus root: one directory per target is created in it.
    #[arg(default_value = "fuzz/corpus")]
    dir: PathBuf,
}

fn bytes(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).expect("seed packets are encodable");
    out.to_vec()
}

fn connect(protocol: ProtocolVersion, will: bool, creds: bool, clean: bool) -> Packet {
    let v5 = protocol.is_v5();
    let props = |p: Properties| v5.then(|| Box::new(p));
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: clean,
        keep_alive: 30,
        client_id: "seed".into(),
        will: will.then(|| LastWill {
            topic: "status/seed".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: props(Properties {
                will_delay_interval: Some(5),
                content_type: Some("text/plain".into()),
                ..Properties::default()
            }),
        }),
        username: creds.then(|| "user".into()),
        password: creds.then(|| Password::new(b"pass".to_vec())),
        properties: props(Properties {
            session_expiry_interval: Some(60),
            receive_maximum: Some(10),
            maximum_packet_size: Some(65_536),
            topic_alias_maximum: Some(4),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        }),
    }))
}

fn publish(qos: QoS, retain: bool, topic: &str, payload: &'static [u8], v5: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: Arc::from(topic),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 7 },
        payload: Bytes::from_static(payload),
        properties: v5.then(|| {
            Box::new(Properties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(3600),
                response_topic: Some("reply/seed".into()),
                correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                topic_alias: Some(1),
                user_properties: vec![("a".into(), "b".into())],
                ..Properties::default()
            })
        }),
    })
}

fn subscribe(v5: bool) -> Packet {
    let mut opts = SubscriptionOptions::new(QoS::ExactlyOnce);
    if v5 {
        opts.no_local = true;
        opts.retain_as_published = true;
        opts.retain_handling = RetainHandling::SendIfNew;
    }
    Packet::Subscribe(Subscribe {
        packet_id: 3,
        filters: vec![
            SubscribeFilter {
                filter: "sport/+/player1".into(),
                options: opts,
            },
            SubscribeFilter {
                filter: "#".into(),
                options: SubscriptionOptions::new(QoS::AtLeastOnce),
            },
        ],
        properties: v5.then(|| {
            Box::new(Properties {
                subscription_identifiers: vec![42],
                ..Properties::default()
            })
        }),
    })
}

fn reason_props(v5: bool) -> Option<Box<Properties>> {
    v5.then(|| {
        Box::new(Properties {
            reason_string: Some("because".into()),
            user_properties: vec![("x".into(), "y".into())],
            ..Properties::default()
        })
    })
}

/// Every packet type, valid for `version`.
fn packets(version: ProtocolVersion) -> Vec<(&'static str, Packet)> {
    let v5 = version.is_v5();
    let mut list = vec![
        ("connect-plain", connect(version, false, false, true)),
        ("connect-will-creds", connect(version, true, true, false)),
        (
            "connack",
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: ConnAckReason::Success,
                properties: v5.then(|| {
                    Box::new(Properties {
                        assigned_client_identifier: Some("auto-1".into()),
                        server_keep_alive: Some(20),
                        maximum_qos: Some(1),
                        retain_available: Some(1),
                        wildcard_subscription_available: Some(1),
                        ..Properties::default()
                    })
                }),
            }),
        ),
        (
            "publish-qos0",
            publish(QoS::AtMostOnce, false, "a/b", b"zero", v5),
        ),
        (
            "publish-qos1-retain",
            publish(QoS::AtLeastOnce, true, "a/b", b"one", v5),
        ),
        (
            "publish-qos2",
            publish(QoS::ExactlyOnce, false, "a/b/c", b"two", v5),
        ),
        (
            "puback",
            Packet::PubAck(PubResp {
                packet_id: 7,
                reason: if v5 {
                    PubAckReason::NoMatchingSubscribers
                } else {
                    PubAckReason::Success
                },
                properties: reason_props(v5),
            }),
        ),
        ("pubrec", Packet::PubRec(PubResp::new(7))),
        ("pubrel", Packet::PubRel(PubResp::new(7))),
        ("pubcomp", Packet::PubComp(PubResp::new(7))),
        ("subscribe", subscribe(v5)),
        (
            "suback",
            Packet::SubAck(SubAck {
                packet_id: 3,
                return_codes: vec![
                    SubAckReason::GrantedQos2,
                    SubAckReason::GrantedQos1,
                    SubAckReason::UnspecifiedError,
                ],
                properties: reason_props(v5),
            }),
        ),
        (
            "unsubscribe",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 4,
                filters: vec!["sport/+/player1".into(), "#".into()],
                properties: None,
            }),
        ),
        (
            "unsuback",
            Packet::UnsubAck(UnsubAck {
                packet_id: 4,
                reasons: if v5 {
                    vec![
                        UnsubAckReason::Success,
                        UnsubAckReason::NoSubscriptionExisted,
                    ]
                } else {
                    Vec::new()
                },
                properties: reason_props(v5),
            }),
        ),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
        (
            "disconnect",
            Packet::Disconnect(Disconnect {
                reason: if v5 {
                    DisconnectReason::DisconnectWithWillMessage
                } else {
                    DisconnectReason::NormalDisconnection
                },
                properties: v5.then(|| {
                    Box::new(Properties {
                        session_expiry_interval: Some(0),
                        ..Properties::default()
                    })
                }),
            }),
        ),
    ];
    if v5 {
        list.push((
            "auth",
            Packet::Auth(Auth {
                reason: AuthReason::ContinueAuthentication,
                properties: Some(Box::new(Properties {
                    authentication_method: Some("SCRAM-SHA-1".into()),
                    authentication_data: Some(Bytes::from_static(b"data")),
                    ..Properties::default()
                })),
            }),
        ));
    }
    list
}

fn write(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let path = dir.join(format!("seed-{name}"));
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))
}

/// `decode_*`: a selector byte (2: 1 MiB maximum) then packets.
fn decode_seeds(root: &Path, target: &str, version: ProtocolVersion) -> Result<()> {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir)?;
    let mut stream = vec![2u8];
    for (name, p) in packets(version) {
        let b = bytes(&p, version);
        write(&dir, name, &[&[2u8][..], &b].concat())?;
        stream.extend_from_slice(&b);
    }
    write(&dir, "stream", &stream)?;
    if version == ProtocolVersion::V311 {
        let c = connect(ProtocolVersion::V31, true, true, true);
        write(
            &dir,
            "connect-v31",
            &[&[2u8][..], &bytes(&c, version)].concat(),
        )?;
    }
    Ok(())
}

/// `session`: flags, keep alive, then the packets in chunks of at most 64 bytes (see the target's
/// doc), with a 0.5 s pause after each packet.
fn session_script(packets: &[Packet], version: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        for chunk in bytes(p, version).chunks(64) {
            out.push((chunk.len() - 1) as u8);
            out.extend_from_slice(chunk);
        }
        out.push(0xC5);
    }
    out
}

fn session_seeds(root: &Path) -> Result<()> {
    let dir = root.join("session");
    std::fs::create_dir_all(&dir)?;
    for (flags, name) in [
        (0x01u8, "v311-clean"),
        (0x1D, "v311-will-creds-acl-clean"),
        (0x99, "v311-persistent-reconnect"),
        (0x02, "v5"),
        (0x66, "v5-acl-clean-shutdown"),
        (0x00, "v31"),
    ] {
        let version = match flags & 3 {
            0 => ProtocolVersion::V31,
            1 => ProtocolVersion::V311,
            _ => ProtocolVersion::V5,
        };
        let v5 = version.is_v5();
        // The broker numbers its own QoS 1/2 deliveries from 1; acknowledge the first few.
        let script = [
            subscribe(v5),
            publish(QoS::AtMostOnce, false, "sport/tennis/player1", b"0", v5),
            publish(QoS::AtLeastOnce, true, "public/a", b"1", v5),
            publish(QoS::ExactlyOnce, false, "clients/fuzz-client/x", b"2", v5),
            Packet::PubRel(PubResp::new(7)),
            Packet::PubAck(PubResp::new(1)),
            Packet::PubRec(PubResp::new(2)),
            Packet::PubComp(PubResp::new(2)),
            Packet::PingReq,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 5,
                filters: vec!["#".into()],
                properties: None,
            }),
            Packet::Disconnect(Disconnect::default()),
        ];
        let data = [&[flags, 10][..], &session_script(&script, version)].concat();
        write(&dir, name, &data)?;
    }
    Ok(())
}

fn text_seeds(root: &Path) -> Result<()> {
    let dir = root.join("topic_filter");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in [
        ("plus", "sport/+/player1\0sport/tennis/player1\0sport/#"),
        ("hash-parent", "sport/#\0sport\0#"),
        ("sys", "$SYS/#\0$SYS/broker/uptime\0+/#"),
        ("sys-wildcard", "+/uptime\0$SYS/uptime\0#"),
        ("shared", "$share/group/a/+\0a/b\0a/#"),
        ("empty-levels", "+/+\0/\0/+"),
        ("exact", "a/b/c\0a/b/c\0a/+/c"),
        ("unicode", "é/+/ü\0é/ß/ü\0é/#"),
    ] {
        write(&dir, name, text.as_bytes())?;
    }

    let dir = root.join("passwd_parse");
    std::fs::create_dir_all(&dir)?;
    let salt16 = "c2FsdHNhbHRzYWx0c2FsdA"; // 16 bytes, no padding
    let hash32 = "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"; // 32 bytes, no padding
    let b64_64 =
        "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA==";
    let files = [
        (
            "argon2id",
            format!(
                "# users\n\nalice:$argon2id$v=19$m=19456,t=2,p=1${salt16}${hash32}\n\
                 bob:$argon2i$v=19$m=64,t=1,p=1${salt16}${hash32}\r\n\
                 carol:$argon2d$m=4096,t=3,p=2${salt16}${hash32}\n"
            ),
        ),
        (
            "mosquitto",
            format!(
                "  # imported\nsensor:$7$101$c2FsdHNhbHQ=${b64_64}\nold:$6$c2FsdA==${b64_64}\n"
            ),
        ),
        ("comments-only", "# nothing here\n\n   \n#x".to_string()),
    ];
    for (name, text) in files {
        write(&dir, name, text.as_bytes())?;
    }

    let dir = root.join("acl_parse");
    std::fs::create_dir_all(&dir)?;
    let acls = [
        (
            "mosquitto-style",
            "# anonymous\ntopic read $SYS/#\n\nuser alice smith\ntopic readwrite home/#\n\
             topic deny home/secret\ntopic write sensors/+/temp\npattern write devices/%c/state\n\
             pattern read users/%u/#\n",
        ),
        (
            "default-access",
            "user bob\ntopic a/b\n  topic   read   +/x  \npattern deny %u%c/#\n",
        ),
        ("deny-all", "topic deny #\n"),
    ];
    for (name, text) in acls {
        write(&dir, name, text.as_bytes())?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    decode_seeds(&args.dir, "decode_v311", ProtocolVersion::V311)?;
    decode_seeds(&args.dir, "decode_v5", ProtocolVersion::V5)?;
    session_seeds(&args.dir)?;
    text_seeds(&args.dir)?;
    println!("seeds written under {}", args.dir.display());
    Ok(())
}
