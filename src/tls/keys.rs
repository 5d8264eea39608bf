//! Record keys that give their memory back while a connection is idle.
//!
//! aws-lc keeps an expanded AEAD context per key (the AES key schedule and GHASH table): 592 bytes
//! per direction, held by rustls' record layer for the life of the connection. For an idle TLS
//! connection that is a third of what it costs (measured with massif: BENCHMARKS.md). So the
//! server's cipher suites are aws-lc-rs' own (same key exchange, hashes, HKDF and PRF) with one
//! change, the record protection: its encrypter and decrypter keep the raw key (32 bytes, zeroed
//! when dropped) and build the aws-lc context when a record needs it, keeping it in the
//! connection's [`KeyCache`]. Parking clears that cache ([`KeyCache::clear`]); the first record
//! after it rebuilds the context (about a microsecond, once per wake).
//!
//! The record layout, nonces and additional data are exactly rustls' (`Nonce::new(iv, seq)`,
//! `make_tls13_aad`, `make_tls12_aad`, the TLS 1.2 GCM explicit nonce): the sequence numbers stay
//! rustls', so a nonce is never reused. Interoperability with other TLS stacks is tested for
//! every suite and version (`src/tls/tests.rs`, and every TLS test against real clients).
//!
//! The cache reaches the encrypters rustls makes through [`with_cache`]: the TLS stream drives
//! rustls inside it, and whatever record keys rustls builds meanwhile (at the handshake, at a
//! key update) keep their contexts there. Keys built outside it keep theirs themselves, as
//! aws-lc-rs' own would.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce as AeadNonce, UnboundKey};
use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, KeyBlockShape, MessageDecrypter,
    MessageEncrypter, Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload,
    Tls12AeadAlgorithm, Tls13AeadAlgorithm, UnsupportedOperationError, make_tls12_aad,
    make_tls13_aad,
};
use rustls::{
    CipherSuite, CipherSuiteCommon, ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion,
    SupportedCipherSuite, Tls12CipherSuite, Tls13CipherSuite,
};
use zeroize::Zeroizing;

/// Largest plaintext in a record (RFC 8446 section 5.1).
const MAX_FRAGMENT_LEN: usize = 16 * 1024;
const TAG_LEN: usize = 16;
const GCM_EXPLICIT_NONCE_LEN: usize = 8;

/// One connection's expanded record keys while it is active: one for sealing, one for opening,
/// each tagged with the key it was built from.
#[derive(Default)]
pub struct KeyCache {
    slots: Mutex<[Option<(u64, LessSafeKey)>; 2]>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").finish_non_exhaustive()
    }
}

impl KeyCache {
    /// Drops the expanded contexts (the connection parks); they are rebuilt when next needed.
    pub fn clear(&self) {
        *self.slots.lock() = [None, None];
    }
}

thread_local! {
    /// The cache of the connection whose TLS state this thread is driving (see [`with_cache`]).
    static CURRENT: RefCell<Option<Arc<KeyCache>>> = const { RefCell::new(None) };
}

/// Runs `f` (which drives one connection's rustls state) with `cache` as where the record keys
/// rustls builds meanwhile keep their contexts.
pub fn with_cache<R>(cache: &Arc<KeyCache>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<KeyCache>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace(Arc::clone(cache)));
    let _restore = Restore(previous);
    f()
}

/// Which way a key protects records.
#[derive(Clone, Copy)]
enum Direction {
    Seal = 0,
    Open = 1,
}

/// A raw record key and where its expanded context lives.
struct LazyKey {
    alg: &'static aead::Algorithm,
    key: Zeroizing<[u8; 32]>,
    /// How many bytes of `key` are the key.
    len: usize,
    /// Unique per key: a cache slot holding another key's context is rebuilt.
    id: u64,
    direction: Direction,
    /// The connection's cache; `None` (built outside [`with_cache`]): `own` keeps the context.
    cache: Option<Arc<KeyCache>>,
    own: Option<LessSafeKey>,
}

impl LazyKey {
    fn new(alg: &'static aead::Algorithm, key: &AeadKey, direction: Direction) -> LazyKey {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        // rustls hands over exactly the suite's key length; anything else fails at `expand`
        // (an error for that record), never here.
        let mut raw = Zeroizing::new([0u8; 32]);
        let bytes = key.as_ref();
        let len = bytes.len().min(raw.len());
        raw[..len].copy_from_slice(&bytes[..len]);
        LazyKey {
            alg,
            key: raw,
            len,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            direction,
            cache: CURRENT.with(|c| c.borrow().clone()),
            own: None,
        }
    }

