//! History rows as `mqttd history` reads them back: untrusted input, like a packet. Anyone who
//! can write the file (or a disk error) can put anything in any column, so each field is
//! checked for its type and range (the topic against the topic rules, the property block
//! through the wire's strict decoder) and a bad row is reported and skipped, never a panic
//! (fuzzed: `fuzz/history_row`).

use bytes::Bytes;
use rusqlite::types::ValueRef;

use crate::protocol::{self, Properties, QoS};

/// The latest time a row may hold: 9999-12-31T23:59:59.999Z (RFC 3339 has four-digit years).
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// The columns `mqttd history` reads (see [`HistoryRow::read`]).
pub const COLUMNS: &str =
    "time, topic, qos, retain, client_id, username, payload, payload_len, properties";

/// A row of `messages` as stored, unchecked. Text columns are bytes here: a row written by
/// something else may hold anything in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub time: i64,
    pub topic: Vec<u8>,
    pub qos: i64,
    pub retain: i64,
    pub client_id: Option<Vec<u8>>,
    pub username: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub payload_len: i64,
    pub properties: Option<Vec<u8>>,
}

/// A recorded message, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Milliseconds since the Unix epoch, 0 ..= [`MAX_TIME_MS`].
    pub time: i64,
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub payload: Bytes,
    pub properties: Option<Box<Properties>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("column {0} has the wrong type")]
    Type(&'static str),
    #[error("time {0} is out of range")]
    Time(i64),
    #[error("QoS {0} is not 0, 1 or 2")]
    Qos(i64),
    #[error("retain {0} is not 0 or 1")]
    Retain(i64),
    #[error("topic: {0}")]
    Topic(&'static str),
    #[error("{0} is not UTF-8")]
    Text(&'static str),
    #[error("payload_len {stored} but the payload has {actual} bytes")]
    PayloadLen { stored: i64, actual: usize },
    #[error("properties: {0}")]
    Properties(String),
}

impl HistoryRow {
    /// The row `r` of a `SELECT` of [`COLUMNS`] (found by name), whatever types they hold.
    pub fn read(r: &rusqlite::Row<'_>) -> Result<HistoryRow, RowError> {
        let get = |name: &'static str| r.get_ref(name).map_err(|_| RowError::Type(name));
        Ok(HistoryRow {
            time: integer(get("time")?, "time")?,
            topic: bytes(get("topic")?, "topic")?,
            qos: integer(get("qos")?, "qos")?,
            retain: integer(get("retain")?, "retain")?,
            client_id: nullable(get("client_id")?, "client_id")?,
            username: nullable(get("username")?, "username")?,
            payload: bytes(get("payload")?, "payload")?,
            payload_len: integer(get("payload_len")?, "payload_len")?,
            properties: nullable(get("properties")?, "properties")?,
        })
    }

    /// The message this row holds, every field checked.
    pub fn check(self) -> Result<Recorded, RowError> {
        if !(0..=MAX_TIME_MS).contains(&self.time) {
            return Err(RowError::Time(self.time));
        }
        let qos = match self.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            other => return Err(RowError::Qos(other)),
        };
        let retain = match self.retain {
            0 => false,
            1 => true,
            other => return Err(RowError::Retain(other)),
        };
        let topic = String::from_utf8(self.topic).map_err(|_| RowError::Text("topic"))?;
        protocol::topic::validate_topic_name(&topic).map_err(RowError::Topic)?;
        let text = |v: Option<Vec<u8>>, name| {
            v.map(|b| String::from_utf8(b).map_err(|_| RowError::Text(name)))
                .transpose()
        };
        let client_id = text(self.client_id, "client_id")?;
        let username = text(self.username, "username")?;
        if usize::try_from(self.payload_len).ok() != Some(self.payload.len()) {
            return Err(RowError::PayloadLen {
                stored: self.payload_len,
                actual: self.payload.len(),
            });
        }
        let properties = match self.properties {
            None => None,
            Some(block) => protocol::read_publish_block(Bytes::from(block))
                .map_err(|e| RowError::Properties(e.to_string()))?,
        };
        Ok(Recorded {
            time: self.time,
            topic,
            qos,
            retain,
            client_id,
            username,
            payload: Bytes::from(self.payload),
            properties,
        })
    }
}

impl Recorded {
    /// The row the recorder writes for this message (tests and the fuzz target check that it
    /// reads back the same).
    pub fn to_row(&self) -> HistoryRow {
        HistoryRow {
            time: self.time,
            topic: self.topic.clone().into_bytes(),
            qos: self.qos as i64,
            retain: i64::from(self.retain),
            client_id: self.client_id.clone().map(String::into_bytes),
            username: self.username.clone().map(String::into_bytes),
            payload: self.payload.to_vec(),
            payload_len: self.payload.len() as i64,
            properties: properties_block(self.properties.as_deref()),
        }
    }
}

/// The `properties` column for a message's properties (NULL: none).
pub fn properties_block(p: Option<&Properties>) -> Option<Vec<u8>> {
    p.map(|p| protocol::publish_block(Some(p)).to_vec())
}

fn integer(v: ValueRef<'_>, name: &'static str) -> Result<i64, RowError> {
    match v {
        ValueRef::Integer(i) => Ok(i),
        _ => Err(RowError::Type(name)),
    }
}

/// TEXT or BLOB (an `INSERT` by hand may give either), as bytes.
fn bytes(v: ValueRef<'_>, name: &'static str) -> Result<Vec<u8>, RowError> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => Ok(b.to_vec()),
        _ => Err(RowError::Type(name)),
    }
}

