//! How `mqttd history` prints a message: one line of text for people, or one JSON object per
//! line (`--json`) for programs.
//!
//! Text lines are safe to print on a terminal: topic, client id, username and payload go through
//! [`crate::protocol::text::cut_to`] (control and bidirectional characters escaped, long values
//! cut and marked); a payload that is not UTF-8 is shown as `hex:` and its first bytes. JSON
//! lines carry everything whole: the payload as text if it is UTF-8, else base64
//! (`"payload_encoding"` says which), and the 5.0 properties that travel with a message.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::rows::Recorded;
use super::time::format_rfc3339;
use crate::protocol::{Properties, text};

/// Bytes of a UTF-8 payload shown on a text line.
pub const PAYLOAD_SHOWN: usize = 200;
/// Bytes of a binary payload shown (as hex) on a text line.
pub const BINARY_SHOWN: usize = 48;

/// `2025-01-31T12:00:00.123Z sensors/t qos=1 retain=0 client=dev1 user=alice "21.5"`.
pub fn text_line(m: &Recorded) -> String {
    let mut line = format!(
        "{} {} qos={} retain={} client={}",
        format_rfc3339(m.time),
        text::cut(&m.topic),
        m.qos as u8,
        u8::from(m.retain),
        m.client_id
            .as_deref()
            .map_or("-".into(), |c| text::cut_to(c, 64).to_string()),
    );
    if let Some(user) = &m.username {
        let _ = write!(line, " user={}", text::cut_to(user, 64));
    }
    match std::str::from_utf8(&m.payload) {
        Ok(s) => {
            let _ = write!(line, " \"{}\"", text::cut_to(s, PAYLOAD_SHOWN));
        }
        Err(_) => {
            line.push_str(" hex:");
            for b in m.payload.iter().take(BINARY_SHOWN) {
                let _ = write!(line, "{b:02x}");
            }
            if m.payload.len() > BINARY_SHOWN {
                let _ = write!(line, "…(+{} bytes)", m.payload.len() - BINARY_SHOWN);
            }
        }
    }
    line
}

/// The message as one JSON object (no trailing newline).
pub fn json_line(m: &Recorded) -> String {
    let mut out = String::with_capacity(128 + m.payload.len());
    out.push_str("{\"time\":");
    json_str(&mut out, &format_rfc3339(m.time));
    let _ = write!(out, ",\"time_ms\":{},\"topic\":", m.time);
    json_str(&mut out, &m.topic);
    let _ = write!(
        out,
        ",\"qos\":{},\"retain\":{},\"client_id\":",
        m.qos as u8, m.retain
    );
    json_opt(&mut out, m.client_id.as_deref());
    out.push_str(",\"username\":");
    json_opt(&mut out, m.username.as_deref());
    let _ = write!(out, ",\"payload_len\":{},\"payload\":", m.payload.len());
    match std::str::from_utf8(&m.payload) {
        Ok(s) => {
            json_str(&mut out, s);
            out.push_str(",\"payload_encoding\":\"utf8\"");
        }
        Err(_) => {
            json_str(&mut out, &BASE64.encode(&m.payload));
            out.push_str(",\"payload_encoding\":\"base64\"");
        }
    }
    out.push_str(",\"properties\":");
    match &m.properties {
        None => out.push_str("null"),
        Some(p) => json_properties(&mut out, p),
    }
    out.push('}');
    out
}

/// The properties a PUBLISH carries to its subscribers, those set.
fn json_properties(out: &mut String, p: &Properties) {
    let mut fields = Vec::new();
    if let Some(v) = p.payload_format_indicator {
        fields.push(format!("\"payload_format_indicator\":{v}"));
    }
    if let Some(v) = p.message_expiry_interval {
        fields.push(format!("\"message_expiry_interval\":{v}"));
    }
    for (name, value) in [
        ("content_type", &p.content_type),
        ("response_topic", &p.response_topic),
    ] {
        if let Some(v) = value {
            let mut s = format!("\"{name}\":");
            json_str(&mut s, v);
            fields.push(s);
        }
    }
    if let Some(v) = &p.correlation_data {
        let mut s = "\"correlation_data\":".to_owned();
        json_str(&mut s, &BASE64.encode(v));
        fields.push(s);
    }
    if !p.user_properties.is_empty() {
        let mut s = "\"user_properties\":[".to_owned();
        for (i, (k, v)) in p.user_properties.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('[');
            json_str(&mut s, k);
            s.push(',');
            json_str(&mut s, v);
            s.push(']');
        }
        s.push(']');
        fields.push(s);
    }
    out.push('{');
    out.push_str(&fields.join(","));
    out.push('}');
}

fn json_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

/// `s` as a JSON string (RFC 8259: `"`, `\` and control characters escaped).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use bytes::Bytes;

    fn msg(payload: &[u8]) -> Recorded {
        Recorded {
            time: 951_827_696_789,
            topic: "a/b".into(),
            qos: QoS::AtLeastOnce,
            retain: true,
            client_id: Some("dev\n1".into()),
            username: None,
            payload: Bytes::copy_from_slice(payload),
            properties: None,
        }
    }

    #[test]
    fn text_lines() {
        assert_eq!(
            text_line(&msg(b"say \"hi\"\n")),
            r#"2000-02-29T12:34:56.789Z a/b qos=1 retain=1 client=dev\n1 "say \"hi\"\n""#
        );
        let mut m = msg(&[0, 0xff, 0x10]);
        m.client_id = None;
        m.username = Some("alice".into());
        assert_eq!(
            text_line(&m),
            "2000-02-29T12:34:56.789Z a/b qos=1 retain=1 client=- user=alice hex:00ff10"
        );
        let long = text_line(&msg(&[0xff; 100]));
        assert!(long.ends_with("ff…(+52 bytes)"), "{long}");
        let long = text_line(&msg("x".repeat(1000).as_bytes()));
        assert!(long.len() < 350, "{long}");
        assert!(long.contains("bytes)"), "{long}");
    }

    #[test]
    fn json_lines() {
        let mut m = msg(b"{\"c\":1}\t\x01");
        m.properties = Some(Box::new(Properties {
            content_type: Some("application/json".into()),
            correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
            user_properties: vec![("k".into(), "v\"".into())],
            message_expiry_interval: Some(60),
            ..Properties::default()
        }));
        assert_eq!(
            json_line(&m),
            concat!(
                r#"{"time":"2000-02-29T12:34:56.789Z","time_ms":951827696789,"topic":"a/b","#,
                r#""qos":1,"retain":true,"client_id":"dev\n1","username":null,"payload_len":9,"#,
                r#""payload":"{\"c\":1}\t\u0001","payload_encoding":"utf8","properties":"#,
                r#"{"message_expiry_interval":60,"content_type":"application/json","#,
                r#""correlation_data":"AQID","user_properties":[["k","v\""]]}}"#
            )
        );
        let b = json_line(&msg(&[0xff, 0]));
        assert!(
            b.contains(r#""payload":"/wA=","payload_encoding":"base64""#),
            "{b}"
        );
    }
}
