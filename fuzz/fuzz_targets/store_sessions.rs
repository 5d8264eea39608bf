//! The persistent sessions in a store are untrusted input, like packets: whatever the rows of
//! `sessions`, `subscriptions`, `messages`, `deliveries` and `inbound_qos2` hold (any SQLite
//! type in any column, out-of-range numbers, bad topics, filters and property blocks, rows of
//! no session), reading them back at start-up never panics, and what it accepts is sound.
//!
//! Input: records of one table byte (which table), then one value per column: a tag byte
//! (0 NULL, 1 a small integer, 2 an 8-byte integer, 3 text, 4 blob; text and blob take a length
//! byte and that many bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rusqlite::types::Value;

const TABLES: [(&str, usize); 5] = [
    ("sessions (id, client_id, expiry, username, expires_at, will_topic, will_qos, will_retain, will_payload, will_properties, will_delay, will_at)", 12),
    ("subscriptions (session, filter, options, sub_id)", 4),
    ("messages (id, topic, qos, retain, payload, properties, expires_at)", 7),
    ("deliveries (session, seq, message, qos, retain, sub_ids, shared, packet_id, pubrel)", 9),
    ("inbound_qos2 (session, packet_id)", 2),
];

fn value(data: &mut &[u8]) -> Option<Value> {
    let (&tag, rest) = data.split_first()?;
    *data = rest;
    Some(match tag % 5 {
        0 => Value::Null,
        1 => {
            let (&b, rest) = data.split_first()?;
            *data = rest;
            Value::Integer(i64::from(b as i8))
        }
        2 => {
            let (n, rest) = data.split_at_checked(8)?;
            *data = rest;
            Value::Integer(i64::from_le_bytes(n.try_into().ok()?))
        }
        kind => {
            let (&len, rest) = data.split_first()?;
            let (bytes, rest) = rest.split_at_checked(usize::from(len))?;
            *data = rest;
            if kind == 3 {
                Value::Text(String::from_utf8_lossy(bytes).into_owned())
            } else {
                Value::Blob(bytes.to_vec())
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
    mqttd::store::load_sessions_for_fuzzing(&mut conn).expect("an empty database loads");
    let mut data = data;
    while let Some((&table, rest)) = data.split_first() {
        data = rest;
        let (columns, n) = TABLES[usize::from(table) % TABLES.len()];
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            match value(&mut data) {
                Some(v) => values.push(v),
                None => break,
            }
        }
        if values.len() < n {
            break;
        }
        let marks = vec!["?"; n].join(", ");
        let sql = format!("INSERT OR IGNORE INTO {columns} VALUES ({marks})");
        let _ = conn.execute(&sql, rusqlite::params_from_iter(values));
    }
    let sessions = mqttd::store::load_sessions_for_fuzzing(&mut conn).expect("rows load");
    for s in &sessions {
        // Deliveries in order, each at QoS 1 or 2, each with its message.
        assert!(s.deliveries.windows(2).all(|w| w[0].0.seq < w[1].0.seq));
        for (d, packet_id, _) in &s.deliveries {
            assert!(d.qos != mqttd::protocol::QoS::AtMostOnce);
            assert!(packet_id.is_none_or(|id| id != 0));
        }
    }
    // Tidied: a second load finds the same sessions and nothing more to drop.
    let again = mqttd::store::load_sessions_for_fuzzing(&mut conn).expect("rows load again");
    assert_eq!(again.len(), sessions.len());
});
