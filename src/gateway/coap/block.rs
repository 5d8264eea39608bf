//! Block-wise transfers (RFC 7959): the Block1/Block2 option value, Block1 request bodies
//! assembled up to `limits.max_packet_size`, Block2 slices of large responses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A Block1 or Block2 option: block number, "more" flag, size exponent (size = 16 << szx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub num: u32,
    pub more: bool,
    pub szx: u8,
}

impl Block {
    /// Parses an option value (0 to 3 bytes). SZX 7 (BERT) is for CoAP over TCP only: refused.
    pub fn parse(value: &[u8]) -> Option<Block> {
        if value.len() > 3 {
            return None;
        }
        let v = value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let szx = (v & 0x7) as u8;
        (szx < 7).then_some(Block {
            num: v >> 4,
            more: v & 0x8 != 0,
            szx,
        })
    }

    /// The option value, in as few bytes as the number needs.
    pub fn encode(self) -> Vec<u8> {
        let v = (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx);
        let bytes = v.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        bytes[skip..].to_vec()
    }

    pub fn size(self) -> usize {
        16 << self.szx
    }

    /// Where this block starts in the body (None: past what any body here can be).
    pub fn offset(self) -> Option<usize> {
        (self.num as usize).checked_mul(self.size())
    }
}

/// The size exponent of the largest block not over `size` (at least 16 bytes).
pub fn szx_for(size: usize) -> u8 {
    let mut szx = 0u8;
    while szx < 6 && (32usize << szx) <= size {
        szx += 1;
    }
    szx
}

/// One Block2 slice of `body`: the bytes and the option to send with them (None: `block` starts
/// past the end, answered 4.02 per RFC 7959 section 2.2... we answer 4.00).
pub fn slice(body: &[u8], block: Block) -> Option<(&[u8], Block)> {
    let start = block.offset()?;
    if start >= body.len() && !(start == 0 && body.is_empty()) {
        return None;
    }
    let end = start.saturating_add(block.size()).min(body.len());
    let more = end < body.len();
    Some((&body[start..end], Block { more, ..block }))
}

/// Why a Block1 block was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The body would be over the limit: 4.13 with Size1.
    TooLarge,
    /// A block out of order, or none started: 4.08 Request Entity Incomplete.
    Incomplete,
    /// Too many transfers under way: 5.03.
    Busy,
}

/// A Block1 body being received.
#[derive(Debug)]
struct Transfer {
    body: Vec<u8>,
    szx: u8,
    next: u32,
    started: Instant,
}

/// Block1 bodies under way, keyed by source address and request URI (path and query).
#[derive(Debug)]
pub struct Assembler {
    transfers: HashMap<(SocketAddr, String), Transfer>,
    max_body: usize,
    max_transfers: usize,
    lifetime: Duration,
}

/// What a Block1 block gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// More to come: answer 2.31 Continue with this block's option.
    Continue(Block),
    /// The last block: the whole body.
    Done(Vec<u8>),
}

impl Assembler {
    pub fn new(max_body: usize, max_transfers: usize, lifetime: Duration) -> Self {
        Assembler {
            transfers: HashMap::new(),
            max_body,
            max_transfers,
            lifetime,
        }
    }

    /// Takes one block of a request to `uri` from `peer`.
    pub fn add(
        &mut self,
        peer: SocketAddr,
        uri: &str,
        block: Block,
        data: &[u8],
        now: Instant,
    ) -> Result<Assembled, BlockError> {
        let key = (peer, uri.to_owned());
        if block.num == 0 {
            if !self.transfers.contains_key(&key) && self.transfers.len() >= self.max_transfers {
                self.expire(now);
                if self.transfers.len() >= self.max_transfers {
                    return Err(BlockError::Busy);
                }
            }
            self.transfers.insert(
                key.clone(),
                Transfer {
                    body: Vec::new(),
                    szx: block.szx,
                    next: 0,
                    started: now,
                },
            );
        }
        let Some(t) = self.transfers.get_mut(&key) else {
            return Err(BlockError::Incomplete);
        };
        // RFC 7959 2.3: a client may lower the size mid-transfer; the offset must still line up.
        let offset = block.offset().ok_or(BlockError::TooLarge)?;
        if offset != t.body.len() || (block.more && data.len() != block.size()) {
            if block.num + 1 == t.next && block.szx == t.szx {
                // A retransmitted block we already have: acknowledge it again.
                return Ok(Assembled::Continue(block));
            }
            self.transfers.remove(&key);
            return Err(BlockError::Incomplete);
        }
        if t.body.len() + data.len() > self.max_body {
            self.transfers.remove(&key);
            return Err(BlockError::TooLarge);
        }
        t.body.extend_from_slice(data);
        t.next = block.num + 1;
        t.szx = block.szx;
        if block.more {
            return Ok(Assembled::Continue(block));
        }
        let t = self
            .transfers
            .remove(&key)
            .map(|t| t.body)
            .unwrap_or_default();
        Ok(Assembled::Done(t))
    }

