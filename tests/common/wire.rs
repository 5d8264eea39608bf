//! Hand-assembled packets (including the malformed ones our encoder refuses to produce) and a few
//! raw-client steps that assert exact broker answers. Method names are distinct from the other
//! `RawClient` helpers so both sets can live side by side.

use std::net::SocketAddr;

use bytes::Bytes;
use mqttd::protocol::{
    Connect, Packet, PubResp, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

use super::{RawClient, WAIT, wire_codes};

/// A Variable Byte Integer, as in the fixed header's remaining length.
pub fn varint(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return out;
        }
    }
}

/// A whole packet: `first` byte, the remaining length of `body`, then `body` (whatever it holds).
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field; the bytes are not checked, on purpose.
pub fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A CONNECT: protocol `name`, `level`, connect `flags`, `keep_alive`, then `payload` as given.
pub fn connect_bytes(
    name: &[u8],
    level: u8,
    flags: u8,
    keep_alive: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = string(name);
    body.push(level);
    body.push(flags);
    body.extend(keep_alive.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x10, &body)
}

/// A valid MQTT 3.1.1 CONNECT with clean session, keep alive 60 and `client_id`.
pub fn connect_311(client_id: &str) -> Vec<u8> {
    connect_bytes(b"MQTT", 4, 0x02, 60, &string(client_id.as_bytes()))
}

impl RawClient {
    /// Connects (TCP only) with a small receive buffer, so a client that stops reading backs the
    /// broker up after a few kilobytes instead of the kernel's megabytes.
    pub async fn connect_small_rcvbuf(addr: SocketAddr, bytes: u32) -> RawClient {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        RawClient::from_stream(stream)
    }

    /// Connects with `connect` (any fields) and asserts CONNACK 0.
    pub async fn connected_with(addr: SocketAddr, connect: Connect) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        c.send(&Packet::Connect(Box::new(connect))).await;
        c.expect_connack(0).await;
        c
    }

    /// Asserts the next packet is a CONNACK with `code` and session present = 0.
    pub async fn expect_connack(&mut self, code: u8) {
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(self.wire_code(&ack), code, "CONNACK code");
                assert!(!ack.session_present, "session present");
            }
            other => panic!("expected CONNACK {code:#04x}, got {other:?}"),
        }
    }

    /// Asserts the next packet is a (5.0) DISCONNECT with `reason`; properties such as the
    /// Reason String are informational and not compared.
    pub async fn expect_disconnect_reason(&mut self, reason: u8) {
        match self.recv().await {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(u8::from(d.reason), reason, "DISCONNECT reason")
            }
            other => panic!("expected DISCONNECT {reason:#04x}, got {other:?}"),
        }
    }

    /// Asserts the broker closes the connection within `WAIT` without sending anything first.
    pub async fn expect_eof(&mut self) {
        match self.recv_within(WAIT).await {
            Ok(None) => {}
            Ok(Some(p)) => panic!("expected the connection to close, got {p:?}"),
            Err(()) => panic!("broker did not close the connection"),
        }
    }

    /// Closes our write side (TCP FIN) while still reading.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown write");
    }

    /// Sends PINGREQ and asserts the very next packet is PINGRESP.
    pub async fn pingpong(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Some(Packet::PingResp) => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// Sends one SUBSCRIBE with `filters` and returns the SUBACK return codes.
    pub async fn suback_codes(&mut self, packet_id: u16, filters: &[(&str, QoS)]) -> Vec<u8> {
        let filters = filters
            .iter()
            .map(|(f, qos)| SubscribeFilter {
                filter: (*f).into(),
                options: SubscriptionOptions::new(*qos),
            })
            .collect();
        let sub = Subscribe {
            packet_id,
            filters,
            properties: None,
        };
        self.send(&Packet::Subscribe(sub)).await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => {
                assert_eq!(ack.packet_id, packet_id, "SUBACK packet id");
                wire_codes(&ack.return_codes)
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Sends a PUBLISH; for QoS 1 waits for the matching PUBACK (nothing else may come first).
    pub async fn publish_raw(&mut self, topic: &str, payload: &[u8], qos: QoS, packet_id: u16) {
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
            payload: Bytes::copy_from_slice(payload),
            properties: None,
        };
        self.send(&Packet::Publish(p)).await;
        if qos == QoS::AtLeastOnce {
            match self.recv().await {
                Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, packet_id, "PUBACK id"),
                other => panic!("expected PUBACK {packet_id}, got {other:?}"),
            }
        }
    }

    /// Asserts the next packet is a PUBLISH and returns it, without acknowledging it.
    pub async fn take_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub async fn puback(&mut self, packet_id: u16) {
        self.send(&Packet::PubAck(PubResp::new(packet_id))).await;
    }
}
