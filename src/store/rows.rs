//! Messages as rows, and back. A row read from disk is untrusted input, like a packet: every
//! field is checked (QoS range, topic rules, the property block through the wire's strict
//! decoder), and a bad row is reported and skipped, never a panic (fuzzed: `fuzz/store_row`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::protocol::{self, QoS};
use crate::router::Message;

/// A retained message as its row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedRow {
    pub topic: String,
    pub qos: i64,
    pub payload: Vec<u8>,
    pub properties: Option<Vec<u8>>,
    /// Milliseconds since the Unix epoch.
    pub expires_at: Option<i64>,
}

/// Any stored message (a will, or one queued for sessions): a retained row's fields and its
/// retain flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub topic: String,
    pub qos: i64,
    pub retain: bool,
    pub payload: Vec<u8>,
    pub properties: Option<Vec<u8>>,
    pub expires_at: Option<i64>,
}

impl MessageRow {
    pub fn from_message(msg: &Message) -> MessageRow {
        let r = RetainedRow::from_message(msg);
        MessageRow {
            topic: r.topic,
            qos: r.qos,
            retain: msg.retain,
            payload: r.payload,
            properties: r.properties,
            expires_at: r.expires_at,
        }
    }

    /// The message, checked as [`RetainedRow::into_message`] checks.
    pub fn into_message(self) -> Result<Message, RowError> {
        let retain = self.retain;
        let mut msg = RetainedRow {
            topic: self.topic,
            qos: self.qos,
            payload: self.payload,
            properties: self.properties,
            expires_at: self.expires_at,
        }
        .into_message()?;
        msg.retain = retain;
        Ok(msg)
    }
}

/// A session's will as stored: the message (its properties without the Will Delay Interval,
/// its expiry counted from when it is published) and the delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRow {
    pub message: MessageRow,
    pub delay: u32,
}

/// Subscription identifiers as stored: 4 bytes little-endian each (None: none).
pub fn sub_ids_blob(ids: &[u32]) -> Option<Vec<u8>> {
    (!ids.is_empty()).then(|| ids.iter().flat_map(|id| id.to_le_bytes()).collect())
}

/// Reads [`sub_ids_blob`]'s bytes, each checked (1 to 268,435,455, as on the wire).
pub fn sub_ids_from_blob(blob: Option<&[u8]>) -> Result<Vec<u32>, RowError> {
    let Some(blob) = blob else {
        return Ok(Vec::new());
    };
    if blob.len() % 4 != 0 {
        return Err(RowError::SubscriptionId);
    }
    blob.chunks_exact(4)
        .map(|c| {
            let id = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            (1..=268_435_455)
                .contains(&id)
                .then_some(id)
                .ok_or(RowError::SubscriptionId)
        })
        .collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RowError {
    #[error("QoS {0} is not 0, 1 or 2")]
    Qos(i64),
    #[error("topic is not a valid topic name")]
    Topic,
    #[error("properties: {0}")]
    Properties(String),
    #[error("expiry time out of range")]
    Expiry,
    #[error("subscription identifier out of range")]
    SubscriptionId,
    #[error("{0} out of range")]
    Range(&'static str),
    #[error("topic filter is not valid")]
    Filter,
    #[error("client id or username is not valid")]
    Text,
}

impl RetainedRow {
    pub fn from_message(msg: &Message) -> RetainedRow {
        RetainedRow {
            topic: msg.topic.to_string(),
            qos: msg.qos as i64,
            payload: msg.payload.to_vec(),
            properties: msg
                .properties
                .as_deref()
                .map(|p| protocol::publish_block(Some(p)).to_vec()),
            expires_at: msg.expires_at.map(to_millis),
        }
    }

    /// The message this row holds, checked as a PUBLISH from a client would be.
    pub fn into_message(self) -> Result<Message, RowError> {
        let qos = match self.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            other => return Err(RowError::Qos(other)),
        };
        if protocol::topic::validate_topic_name(&self.topic).is_err() {
            return Err(RowError::Topic);
        }
        let properties = match self.properties {
            None => None,
            Some(block) => protocol::read_publish_block(Bytes::from(block))
                .map_err(|e| RowError::Properties(e.to_string()))?,
        };
        let expires_at = match self.expires_at {
            None => None,
            Some(ms) => Some(from_millis(ms).ok_or(RowError::Expiry)?),
        };
        let mut msg = Message::new(Arc::from(self.topic), Bytes::from(self.payload), qos, true);
        msg.properties = properties;
        msg.expires_at = expires_at;
        Ok(msg)
    }
}

/// Milliseconds since the Unix epoch (0 for times before it, which a deadline never is).
pub fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time `ms` milliseconds after the Unix epoch; `None` if out of range.
pub fn from_millis(ms: i64) -> Option<SystemTime> {
    let ms = u64::try_from(ms).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Properties;

    #[test]
    fn a_message_survives_its_row() {
        let props = Properties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            message_expiry_interval: Some(60),
            ..Properties::default()
        };
        let msg = Message::new(
            "a/b".into(),
            Bytes::from_static(b"hi"),
            QoS::AtLeastOnce,
            true,
        )
        .with_properties(Some(Box::new(props.clone())));
        let back = RetainedRow::from_message(&msg).into_message().unwrap();
        assert_eq!(&*back.topic, "a/b");
        assert_eq!(back.payload, Bytes::from_static(b"hi"));
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert_eq!(back.properties.as_deref(), Some(&props));
        // Stored to the millisecond.
        let (a, b) = (msg.expires_at.unwrap(), back.expires_at.unwrap());
        assert!(a.duration_since(b).unwrap_or_default() < Duration::from_millis(1));
    }

    #[test]
    fn bad_rows_are_errors() {
        let row = RetainedRow {
            topic: "t".into(),
            qos: 1,
            payload: vec![],
            properties: None,
            expires_at: None,
        };
        let bad = |f: &dyn Fn(&mut RetainedRow)| {
            let mut r = row.clone();
            f(&mut r);
            r.into_message().unwrap_err()
        };
        assert_eq!(bad(&|r| r.qos = 3), RowError::Qos(3));
        assert_eq!(bad(&|r| r.topic = "a/#".into()), RowError::Topic);
        assert_eq!(bad(&|r| r.topic = String::new()), RowError::Topic);
        assert_eq!(bad(&|r| r.expires_at = Some(-1)), RowError::Expiry);
        assert!(matches!(
            bad(&|r| r.properties = Some(vec![5, 0x01, 7])),
            RowError::Properties(_)
        ));
        assert!(row.into_message().is_ok());
    }
}
