//! What every gateway (CoAP, bridge, webhook) shows of itself, through the one `GatewayStatus`:
//! `GET /api/v1/gateways`, `/metrics` and `$SYS/broker/<kind>/<name>/...` carry the same state
//! and numbers. (Each gateway's own behaviour is in tests/coap.rs, tests/bridge.rs and
//! tests/webhook.rs.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::api::{As, get, open_with, sample, scrape};
use common::{WAIT, next_publish};
use mqttd::gateway::Kind;
use rumqttc::QoS;

/// The gateway tables of `toml`, as the file would give them.
fn gateways_from(toml: &str) -> mqttd::config::Config {
    mqttd::config::Config::parse(toml, Path::new("gateways.toml")).expect("valid gateway tables")
}

#[tokio::test]
async fn a_gateway_is_shown_the_same_in_the_api_metrics_and_sys() {
    let parsed = gateways_from(
        r#"
[[coap]]
name = "field"
bind = "127.0.0.1:0"
"#,
    );
    let (broker, base) = open_with(|c| {
        c.coap = parsed.coap;
        c.sys.interval = 1;
    })
    .await;
    let status = broker.gateway(Kind::Coap, "field");
    let addr = broker.coap_addr("field");
    assert_eq!(status.address(), addr.to_string());

    // The API: kind, name, address, state, and every metric the status has.
    let (code, body) = get(&format!("{base}/api/v1/gateways"), As::Nobody).await;
    assert_eq!(code, 200, "{body}");
    let list = body["data"].as_array().expect("data is a list");
    assert_eq!(list.len(), 1, "{body}");
    let g = &list[0];
    assert_eq!(g["kind"], "coap");
    assert_eq!(g["name"], "field");
    assert_eq!(g["address"], addr.to_string());
    assert_eq!(g["state"], status.state());
    let metrics = g["metrics"].as_object().expect("metrics is an object");
    for m in status.metrics() {
        assert!(
            metrics.contains_key(m.name),
            "{} missing from {body}",
            m.name
        );
    }

    // /metrics: the state as a label, and a family per metric with the gateway's name.
    let s = scrape(&format!("{base}/metrics"), As::Nobody).await;
    let state = s
        .samples
        .iter()
        .find(|x| x.metric == "mqttd_gateway_state")
        .expect("mqttd_gateway_state");
    assert_eq!(state.labels.get("kind"), Some("coap"));
    assert_eq!(state.labels.get("name"), Some("field"));
    assert_eq!(state.labels.get("state"), Some(status.state()));
    for m in status.metrics() {
        let name = match m.counter {
            true => format!("mqttd_coap_{}_total", m.name),
            false => format!("mqttd_coap_{}", m.name),
        };
        assert!(
            s.samples
                .iter()
                .any(|x| x.metric == name && x.labels.get("name") == Some("field")),
            "{name} missing"
        );
        assert_eq!(
            sample(&s, &name, Some(("name", "field"))),
            m.value as f64,
            "{name}"
        );
    }

    // $SYS: the state, and each metric, under the gateway's kind and name.
    let (client, mut rx, _) =
        common::rumqtt_client(common::mqtt_options(broker.addr, "sys-watcher")).await;
    client
        .subscribe("$SYS/broker/coap/field/#", QoS::AtMostOnce)
        .await
        .unwrap();
    let mut seen = std::collections::HashMap::new();
    let want = 1 + status.metrics().len();
    tokio::time::timeout(WAIT + Duration::from_secs(2), async {
        while seen.len() < want {
            let p = next_publish(&mut rx).await;
            let topic = p
                .topic
                .strip_prefix("$SYS/broker/coap/field/")
                .unwrap()
                .to_owned();
            seen.insert(topic, String::from_utf8(p.payload.to_vec()).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not every $SYS topic of the gateway came: {seen:?}"));
    assert_eq!(seen["state"], status.state());
    for m in status.metrics() {
        seen[m.name]
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("$SYS {} = {:?}: not a whole number", m.name, seen[m.name]));
    }
    broker.stop().await;
}

/// `mqttd --check-config` loads what the start loads (`Resources::load`): a bridge's missing
/// password file and a webhook's missing environment variable are found there, with the line.
#[test]
fn check_config_reads_the_gateways_files_and_secrets() {
    let bridge = gateways_from(
        r#"
[[bridge]]
name = "cloud"
address = "127.0.0.1:1"
username = "site1"
password_file = "/nonexistent/bridge.secret"
topics = [{ pattern = "a/#" }]
"#,
    );
    let err = mqttd::server::Resources::load(&bridge)
        .err()
        .expect("a missing password file is refused")
        .to_string();
    assert!(
        err.starts_with("gateways.toml:2: bridge \"cloud\""),
        "{err}"
    );
    assert!(err.contains("/nonexistent/bridge.secret"), "{err}");

    let hook = gateways_from(
        r#"
[[webhook]]
name = "alerts"
url = "http://127.0.0.1:1/hook"
filters = ["alerts/#"]
headers = { "Authorization" = "env:MQTTD_TEST_UNSET_VARIABLE" }
"#,
    );
    let err = mqttd::server::Resources::load(&hook)
        .err()
        .expect("a missing environment variable is refused")
        .to_string();
    assert!(err.contains("MQTTD_TEST_UNSET_VARIABLE"), "{err}");
    assert!(err.contains("gateways.toml:6"), "{err}");
}
