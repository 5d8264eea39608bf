//! A stored row is untrusted input, like a packet: `RetainedRow::into_message` over arbitrary
//! field values (QoS, topic, property block, expiry, payload) never panics, and a row it accepts
//! is one it writes back identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttd::store::RetainedRow;

fuzz_target!(|data: &[u8]| {
    // qos: 1 byte (signed), expiry: 1 flag + 8 bytes, topic and property block: a length byte
    // each, the payload: the rest.
    let Some((&qos, rest)) = data.split_first() else {
        return;
    };
    let Some((expiry, rest)) = rest.split_at_checked(9) else {
        return;
    };
    let expires_at =
        (expiry[0] & 1 == 1).then(|| i64::from_le_bytes(expiry[1..9].try_into().unwrap_or([0; 8])));
    let Some((&topic_len, rest)) = rest.split_first() else {
        return;
    };
    let Some((topic, rest)) = rest.split_at_checked(usize::from(topic_len)) else {
        return;
    };
    let Some((&props_len, rest)) = rest.split_first() else {
        return;
    };
    let (properties, payload) = match props_len {
        0 => (None, rest),
        n => match rest.split_at_checked(usize::from(n) - 1) {
            Some((p, rest)) => (Some(p.to_vec()), rest),
            None => return,
        },
    };
    let row = RetainedRow {
        topic: String::from_utf8_lossy(topic).into_owned(),
        qos: i64::from(qos as i8),
        payload: payload.to_vec(),
        properties,
        expires_at,
    };
    if let Ok(msg) = row.clone().into_message() {
        let again = RetainedRow::from_message(&msg);
        assert_eq!(again.topic, row.topic);
        assert_eq!(again.qos, row.qos);
        assert_eq!(again.payload, row.payload);
        assert_eq!(again.expires_at, row.expires_at);
        // The block is re-encoded from the decoded properties: it decodes to the same again.
        let back = again.clone().into_message().expect("a row it wrote reads back");
        assert_eq!(back.properties, msg.properties);
    }
});
