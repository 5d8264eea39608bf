//! What the HTTP API parses of a request by itself, beyond axum's extractors: a bulk publish's
//! items (JSON values into publish bodies, their properties checked), the history's cursor and
//! times, and the retained list's payload preview. None panics; a cursor that parses prints back
//! the same; a text preview is a prefix of the payload, at most 64 bytes.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use mqttd::http::api::{history, publish, retained};

fuzz_target!(|data: &[u8]| {
    let (preview, encoding) = retained::preview(data);
    if encoding == "plain" {
        assert!(preview.len() <= retained::PREVIEW_BYTES);
        assert!(data.starts_with(preview.as_bytes()));
    } else {
        assert_eq!(encoding, "base64");
        assert!(preview.len() <= retained::PREVIEW_BYTES.div_ceil(3) * 4);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((time, id)) = history::parse_cursor(text) {
        assert_eq!(history::parse_cursor(&format!("{time}.{id}")), Some((time, id)));
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let _ = mqttd::store::history::time::parse_time(text, now);
    if let Ok(items) = serde_json::from_str::<Vec<serde_json::Value>>(text) {
        for item in items {
            if let Ok(body) = serde_json::from_value::<publish::PublishBody>(item)
                && let Some(properties) = body.properties
            {
                let _ = properties.into_properties();
            }
        }
    }
});