    fn expand(&self) -> Result<LessSafeKey, Error> {
        UnboundKey::new(self.alg, &self.key[..self.len])
            .map(LessSafeKey::new)
            .map_err(|_| Error::General("bad record key length".into()))
    }

    /// Runs `f` with the expanded key, building it if the cache lost it.
    fn with<R>(&mut self, f: impl FnOnce(&LessSafeKey) -> R) -> Result<R, Error> {
        match &self.cache {
            Some(cache) => {
                let mut slots = cache.slots.lock();
                let slot = &mut slots[self.direction as usize];
                match slot {
                    Some((id, key)) if *id == self.id => Ok(f(key)),
                    _ => {
                        let key = self.expand()?;
                        let result = f(&key);
                        *slot = Some((self.id, key));
                        Ok(result)
                    }
                }
            }
            None => {
                if self.own.is_none() {
                    self.own = Some(self.expand()?);
                }
                match &self.own {
                    Some(key) => Ok(f(key)),
                    None => Err(Error::EncryptError),
                }
            }
        }
    }
}

// ---- TLS 1.3 ---------------------------------------------------------------------------------

struct Tls13Aead(&'static aead::Algorithm);

impl Tls13AeadAlgorithm for Tls13Aead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Tls13Sealer {
            key: LazyKey::new(self.0, &key, Direction::Seal),
            iv,
        })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Tls13Opener {
            key: LazyKey::new(self.0, &key, Direction::Open),
            iv,
        })
    }

    fn key_len(&self) -> usize {
        self.0.key_len()
    }

    /// Not offered (kTLS is not used).
    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Err(UnsupportedOperationError)
    }
}

struct Tls13Sealer {
    key: LazyKey,
    iv: Iv,
}