fn nullable(v: ValueRef<'_>, name: &'static str) -> Result<Option<Vec<u8>>, RowError> {
    match v {
        ValueRef::Null => Ok(None),
        v => bytes(v, name).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> HistoryRow {
        HistoryRow {
            time: 1_700_000_000_000,
            topic: b"a/b".to_vec(),
            qos: 1,
            retain: 0,
            client_id: Some(b"dev1".to_vec()),
            username: None,
            payload: b"hi".to_vec(),
            payload_len: 2,
            properties: None,
        }
    }

    #[test]
    fn a_message_survives_its_row() {
        let props = Properties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            message_expiry_interval: Some(60),
            ..Properties::default()
        };
        let mut row = good();
        row.properties = properties_block(Some(&props));
        let rec = row.clone().check().unwrap();
        assert_eq!(rec.topic, "a/b");
        assert_eq!(rec.qos, QoS::AtLeastOnce);
        assert_eq!(rec.client_id.as_deref(), Some("dev1"));
        assert_eq!(rec.properties.as_deref(), Some(&props));
        assert_eq!(rec.to_row(), row);
    }

    #[test]
    fn bad_rows_are_errors() {
        let bad = |f: &dyn Fn(&mut HistoryRow)| {
            let mut r = good();
            f(&mut r);
            r.check().unwrap_err()
        };
        assert_eq!(bad(&|r| r.time = -1), RowError::Time(-1));
        assert_eq!(
            bad(&|r| r.time = MAX_TIME_MS + 1),
            RowError::Time(MAX_TIME_MS + 1)
        );
        assert_eq!(bad(&|r| r.qos = 3), RowError::Qos(3));
        assert_eq!(bad(&|r| r.retain = 2), RowError::Retain(2));
        assert!(matches!(
            bad(&|r| r.topic = b"a/#".to_vec()),
            RowError::Topic(_)
        ));
        assert!(matches!(bad(&|r| r.topic = Vec::new()), RowError::Topic(_)));
        assert_eq!(bad(&|r| r.topic = vec![0xff]), RowError::Text("topic"));
        assert_eq!(
            bad(&|r| r.client_id = Some(vec![0xc3])),
            RowError::Text("client_id")
        );
        assert_eq!(
            bad(&|r| r.payload_len = 3),
            RowError::PayloadLen {
                stored: 3,
                actual: 2
            }
        );
        assert!(matches!(
            bad(&|r| r.properties = Some(vec![5, 0x01, 7])),
            RowError::Properties(_)
        ));
        assert!(good().check().is_ok());
    }
}
