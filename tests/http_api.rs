//! The HTTP API end to end: a broker with `[http]` on 127.0.0.1:0, driven by reqwest and by real
//! MQTT clients. Roles, 401 / 403 / 429, publishing through the ingress (ACL included), the
//! clients list, disconnecting a 5.0 client (DISCONNECT 0x98), `/metrics` parsed as Prometheus
//! parses it, HTTPS, and the default run's listener stepping aside when its port is taken.

mod common;

use std::net::SocketAddr;

use base64::Engine as _;
use common::api::{
    ALICE, As, BOB, add_key, assert_error, client, delete, get, http, open_with, post, sample,
    scrape, secured,
};
use common::{RawClient, TestBroker, WAIT, config, eventually, login_packet, try_login};
use mqttd::auth::apikeys::{ApiKeyFile, Role};
use mqttd::config::HttpConfig;
use mqttd::protocol::{Connect, Properties, QoS};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn healthz_is_open_and_the_rest_needs_credentials() {
    let s = secured(None, |_, _| {}).await;
    let resp = client()
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for path in [
        "/api/v1/stats",
        "/api/v1/clients",
        "/metrics",
        "/api/v1/clients/x",
    ] {
        let resp = client()
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("Basic") && challenge.contains("Bearer"));
        assert_error(&resp.json().await.unwrap(), "UNAUTHORIZED");
    }
    let (status, body) = post(
        &format!("{}/api/v1/publish", s.base),
        As::Nobody,
        json!({"topic": "t"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "UNAUTHORIZED");
    // Wrong password, unknown user, unknown key, other schemes: 401 all.
    for who in [
        As::User("alice", "nope"),
        As::User("mallory", "x"),
        As::Key("mqttd_nope"),
    ] {
        let (status, _) = get(&format!("{}/api/v1/stats", s.base), who).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // A password-file user who is neither admin nor viewer is known but has no HTTP role.
    let (status, body) = get(
        &format!("{}/api/v1/stats", s.base),
        As::User("carol", "carol"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&body, "FORBIDDEN");
    let (status, body) = get(&format!("{}/no/such/path", s.base), ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "NOT_FOUND");
    s.broker.stop().await;
}

#[tokio::test]
async fn each_role_may_do_what_it_says_and_nothing_else() {
    let s = secured(None, |_, _| {}).await;
    let (b, pk, vk) = (&s.base, s.publisher_key.as_str(), s.viewer_key.as_str());
    let (_c, code) = try_login(
        s.broker.addr,
        login_packet("c1", Some("carol"), Some(b"carol")),
    )
    .await;
    assert_eq!(code, 0);
    let reads = [
        "/api/v1/stats",
        "/api/v1/clients",
        "/api/v1/clients/c1",
        "/metrics",
    ];
    for path in reads {
        for who in [ALICE, BOB, As::Key(vk)] {
            let (status, body) = get(&format!("{b}{path}"), who).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        let (status, body) = get(&format!("{b}{path}"), As::Key(pk)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "publisher reads {path}");
        if path != "/metrics" {
            assert_error(&body, "FORBIDDEN");
        }
    }
    let msg = json!({"topic": "roles/t", "payload": "x"});
    for who in [ALICE, As::Key(pk)] {
        let (status, body) = post(&format!("{b}/api/v1/publish"), who, msg.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert!(body["id"].is_string());
    }
    for who in [BOB, As::Key(vk)] {
        let (status, body) = post(&format!("{b}/api/v1/publish"), who, msg.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _) = delete(&format!("{b}/api/v1/clients/c1"), who).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = delete(&format!("{b}/api/v1/clients/c1"), As::Key(pk)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = delete(&format!("{b}/api/v1/clients/c1"), ALICE).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    s.broker.stop().await;
}

#[tokio::test]
async fn wrong_passwords_over_http_count_towards_the_login_back_off() {
    let s = secured(None, |c, _| c.auth.max_failures = 3).await;
    let url = format!("{}/api/v1/stats", s.base);
    for i in 0..3 {
        let wrong = format!("wrong-{i}");
        let (status, _) = get(&url, As::User("bob", &wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // bob now backs off: his right password is refused over HTTP, and over MQTT too.
    let (status, body) = get(&url, BOB).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "TOO_MANY_FAILURES");
    let (_, code) = try_login(
        s.broker.addr,
        login_packet("bob-mqtt", Some("bob"), Some(b"bob")),
    )
    .await;
    assert_eq!(
        code, 0x05,
        "MQTT login of a username backing off: not authorised"
    );
    // Others are not affected.
    let (status, _) = get(&url, ALICE).await;
    assert_eq!(status, StatusCode::OK);
    s.broker.stop().await;
}

#[tokio::test]
async fn api_publish_reaches_mqtt_subscribers_with_its_properties() {
    let (broker, base) = open_with(|_| {}).await;
    let url = format!("{base}/api/v1/publish");
    // Open mode: no credentials needed from loopback.
    let (status, body) = post(
        &url,
        As::Nobody,
        json!({"topic": "a/b", "payload": "nobody"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "no subscriber: {body}");

    let (mut sub, _) = RawClient::connected_v5(broker.addr, "sub", Properties::default()).await;
    sub.subscribe("a/#", QoS::AtLeastOnce, 1).await;
    let (status, body) = post(
        &url,
        As::Nobody,
        json!({
            "topic": "a/b",
            "payload": base64::engine::general_purpose::STANDARD.encode([0u8, 159, 146, 150]),
            "payload_encoding": "base64",
            "qos": 1,
            "properties": {
                "content_type": "application/octet-stream",
                "response_topic": "a/reply",
                "correlation_data": "c-1",
                "user_properties": {"k": "v"},
                "message_expiry_interval": 60
            }
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"].as_str().unwrap().len(), 16);
    let p = sub.expect_publish().await;
    assert_eq!(&*p.topic, "a/b");
    assert_eq!(&p.payload[..], &[0u8, 159, 146, 150]);
    assert_eq!(p.qos, QoS::AtLeastOnce);
    let props = p.properties.expect("5.0 properties forwarded");
    assert_eq!(
        props.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(props.response_topic.as_deref(), Some("a/reply"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"c-1"[..]));
    assert_eq!(
        props.user_properties,
        vec![("k".to_owned(), "v".to_owned())]
    );
    assert!(props.message_expiry_interval.is_some_and(|s| s <= 60));

    // A retained message is kept even with no subscriber (202), and a late subscriber gets it.
    let (status, _) = post(
        &url,
        As::Nobody,
        json!({"topic": "r/x", "payload": "kept", "retain": true}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut late = RawClient::connected(broker.addr, "late").await;
    late.subscribe("r/x", QoS::AtMostOnce, 1).await;
    let p = late.expect_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"kept"[..], true));
    broker.stop().await;
}

#[tokio::test]
async fn bad_publishes_get_400_and_oversized_ones_413() {
    let (broker, base) = open_with(|_| {}).await;
    let url = format!("{base}/api/v1/publish");
    for (body, code) in [
        (json!({"topic": "a/+", "payload": "x"}), "TOPIC_INVALID"),
        (json!({"topic": "", "payload": "x"}), "TOPIC_INVALID"),
        (json!({"topic": "a", "qos": 3}), "BAD_REQUEST"),
        (
            json!({"topic": "a", "payload": "!!", "payload_encoding": "base64"}),
            "BAD_REQUEST",
        ),
        (
            json!({"topic": "a", "payload_encoding": "hex"}),
            "BAD_REQUEST",
        ),
        (json!({"payload": "no topic"}), "BAD_REQUEST"),
        (json!({"topic": "a", "colour": "red"}), "BAD_REQUEST"),
        (
            json!({"topic": "a", "properties": {"response_topic": "r/#"}}),
            "BAD_REQUEST",
        ),
        (
            json!({"topic": "a", "properties": {"payload_format_indicator": 2}}),
            "BAD_REQUEST",
        ),
        (
            json!({"topic": "a", "payload": "\u{0}", "properties": {"content_type": "a\u{0}b"}}),
            "BAD_REQUEST",
        ),
    ] {
        let (status, resp) = post(&url, As::Nobody, body.clone()).await;
        assert_eq!(status.as_u16() / 100, 4, "{body}: {resp}");
        assert_error(&resp, code);
    }
    // Not JSON at all.
    let resp = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_error(&resp.json().await.unwrap(), "BAD_REQUEST");
    // Over limits.max_packet_size (1 MiB by default).
    let big = "x".repeat(1_048_577);
    let (status, resp) = post(&url, As::Nobody, json!({"topic": "a", "payload": big})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&resp, "PAYLOAD_TOO_LARGE");
    // Far over: refused before the body is read whole.
    let huge = "x".repeat(3 << 20);
    let (status, resp) = post(&url, As::Nobody, json!({"topic": "a", "payload": huge})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
    assert_error(&resp, "PAYLOAD_TOO_LARGE");
    broker.stop().await;
}

#[tokio::test]
async fn the_acl_decides_where_an_api_caller_may_publish() {
    let acl = "user alice\ntopic readwrite alice/#\n\nuser pub-key\ntopic write devices/#\n";
    let s = secured(Some(acl), |_, _| {}).await;
    let url = format!("{}/api/v1/publish", s.base);
    let pk = As::Key(&s.publisher_key);
    for (who, topic, status) in [
        (ALICE, "alice/x", StatusCode::ACCEPTED),
        (ALICE, "devices/x", StatusCode::FORBIDDEN),
        (pk, "devices/x", StatusCode::ACCEPTED),
        (pk, "alice/x", StatusCode::FORBIDDEN),
    ] {
        let (got, body) = post(&url, who, json!({"topic": topic, "payload": "p"})).await;
        assert_eq!(got, status, "{topic}: {body}");
        if status == StatusCode::FORBIDDEN {
            assert_error(&body, "FORBIDDEN");
        }
    }
    // What the ACL let through reaches a subscriber allowed to read it.
    let (mut sub, code) = try_login(
        s.broker.addr,
        login_packet("alice-sub", Some("alice"), Some(b"alice")),
    )
    .await;
    assert_eq!(code, 0);
    sub.subscribe("alice/#", QoS::AtMostOnce, 1).await;
    let (status, _) = post(&url, ALICE, json!({"topic": "alice/in", "payload": "hi"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&sub.expect_publish().await.payload[..], b"hi");
    s.broker.stop().await;
}

#[tokio::test]
async fn clients_are_listed_filtered_paged_and_detailed() {
    let (broker, base) = open_with(|_| {}).await;
    let mut a = RawClient::connected(broker.addr, "dev-a").await;
    a.subscribe("x/#", QoS::AtLeastOnce, 1).await;
    let _b = RawClient::connected(broker.addr, "dev-b").await;
    let (_c, _) = RawClient::connected_v5(broker.addr, "other", Properties::default()).await;
    let url = format!("{base}/api/v1/clients");
    let (status, body) = get(&url, As::Nobody).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clientid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dev-a", "dev-b", "other"]);
    assert_eq!(
        body["meta"],
        json!({"page": 1, "limit": 100, "count": 3, "hasnext": false})
    );
    let first = &body["data"][0];
    assert_eq!(first["connected"], true);
    assert_eq!(first["ip_address"], "127.0.0.1");
    assert_eq!(first["listener"], "plain");
    assert_eq!(first["proto_ver"], 4);
    assert_eq!(first["subscriptions_cnt"], 1);
    assert!(
        first["recv_pkt"].as_u64().unwrap() >= 1,
        "SUBSCRIBE: {first}"
    );
    assert!(first["recv_oct"].as_u64().unwrap() > 0);
    assert!(first["connected_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["data"][2]["proto_ver"], 5);

    let (_, body) = get(
        &format!("{url}?like_clientid=dev&limit=1&page=2"),
        As::Nobody,
    )
    .await;
    assert_eq!(body["data"][0]["clientid"], "dev-b");
    assert_eq!(
        body["meta"],
        json!({"page": 2, "limit": 1, "count": 2, "hasnext": false})
    );
    let (_, body) = get(&format!("{url}?like_clientid=dev&limit=1"), As::Nobody).await;
    assert_eq!(body["meta"]["hasnext"], true);
    let (_, body) = get(&format!("{url}?ip_address=10.0.0.1"), As::Nobody).await;
    assert_eq!(body["meta"]["count"], 0);
    let (_, body) = get(&format!("{url}?connected=false"), As::Nobody).await;
    assert_eq!(body["meta"]["count"], 0);
    for bad in [
        "page=0",
        "limit=0",
        "limit=10001",
        "connected=maybe",
        "sort=up",
    ] {
        let (status, body) = get(&format!("{url}?{bad}"), As::Nobody).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_error(&body, "BAD_REQUEST");
    }

    let (status, body) = get(&format!("{url}/dev-a"), As::Nobody).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["subscriptions"], json!([{"topic": "x/#", "qos": 1}]));
    let (status, body) = get(&format!("{url}/nobody"), As::Nobody).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "CLIENTID_NOT_FOUND");
    broker.stop().await;
}

#[tokio::test]
async fn disconnecting_a_v5_client_sends_disconnect_0x98() {
    let s = secured(None, |_, _| {}).await;
    let (mut v5, _) = RawClient::connect_v5_with(
        s.broker.addr,
        Connect {
            username: Some("carol".into()),
            password: Some(mqttd::protocol::Password::new(b"carol".to_vec())),
            ..common::connect_v5("kick-me", Properties::default())
        },
    )
    .await;
    let url = format!("{}/api/v1/clients/kick-me", s.base);
    let (status, _) = delete(&url, ALICE).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let d = v5.expect_disconnect().await;
    assert_eq!(u8::from(d.reason), 0x98, "administrative action: {d:?}");
    eventually("the session is gone", || {
        s.broker.router.client("kick-me").is_none()
    })
    .await;
    let (status, body) = delete(&url, ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "CLIENTID_NOT_FOUND");
    s.broker.stop().await;
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let s = secured(None, |_, _| {}).await;
    let url = format!("{}/metrics", s.base);
    let vk = As::Key(&s.viewer_key);
    let before = scrape(&url, vk).await;
    assert_eq!(sample(&before, "mqttd_messages_received_total", None), 0.0);
    assert_eq!(
        sample(
            &before,
            "mqttd_limit_hits_total",
            Some(("limit", "max_packet_size"))
        ),
        0.0
    );
    assert!(sample(&before, "mqttd_process_resident_memory_bytes", None) > 0.0);

    let (mut sub, code) = try_login(
        s.broker.addr,
        login_packet("m-sub", Some("carol"), Some(b"carol")),
    )
    .await;
    assert_eq!(code, 0);
    sub.subscribe("m/#", QoS::AtMostOnce, 1).await;
    let publish = format!("{}/api/v1/publish", s.base);
    for i in 0..5 {
        let (status, _) = post(
            &publish,
            ALICE,
            json!({"topic": format!("m/{i}"), "payload": "x"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        sub.expect_publish().await;
    }
    let after = scrape(&url, vk).await;
    assert_eq!(sample(&after, "mqttd_messages_received_total", None), 5.0);
    assert_eq!(sample(&after, "mqttd_messages_sent_total", None), 5.0);
    assert_eq!(
        sample(&after, "mqttd_connections", Some(("listener", "plain"))),
        1.0
    );
    assert_eq!(sample(&after, "mqttd_sessions", None), 1.0);
    assert_eq!(sample(&after, "mqttd_subscriptions", None), 1.0);
    assert!(
        sample(&after, "mqttd_bytes_sent_total", None)
            > sample(&before, "mqttd_bytes_sent_total", None)
    );
    assert!(sample(&after, "mqttd_auth_password_verifications_total", None) >= 2.0);
    s.broker.stop().await;
}

#[tokio::test]
async fn metrics_public_needs_no_credentials_but_the_api_still_does() {
    let s = secured(None, |c, _| c.http.as_mut().unwrap().metrics_public = true).await;
    let scraped = scrape(&format!("{}/metrics", s.base), As::Nobody).await;
    assert_eq!(sample(&scraped, "mqttd_sessions", None), 0.0);
    let (status, _) = get(&format!("{}/api/v1/stats", s.base), As::Nobody).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.broker.stop().await;
}

#[tokio::test]
async fn stats_count_what_happened() {
    let (broker, base) = open_with(|_| {}).await;
    let _c = RawClient::connected(broker.addr, "s1").await;
    let (status, _) = post(
        &format!("{base}/api/v1/publish"),
        As::Nobody,
        json!({"topic": "s", "retain": true, "payload": "r"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = get(&format!("{base}/api/v1/stats"), As::Nobody).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["connections"], 1);
    assert_eq!(body["sessions"], 1);
    assert_eq!(body["retained"], 1);
    assert_eq!(body["messages"]["received"], 1);
    assert_eq!(body["limits"]["max_packet_size"], 0);
    assert!(body["uptime_seconds"].is_u64());
    broker.stop().await;
}

#[tokio::test]
async fn api_keys_are_reloaded_on_sighup() {
    let s = secured(None, |_, _| {}).await;
    let keys = s.dir.path().join("api_keys");
    let fresh = add_key(&keys, "fresh", Role::Admin);
    let url = format!("{}/api/v1/stats", s.base);
    assert_eq!(get(&url, As::Key(&fresh)).await.0, StatusCode::UNAUTHORIZED);
    s.broker.reloader.reload().expect("reload");
    assert_eq!(get(&url, As::Key(&fresh)).await.0, StatusCode::OK);
    ApiKeyFile::update(&keys, false, |f| Ok(((), f.remove("fresh")))).unwrap();
    s.broker.reloader.reload().expect("reload");
    assert_eq!(get(&url, As::Key(&fresh)).await.0, StatusCode::UNAUTHORIZED);
    s.broker.stop().await;
}

#[tokio::test]
async fn the_default_runs_listener_steps_aside_when_its_port_is_taken() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken: SocketAddr = holder.local_addr().unwrap();
    let mut c = config();
    c.http = Some(HttpConfig {
        bind: taken,
        ..HttpConfig::local()
    });
    let broker = TestBroker::start_with(c.clone()).await;
    assert!(broker.http.is_none(), "optional listener skipped");
    let _mqtt = RawClient::connected(broker.addr, "still-up").await;
    broker.stop().await;
    // A configured [http] whose port is taken stops the start, naming the address.
    c.http.as_mut().unwrap().optional = false;
    let err = mqttd::server::Server::bind(c, Default::default())
        .await
        .err()
        .expect("bind fails");
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
}

#[tokio::test]
async fn https_with_the_configured_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = common::certs::Pki::generate();
    let mut c = config();
    let mut h = http(&[], &[]);
    h.tls = Some(pki.server_tls(std::time::Duration::from_secs(5)));
    c.http = Some(h);
    let broker = TestBroker::start_with(c).await;
    let addr = broker.http.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        pki.client(&[&tokio_rustls::rustls::version::TLS13]),
    ));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .expect("TLS handshake");
    tls.write_all(b"GET /api/v1/stats HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tls.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"uptime_seconds\""), "{response}");
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = client().get(format!("http://{addr}/healthz")).send().await;
    assert!(plain.is_err());
    broker.stop().await;
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_open_http_connections() {
    let (broker, base) = open_with(|_| {}).await;
    let keep_alive = client();
    let resp = keep_alive
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    broker.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(keep_alive);
}