impl MessageEncrypter for Tls13Sealer {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        let nonce = AeadNonce::assume_unique_for_key(Nonce::new(&self.iv, seq).0);
        let aad = Aad::from(make_tls13_aad(total_len));
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        self.key
            .with(|key| key.seal_in_place_append_tag(nonce, aad, &mut payload))?
            .map_err(|_| Error::EncryptError)?;
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

struct Tls13Opener {
    key: LazyKey,
    iv: Iv,
}

impl MessageDecrypter for Tls13Opener {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let nonce = AeadNonce::assume_unique_for_key(Nonce::new(&self.iv, seq).0);
        let aad = Aad::from(make_tls13_aad(payload.len()));
        let plain_len = self
            .key
            .with(|key| key.open_in_place(nonce, aad, payload).map(|p| p.len()))?
            .map_err(|_| Error::DecryptError)?;
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

// ---- TLS 1.2 ---------------------------------------------------------------------------------

/// A TLS 1.2 record's nonce (the IV xor the sequence number), additional data, and a buffer for
/// its `total_len` bytes.
fn tls12_record(
    iv: &Iv,
    seq: u64,
    msg: &OutboundPlainMessage<'_>,
    total_len: usize,
) -> (AeadNonce, Aad<[u8; 13]>, PrefixedPayload) {
    let nonce = AeadNonce::assume_unique_for_key(Nonce::new(iv, seq).0);
    let aad = Aad::from(make_tls12_aad(seq, msg.typ, msg.version, msg.payload.len()));
    (nonce, aad, PrefixedPayload::with_capacity(total_len))
}

/// AES-GCM (RFC 5288): a 4-byte salt from the key block, an 8-byte explicit nonce per record.
struct Tls12Gcm(&'static aead::Algorithm);

impl Tls12AeadAlgorithm for Tls12Gcm {
    fn encrypter(&self, key: AeadKey, iv: &[u8], extra: &[u8]) -> Box<dyn MessageEncrypter> {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(iv);
        nonce[4..].copy_from_slice(extra);
        Box::new(Tls12GcmSealer {
            key: LazyKey::new(self.0, &key, Direction::Seal),
            iv: Iv::new(nonce),
        })
    }

    fn decrypter(&self, key: AeadKey, iv: &[u8]) -> Box<dyn MessageDecrypter> {
        let mut salt = [0u8; 4];
        salt.copy_from_slice(iv);
        Box::new(Tls12GcmOpener {
            key: LazyKey::new(self.0, &key, Direction::Open),
            salt,
        })
    }

    fn key_block_shape(&self) -> KeyBlockShape {
        KeyBlockShape {
            enc_key_len: self.0.key_len(),
            fixed_iv_len: 4,
            explicit_nonce_len: GCM_EXPLICIT_NONCE_LEN,
        }
    }

    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: &[u8],
        _explicit: &[u8],
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Err(UnsupportedOperationError)
    }
}

struct Tls12GcmSealer {
    key: LazyKey,
    iv: Iv,
}

impl MessageEncrypter for Tls12GcmSealer {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let (nonce, aad, mut payload) = tls12_record(&self.iv, seq, &msg, total_len);
        payload.extend_from_slice(&nonce.as_ref()[4..]);
        payload.extend_from_chunks(&msg.payload);
        let tag = self
            .key
            .with(|key| {
                key.seal_in_place_separate_tag(
                    nonce,
                    aad,
                    &mut payload.as_mut()[GCM_EXPLICIT_NONCE_LEN..],
                )
            })?
            .map_err(|_| Error::EncryptError)?;
        payload.extend_from_slice(tag.as_ref());
        Ok(OutboundOpaqueMessage::new(msg.typ, msg.version, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + GCM_EXPLICIT_NONCE_LEN + TAG_LEN
    }
}

struct Tls12GcmOpener {
    key: LazyKey,
    salt: [u8; 4],
}

impl MessageDecrypter for Tls12GcmOpener {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &msg.payload;
        if payload.len() < GCM_EXPLICIT_NONCE_LEN + TAG_LEN {
            return Err(Error::DecryptError);
        }
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.salt);
        nonce[4..].copy_from_slice(&payload[..GCM_EXPLICIT_NONCE_LEN]);
        let nonce = AeadNonce::assume_unique_for_key(nonce);
        let aad = Aad::from(make_tls12_aad(
            seq,
            msg.typ,
            msg.version,
            payload.len() - GCM_EXPLICIT_NONCE_LEN - TAG_LEN,
        ));
        let payload = &mut msg.payload;
        let plain_len = self
            .key
            .with(|key| {
                key.open_in_place(nonce, aad, &mut payload[GCM_EXPLICIT_NONCE_LEN..])
                    .map(|p| p.len())
            })?
            .map_err(|_| Error::DecryptError)?;
        if plain_len > MAX_FRAGMENT_LEN {
            return Err(Error::PeerSentOversizedRecord);
        }
        Ok(
            msg.into_plain_message_range(
                GCM_EXPLICIT_NONCE_LEN..GCM_EXPLICIT_NONCE_LEN + plain_len,
            ),
        )
    }
}

/// ChaCha20-Poly1305 (RFC 7905): the nonce is the 12-byte IV xor the sequence number.
struct Tls12ChaCha;

impl Tls12AeadAlgorithm for Tls12ChaCha {
    fn encrypter(&self, key: AeadKey, iv: &[u8], _extra: &[u8]) -> Box<dyn MessageEncrypter> {
        Box::new(Tls12ChaChaSealer {
            key: LazyKey::new(&aead::CHACHA20_POLY1305, &key, Direction::Seal),
            iv: Iv::copy(iv),
        })
    }

    fn decrypter(&self, key: AeadKey, iv: &[u8]) -> Box<dyn MessageDecrypter> {
        Box::new(Tls12ChaChaOpener {
            key: LazyKey::new(&aead::CHACHA20_POLY1305, &key, Direction::Open),
            iv: Iv::copy(iv),
        })
    }

    fn key_block_shape(&self) -> KeyBlockShape {
        KeyBlockShape {
            enc_key_len: 32,
            fixed_iv_len: 12,
            explicit_nonce_len: 0,
        }
    }

    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: &[u8],
        _explicit: &[u8],
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Err(UnsupportedOperationError)
    }
}

struct Tls12ChaChaSealer {
    key: LazyKey,
    iv: Iv,
}

