//! A WebSocket upgrade request is hostile input: parsing it (`transport::ws::parse_request`),
//! checking it against a listener's settings (`check`) and reading X-Forwarded-For
//! (`forwarded_client`) never panic; a request that passes has a 16-byte key, an MQTT
//! subprotocol and the listener's path; a refusal names an HTTP error status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttd::transport::ws::{WsOptions, check, forwarded_client, parse_request};

fuzz_target!(|data: &[u8]| {
    let options = WsOptions {
        path: "/mqtt".into(),
        origins: Some(vec!["https://app.example.com".into()]),
        trusted: vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
        max_frame: 1 << 20,
    };
    let request = match parse_request(data) {
        Ok(Some((request, used))) => {
            assert!(used <= data.len());
            request
        }
        Ok(None) => return,
        Err(refusal) => {
            assert!((400..500).contains(&refusal.status));
            return;
        }
    };
    match check(&request, &options) {
        Ok(protocol) => {
            assert!(protocol == "mqtt" || protocol == "mqttv3.1");
            assert_eq!(request.path, "/mqtt");
            assert!(request.key.is_some());
        }
        Err(refusal) => assert!((400..500).contains(&refusal.status)),
    }
    let peer = std::net::IpAddr::from([127, 0, 0, 1]);
    if let Some(ip) = forwarded_client(peer, request.forwarded_for.as_deref(), &options.trusted) {
        assert!(request.forwarded_for.is_some());
        let _ = ip;
    }
});
