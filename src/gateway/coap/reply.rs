//! Responses: piggybacked on the ACK of a confirmable request, or a non-confirmable message of
//! their own for a non-confirmable one (RFC 7252 section 5.2), with the request's token.

use std::net::SocketAddr;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};

/// What a response answers: enough of the request to address the answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub peer: SocketAddr,
    pub mid: u16,
    pub token: Vec<u8>,
    pub confirmable: bool,
    /// The request's size in bytes: the amplification bound for an unverified address.
    pub size: usize,
    /// The last Block1 block of a block-wise request: its response carries it (RFC 7959 2.3).
    pub block1: Option<super::block::Block>,
}

/// A response before it is encoded.
#[derive(Debug)]
pub struct Response {
    pub code: ResponseType,
    pub options: Vec<(CoapOption, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Response {
    pub fn new(code: ResponseType) -> Self {
        Response {
            code,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// With a diagnostic payload (RFC 7252 section 5.5.2): text for humans, never secrets.
    pub fn why(code: ResponseType, why: &str) -> Self {
        Response {
            payload: why.as_bytes().to_vec(),
            ..Response::new(code)
        }
    }

    pub fn option(mut self, o: CoapOption, v: Vec<u8>) -> Self {
        self.options.push((o, v));
        self
    }

    /// Encodes it for `ex`; `mid`: ours, for a non-confirmable response.
    pub fn encode(&self, ex: &Exchange, mid: u16) -> Vec<u8> {
        let mut p = Packet::new();
        if ex.confirmable {
            p.header.set_type(MessageType::Acknowledgement);
            p.header.message_id = ex.mid;
        } else {
            p.header.set_type(MessageType::NonConfirmable);
            p.header.message_id = mid;
        }
        p.header.code = MessageClass::Response(self.code);
        p.set_token(ex.token.clone());
        for (o, v) in &self.options {
            p.add_option(*o, v.clone());
        }
        if let Some(b) = ex.block1 {
            p.add_option(CoapOption::Block1, b.encode());
        }
        p.payload = self.payload.clone();
        p.to_bytes_unlimited().unwrap_or_default()
    }
}

/// An empty message (ACK or Reset) for message id `mid`.
pub fn empty(kind: MessageType, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.code = MessageClass::Empty;
    p.header.message_id = mid;
    p.to_bytes_unlimited().unwrap_or_default()
}

/// An unsigned integer option value in as few bytes as it needs (0: empty).
pub fn uint(v: u32) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}