    /// Forgets transfers older than the exchange lifetime.
    pub fn expire(&mut self, now: Instant) {
        let lifetime = self.lifetime;
        self.transfers
            .retain(|_, t| now.saturating_duration_since(t.started) < lifetime);
    }

    /// Transfers under way.
    pub fn transfers(&self) -> usize {
        self.transfers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_round_trip() {
        for (num, more, szx) in [
            (0, false, 0),
            (1, true, 6),
            (4095, true, 2),
            (0xF_FFFF, false, 6),
        ] {
            let b = Block { num, more, szx };
            assert_eq!(Block::parse(&b.encode()), Some(b));
        }
        assert_eq!(
            Block::parse(&[]),
            Some(Block {
                num: 0,
                more: false,
                szx: 0
            })
        );
        assert_eq!(Block::parse(&[0x07]), None, "BERT is TCP-only");
        assert_eq!(Block::parse(&[1, 2, 3, 4]), None);
    }

    #[test]
    fn slices_and_sizes() {
        assert_eq!(szx_for(16), 0);
        assert_eq!(szx_for(63), 1);
        assert_eq!(szx_for(1024), 6);
        assert_eq!(szx_for(5000), 6);
        let body = [7u8; 40];
        let (s, b) = slice(
            &body,
            Block {
                num: 0,
                more: false,
                szx: 0,
            },
        )
        .unwrap();
        assert_eq!((s.len(), b.more), (16, true));
        let (s, b) = slice(
            &body,
            Block {
                num: 2,
                more: false,
                szx: 0,
            },
        )
        .unwrap();
        assert_eq!((s.len(), b.more), (8, false));
        assert!(
            slice(
                &body,
                Block {
                    num: 3,
                    more: false,
                    szx: 0
                }
            )
            .is_none()
        );
        assert!(
            slice(
                &[],
                Block {
                    num: 0,
                    more: false,
                    szx: 0
                }
            )
            .is_some()
        );
    }

    #[test]
    fn assembles_in_order_only_and_within_the_limit() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let now = Instant::now();
        let mut a = Assembler::new(40, 2, Duration::from_secs(60));
        let b = |num, more| Block { num, more, szx: 0 };
        assert_eq!(
            a.add(peer, "/x", b(0, true), &[1; 16], now),
            Ok(Assembled::Continue(b(0, true)))
        );
        // A retransmission of block 0 restarts; a repeat of the last block is acknowledged again.
        assert_eq!(
            a.add(peer, "/x", b(1, true), &[2; 16], now),
            Ok(Assembled::Continue(b(1, true)))
        );
        assert_eq!(
            a.add(peer, "/x", b(1, true), &[2; 16], now),
            Ok(Assembled::Continue(b(1, true)))
        );
        assert_eq!(
            a.add(peer, "/x", b(2, false), &[3; 4], now)
                .map(|d| match d {
                    Assembled::Done(body) => body.len(),
                    Assembled::Continue(_) => 0,
                }),
            Ok(36)
        );
        assert_eq!(
            a.add(peer, "/x", b(1, false), &[3; 4], now),
            Err(BlockError::Incomplete)
        );
        a.add(peer, "/y", b(0, true), &[1; 16], now).unwrap();
        a.add(peer, "/y", b(1, true), &[1; 16], now).unwrap();
        assert_eq!(
            a.add(peer, "/y", b(2, true), &[1; 16], now),
            Err(BlockError::TooLarge)
        );
        a.add(peer, "/a", b(0, true), &[1; 16], now).unwrap();
        a.add(peer, "/b", b(0, true), &[1; 16], now).unwrap();
        assert_eq!(
            a.add(peer, "/c", b(0, true), &[1; 16], now),
            Err(BlockError::Busy)
        );
        a.expire(now + Duration::from_secs(61));
        assert_eq!(a.transfers(), 0);
    }
}
