//! A history row read back by `mqttd history` is untrusted input (anyone who can write the file
//! can put anything in it): `HistoryRow::check` over arbitrary field values never panics, a row
//! it accepts writes back as a row that checks to the same message, and printing an accepted
//! message (text and JSON lines) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttd::store::history::HistoryRow;
use mqttd::store::history::output::{json_line, text_line};

/// Takes a length byte and that many bytes.
fn field<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (&len, rest) = data.split_first()?;
    let (value, rest) = rest.split_at_checked(usize::from(len))?;
    *data = rest;
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    // time: 8 bytes; qos, retain: 1 byte each (signed); flags: client id, username, property
    // block present, payload_len off by one; then the topic, the optional fields (a length byte
    // each), and the payload: the rest.
    let Some((head, mut rest)) = data.split_at_checked(11) else {
        return;
    };
    let time = i64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
    let (qos, retain, flags) = (head[8] as i8, head[9] as i8, head[10]);
    let Some(topic) = field(&mut rest) else {
        return;
    };
    let mut optional = |bit: u8| -> Option<Option<Vec<u8>>> {
        if flags & bit == 0 {
            return Some(None);
        }
        field(&mut rest).map(|v| Some(v.to_vec()))
    };
    let (Some(client_id), Some(username), Some(properties)) = (optional(1), optional(2), optional(4))
    else {
        return;
    };
    let payload = rest.to_vec();
    let payload_len = payload.len() as i64 + i64::from(flags >> 3 & 1);
    let row = HistoryRow {
        time,
        topic: topic.to_vec(),
        qos: i64::from(qos),
        retain: i64::from(retain),
        client_id,
        username,
        payload,
        payload_len,
        properties,
    };
    if let Ok(msg) = row.clone().check() {
        let again = msg.to_row();
        assert_eq!(again.time, row.time);
        assert_eq!(again.topic, row.topic);
        assert_eq!(again.qos, row.qos);
        assert_eq!(again.retain, row.retain);
        assert_eq!(again.client_id, row.client_id);
        assert_eq!(again.username, row.username);
        assert_eq!(again.payload, row.payload);
        // The block is re-encoded from the decoded properties: it decodes to the same again.
        let back = again.check().expect("a row it wrote reads back");
        assert_eq!(back, msg);
        let (text, json) = (text_line(&msg), json_line(&msg));
        assert!(!text.contains('\n') && !json.contains('\n'), "one line each");
    }
});