impl MessageEncrypter for Tls12ChaChaSealer {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let (nonce, aad, mut payload) = tls12_record(&self.iv, seq, &msg, total_len);
        payload.extend_from_chunks(&msg.payload);
        self.key
            .with(|key| key.seal_in_place_append_tag(nonce, aad, &mut payload))?
            .map_err(|_| Error::EncryptError)?;
        Ok(OutboundOpaqueMessage::new(msg.typ, msg.version, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + TAG_LEN
    }
}

struct Tls12ChaChaOpener {
    key: LazyKey,
    iv: Iv,
}

impl MessageDecrypter for Tls12ChaChaOpener {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &msg.payload;
        if payload.len() < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let nonce = AeadNonce::assume_unique_for_key(Nonce::new(&self.iv, seq).0);
        let aad = Aad::from(make_tls12_aad(
            seq,
            msg.typ,
            msg.version,
            payload.len() - TAG_LEN,
        ));
        let payload = &mut msg.payload;
        let plain_len = self
            .key
            .with(|key| key.open_in_place(nonce, aad, payload).map(|p| p.len()))?
            .map_err(|_| Error::DecryptError)?;
        if plain_len > MAX_FRAGMENT_LEN {
            return Err(Error::PeerSentOversizedRecord);
        }
        payload.truncate(plain_len);
        Ok(msg.into_plain_message())
    }
}

// ---- the suites ------------------------------------------------------------------------------

static TLS13_AES_128_GCM: Tls13Aead = Tls13Aead(&aead::AES_128_GCM);
static TLS13_AES_256_GCM: Tls13Aead = Tls13Aead(&aead::AES_256_GCM);
static TLS13_CHACHA: Tls13Aead = Tls13Aead(&aead::CHACHA20_POLY1305);
static TLS12_AES_128_GCM: Tls12Gcm = Tls12Gcm(&aead::AES_128_GCM);
static TLS12_AES_256_GCM: Tls12Gcm = Tls12Gcm(&aead::AES_256_GCM);
static TLS12_CHACHA: Tls12ChaCha = Tls12ChaCha;

/// `provider` with each cipher suite's record protection replaced by the lazy one (same
/// algorithm); a suite this module does not know is dropped rather than served with keys that
/// cannot be released.
pub fn lazy_record_keys(mut provider: CryptoProvider) -> CryptoProvider {
    provider.cipher_suites = provider
        .cipher_suites
        .iter()
        .filter_map(|suite| lazy_suite(*suite))
        .collect();
    provider
}

/// The lazy twin of `suite`, made once per suite for the life of the process.
fn lazy_suite(suite: SupportedCipherSuite) -> Option<SupportedCipherSuite> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static MADE: OnceLock<Mutex<HashMap<u16, SupportedCipherSuite>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    let id = u16::from(suite.suite());
    if let Some(twin) = made.lock().get(&id) {
        return Some(*twin);
    }
    let common = |c: &CipherSuiteCommon| CipherSuiteCommon {
        suite: c.suite,
        hash_provider: c.hash_provider,
        confidentiality_limit: c.confidentiality_limit,
    };
    let twin = match suite {
        SupportedCipherSuite::Tls13(s) => {
            let aead_alg: &'static dyn Tls13AeadAlgorithm = match s.common.suite {
                CipherSuite::TLS13_AES_128_GCM_SHA256 => &TLS13_AES_128_GCM,
                CipherSuite::TLS13_AES_256_GCM_SHA384 => &TLS13_AES_256_GCM,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => &TLS13_CHACHA,
                _ => return None,
            };
            SupportedCipherSuite::Tls13(Box::leak(Box::new(Tls13CipherSuite {
                common: common(&s.common),
                hkdf_provider: s.hkdf_provider,
                aead_alg,
                quic: None,
            })))
        }
        SupportedCipherSuite::Tls12(s) => {
            let aead_alg: &'static dyn Tls12AeadAlgorithm = match s.common.suite {
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => &TLS12_AES_128_GCM,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => &TLS12_AES_256_GCM,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => &TLS12_CHACHA,
                _ => return None,
            };
            SupportedCipherSuite::Tls12(Box::leak(Box::new(Tls12CipherSuite {
                common: common(&s.common),
                prf_provider: s.prf_provider,
                kx: s.kx,
                sign: s.sign,
                aead_alg,
            })))
        }
    };
    made.lock().insert(id, twin);
    Some(twin)
}
