//! Interoperability with MQTT.js (npm `mqtt`, pinned in tests/js/package-lock.json), the client
//! inside most browser dashboards and Node.js apps, over mqttd's WebSocket listeners: ws and wss,
//! MQTT 5.0 and 3.1.1, QoS 0/1/2, a retained message, mTLS with `use_identity_as_username`, a will,
//! and refused upgrades (another path, no MQTT subprotocol, an Origin not in `ws_origins`).
//!
//! `tests/js/client.mjs` runs one MQTT.js connection from a JSON job and prints one JSON line per
//! event; `.ci/run` installs node (Debian's `nodejs`) and tests/js/node_modules. Without either the
//! tests fail, saying so; they never skip. Every wait is bounded, and a node process is killed when
//! its handle drops, so a failing test leaves none behind.

mod common;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::certs::Pki;
use common::{RawClient, TestBroker, listener};
use mqttd::config::{Config, ListenerConfig, ListenerProtocol, TlsConfig};
use mqttd::protocol::QoS;
use mqttd::protocol::reason::v5;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Bound for each wait on a node process: starting node and loading MQTT.js takes a while on a busy
/// two-core CI machine, and MQTT.js's own connect timeout (in client.mjs) is 10 s.
const NODE_WAIT: Duration = Duration::from_secs(20);

/// Events after which a connection cannot go on; waiting for anything else fails on them.
const FAILURES: [&str; 3] = ["error", "ws_error", "close"];

// ---- driving MQTT.js ---------------------------------------------------------------------------

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// One `node tests/js/client.mjs JOB` process and the events it printed.
struct MqttJs {
    /// For failure messages: which client this is.
    name: String,
    child: Child,
    /// Dropped to end the client gracefully (client.mjs ends on EOF).
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Filled by a task, for failure messages (node's own errors go there).
    stderr: Arc<Mutex<String>>,
    /// Every event so far, for failure messages.
    events: Vec<Value>,
    /// Events read but not yet taken by [`MqttJs::expect`] (it reads past other kinds).
    pending: VecDeque<Value>,
}

impl MqttJs {
    /// Starts MQTT.js on `job` (see tests/js/client.mjs); `name` only labels failures.
    fn start(name: &str, job: Value) -> MqttJs {
        let dir = js_dir();
        assert!(
            dir.join("node_modules/mqtt/package.json").is_file(),
            "MQTT.js is not installed in {}: run .ci/run (it runs `npm ci --prefix tests/js`, and \
             installs Debian's nodejs and npm if missing)",
            dir.join("node_modules").display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("client.mjs"))
            .arg(job.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run node: {e}; run .ci/run (it installs Debian's nodejs and npm, then \
                     MQTT.js into tests/js/node_modules)"
                )
            });
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text).await;
            sink.lock().push_str(&String::from_utf8_lossy(&text));
        });
        MqttJs {
            name: name.into(),
            child,
            stdin,
            stdout,
            stderr,
            events: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// What the client did so far, for failure messages.
    fn history(&self) -> String {
        let events: Vec<String> = self.events.iter().map(Value::to_string).collect();
        format!(
            "{}: events [{}]; stderr: {:?}",
            self.name,
            events.join(", "),
            self.stderr.lock()
        )
    }

    /// The next event, or None once the process closed its standard output. Fails after
    /// `NODE_WAIT`.
    async fn next(&mut self) -> Option<Value> {
        let line = match tokio::time::timeout(NODE_WAIT, self.stdout.next_line()).await {
            Ok(Ok(line)) => line?,
            Ok(Err(e)) => panic!("reading {}'s output: {e}; {}", self.name, self.history()),
            Err(_) => panic!(
                "{} printed nothing for {NODE_WAIT:?}; {}",
                self.name,
                self.history()
            ),
        };
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "{} printed {line:?}, not JSON ({e}); {}",
                self.name,
                self.history()
            )
        });
        self.events.push(event.clone());
        Some(event)
    }

    /// Takes the first `event` not taken yet, reading more if needed; events of other kinds stay
    /// for later calls. Fails if the process ends first, or, unless `event` is itself one of them,
    /// on an error or a close.
    async fn expect(&mut self, event: &str) -> Value {
        let mut seen = 0;
        loop {
            while seen < self.pending.len() {
                let kind = self.pending[seen]["event"].as_str().unwrap_or_default();
                if kind == event {
                    return self.pending.remove(seen).expect("index in range");
                }
                if !FAILURES.contains(&event) && FAILURES.contains(&kind) {
                    panic!(
                        "{} failed while waiting for {event:?}; {}",
                        self.name,
                        self.history()
                    );
                }
                seen += 1;
            }
            let Some(next) = self.next().await else {
                panic!("{} ended before {event:?}; {}", self.name, self.history());
            };
            self.pending.push_back(next);
        }
    }

    /// Waits for the WebSocket upgrade and the CONNACK; returns the subprotocol the broker chose.
    async fn connected(&mut self) -> String {
        let open = self.expect("ws_open").await;
        let connect = self.expect("connect").await;
        assert_eq!(connect["reasonCode"], 0, "{}", self.history());
        open["protocol"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits for the SUBACK and returns its codes.
    async fn suback(&mut self) -> Vec<u64> {
        let ack = self.expect("suback").await;
        let codes = ack["granted"]
            .as_array()
            .map(|codes| codes.iter().filter_map(Value::as_u64).collect::<Vec<_>>());
        codes.unwrap_or_else(|| panic!("a suback without codes; {}", self.history()))
    }

    /// The next `n` received messages as (topic, payload, qos, retain), sorted by topic: MQTT
    /// orders messages per topic, and MQTT.js reports a QoS 2 message only at its PUBREL.
    async fn messages(&mut self, n: usize) -> Vec<(String, String, u64, bool)> {
        let mut got = Vec::new();
        for _ in 0..n {
            let m = self.expect("message").await;
            got.push((
                m["topic"].as_str().unwrap_or_default().to_owned(),
                m["payload"].as_str().unwrap_or_default().to_owned(),
                m["qos"].as_u64().unwrap_or(99),
                m["retain"].as_bool().unwrap_or_default(),
            ));
        }
        got.sort();
        got
    }

    /// Sends one command (`{"subscribe": [...]}`, `{"publish": [...]}`) on standard input.
    async fn send(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().expect("standard input still open");
        let line = format!("{command}\n");
        let written = tokio::time::timeout(NODE_WAIT, stdin.write_all(line.as_bytes())).await;
        assert!(
            matches!(written, Ok(Ok(()))),
            "writing to {}: {written:?}; {}",
            self.name,
            self.history()
        );
    }

    /// Reads the remaining events up to the process's exit and returns its exit status.
    async fn finish(&mut self) -> ExitStatus {
        while self.next().await.is_some() {}
        match tokio::time::timeout(NODE_WAIT, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for {}: {e}", self.name),
            Err(_) => panic!("{} did not exit; {}", self.name, self.history()),
        }
    }

    /// Ends the client gracefully (DISCONNECT) by closing its standard input; asserts it closed and
    /// exited cleanly.
    async fn end(mut self) {
        self.stdin = None;
        let status = self.finish().await;
        assert!(
            status.success(),
            "{} exited with {status}; {}",
            self.name,
            self.history()
        );
        assert!(self.saw("close"), "{}", self.history());
    }

    /// SIGKILL: the connection ends without DISCONNECT, as when a browser tab dies.
    async fn kill(mut self) {
        self.child.start_kill().expect("kill node");
        let exited = tokio::time::timeout(NODE_WAIT, self.child.wait()).await;
        assert!(matches!(exited, Ok(Ok(_))), "{} did not die", self.name);
    }

    fn saw(&self, event: &str) -> bool {
        self.events.iter().any(|e| e["event"] == event)
    }

    /// For a connection the broker must refuse: waits for the close and the exit, and asserts
    /// there never was a CONNACK. Returns the `ws_error` messages (e.g. the HTTP status).
    async fn refused(mut self) -> Vec<String> {
        let status = self.finish().await;
        assert!(
            !self.saw("connect"),
            "the broker let it in; {}",
            self.history()
        );
        assert!(self.saw("close"), "{}", self.history());
        assert!(!status.success(), "{} exited with {status}", self.name);
        let errors = self.events.iter().filter(|e| e["event"] == "ws_error");
        errors
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect()
    }
}

// ---- brokers -----------------------------------------------------------------------------------

/// A `protocol = "ws"` listener (the default path, /mqtt); with `tls`, wss.
fn ws_listener(name: &str, tls: Option<TlsConfig>) -> ListenerConfig {
    ListenerConfig {
        protocol: ListenerProtocol::Ws,
        tls,
        ..listener(name)
    }
}

/// Listeners "plain" (MQTT over TCP), "ws" and "wss" (the test CA's server certificate).
fn config(pki: &Pki) -> Config {
    let mut config = common::config();
    config.listeners.push(ws_listener("ws", None));
    config.listeners.push(ws_listener(
        "wss",
        Some(pki.server_tls(Duration::from_secs(5))),
    ));
    config
}

/// `scheme://127.0.0.1:PORT/path` for the listener `name`.
fn url(broker: &TestBroker, scheme: &str, name: &str, path: &str) -> String {
    format!("{scheme}://{}{path}", broker.addr_of(name))
}

/// A plain-TCP subscriber to `filter` at QoS 2, on the "plain" listener.
async fn tcp_watcher(broker: &TestBroker, filter: &str) -> RawClient {
    let mut c = RawClient::connected(broker.addr_of("plain"), "tcp-watcher").await;
    assert_eq!(c.subscribe(filter, QoS::ExactlyOnce, 1).await, [2]);
    c
}

/// The next `n` messages `watcher` receives, as [`MqttJs::messages`] gives them.
async fn tcp_messages(watcher: &mut RawClient, n: usize) -> Vec<(String, String, u64, bool)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let p = watcher.receive().await;
        let payload = String::from_utf8_lossy(&p.payload).into_owned();
        got.push(message(&p.topic, &payload, p.qos as u64, p.retain));
    }
    got.sort();
    got
}

fn message(topic: &str, payload: &str, qos: u64, retain: bool) -> (String, String, u64, bool) {
    (topic.into(), payload.into(), qos, retain)
}

// ---- tests -------------------------------------------------------------------------------------

/// Over ws, one MQTT.js client of `version` subscribes to `js/#`, publishes at QoS 0, 1 and 2 and
/// a retained message, and receives its own messages, as does a TCP client; a second MQTT.js client
/// then gets the retained message, flagged retained.
async fn publish_and_receive_over_ws(version: u8) {
    let pki = Pki::generate();
    let broker = TestBroker::start_with(config(&pki)).await;
    let mut watcher = tcp_watcher(&broker, "js/#").await;
    let ws = url(&broker, "ws", "ws", "/mqtt");

    let mut js = MqttJs::start(
        "subscriber",
        json!({
            "url": ws,
            "protocolVersion": version,
            "clientId": format!("mqttjs-v{version}"),
            "subscribe": [{"topic": "js/#", "qos": 2}],
            "publish": [
                {"topic": "js/qos0", "payload": "zero", "qos": 0},
                {"topic": "js/qos1", "payload": "one", "qos": 1},
                {"topic": "js/qos2", "payload": "two", "qos": 2},
            ],
        }),
    );
    assert_eq!(js.connected().await, "mqtt", "the subprotocol echoed");
    assert_eq!(js.suback().await, [2]);
    for _ in 0..3 {
        js.expect("published").await;
    }
    // A live delivery does not carry the retain flag (3.1.1 3.3.1-9; 5.0 without Retain As
    // Published).
    let sent = [
        message("js/qos0", "zero", 0, false),
        message("js/qos1", "one", 1, false),
        message("js/qos2", "two", 2, false),
        message("js/retained", "kept", 1, false),
    ];
    assert_eq!(js.messages(3).await, sent[..3]);
    // RawClient::receive wants a QoS 2 handshake not interleaved with the next PUBLISH: the TCP
    // subscriber finishes these three before the retained message is sent.
    let mut over_tcp = Vec::new();
    over_tcp.extend(tcp_messages(&mut watcher, 3).await);
    js.send(
        json!({"publish": [{"topic": "js/retained", "payload": "kept", "qos": 1, "retain": true}]}),
    )
    .await;
    js.expect("published").await;
    assert_eq!(js.messages(1).await, sent[3..]);
    over_tcp.extend(tcp_messages(&mut watcher, 1).await);
    over_tcp.sort();
    assert_eq!(over_tcp, sent, "what the TCP subscriber got");
    js.end().await;

    let mut later = MqttJs::start(
        "later subscriber",
        json!({
            "url": ws,
            "protocolVersion": version,
            "subscribe": [{"topic": "js/retained", "qos": 2}],
        }),
    );
    later.connected().await;
    assert_eq!(later.suback().await, [2]);
    assert_eq!(
        later.messages(1).await,
        [message("js/retained", "kept", 1, true)]
    );
    later.end().await;
    watcher.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn mqttjs_5_publishes_and_receives_over_ws() {
    publish_and_receive_over_ws(5).await;
}

#[tokio::test]
async fn mqttjs_311_publishes_and_receives_over_ws() {
    publish_and_receive_over_ws(4).await;
}

/// wss with the test CA given as MQTT.js's `ca` option; without it, node refuses the broker's
/// certificate and never sends CONNECT.
#[tokio::test]
async fn mqttjs_connects_over_wss_trusting_the_test_ca() {
    let pki = Pki::generate();
    let broker = TestBroker::start_with(config(&pki)).await;
    let wss = url(&broker, "wss", "wss", "/mqtt");

    let mut js = MqttJs::start(
        "wss client",
        json!({
            "url": wss,
            "protocolVersion": 5,
            "ca": pki.path("ca.pem"),
            "subscribe": [{"topic": "secure/#", "qos": 1}],
            "publish": [{"topic": "secure/hello", "payload": "over wss", "qos": 1}],
        }),
    );
    assert_eq!(js.connected().await, "mqtt");
    assert_eq!(js.suback().await, [1]);
    assert_eq!(
        js.messages(1).await,
        [message("secure/hello", "over wss", 1, false)]
    );
    js.end().await;

    let untrusting = MqttJs::start(
        "client without the CA",
        json!({"url": wss, "protocolVersion": 5}),
    );
    let errors = untrusting.refused().await;
    assert!(
        errors.iter().any(|e| e.contains("certificate")),
        "node names the certificate problem: {errors:?}"
    );
    broker.stop().await;
}

/// mTLS over wss on a listener with `require_client_cert` and `use_identity_as_username`: alice's
/// certificate makes her "alice" whatever username MQTT.js sends, and the ACL lets "alice" (not
/// "mallory") use alice/#. A client without a certificate is refused.
#[tokio::test]
async fn mqttjs_mtls_over_wss_is_known_by_its_certificate() {
    let pki = Pki::generate();
    let acl = pki.path("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite alice/#\n\nuser mallory\ntopic readwrite mallory/#\n",
    )
    .expect("write the ACL");
    let mut config = common::config();
    config.auth.acl_file = Some(acl);
    config
        .listeners
        .push(ws_listener("wss-mtls", Some(pki.mtls(true))));
    let broker = TestBroker::start_with(config).await;
    let wss = url(&broker, "wss", "wss-mtls", "/mqtt");

    let mut alice = MqttJs::start(
        "alice",
        json!({
            "url": wss,
            "protocolVersion": 5,
            "username": "mallory",
            "ca": pki.path("ca.pem"),
            "cert": pki.path("alice.pem"),
            "key": pki.path("alice.key"),
            "subscribe": [{"topic": "alice/#", "qos": 1}, {"topic": "mallory/#", "qos": 1}],
            "publish": [{"topic": "alice/hello", "payload": "it is me", "qos": 1}],
        }),
    );
    assert_eq!(alice.connected().await, "mqtt");
    assert_eq!(
        alice.suback().await,
        [1, u64::from(v5::NOT_AUTHORIZED)],
        "the session is alice's (the certificate's CN), not mallory's"
    );
    assert_eq!(
        alice.messages(1).await,
        [message("alice/hello", "it is me", 1, false)]
    );
    alice.end().await;

    let anonymous = MqttJs::start(
        "client without a certificate",
        json!({"url": wss, "protocolVersion": 5, "ca": pki.path("ca.pem")}),
    );
    anonymous.refused().await;
    broker.stop().await;
}

/// An MQTT.js client with a will is killed (no DISCONNECT): the will reaches a TCP subscriber.
#[tokio::test]
async fn mqttjs_will_is_published_when_node_is_killed() {
    let pki = Pki::generate();
    let broker = TestBroker::start_with(config(&pki)).await;
    let mut watcher = tcp_watcher(&broker, "js/will/#").await;
    for version in [5, 4] {
        let topic = format!("js/will/v{version}");
        let mut js = MqttJs::start(
            "client with a will",
            json!({
                "url": url(&broker, "ws", "ws", "/mqtt"),
                "protocolVersion": version,
                "clientId": format!("mortal-v{version}"),
                "will": {"topic": topic, "payload": "gone", "qos": 1},
            }),
        );
        js.connected().await;
        js.kill().await;
        let will = watcher.receive().await;
        assert_eq!(
            (&*will.topic, &will.payload[..], will.qos),
            (&*topic, &b"gone"[..], QoS::AtLeastOnce)
        );
    }
    watcher.disconnect().await;
    broker.stop().await;
}

/// An upgrade to another path than the listener's (404), one without an MQTT subprotocol (400), or
/// from a page whose Origin is not in `ws_origins` (403) gets an HTTP error, not a WebSocket; the
/// listeners go on serving good upgrades.
#[tokio::test]
async fn mqttjs_bad_path_missing_subprotocol_and_foreign_origin_are_refused() {
    let pki = Pki::generate();
    let mut config = config(&pki);
    config.listeners.push(ListenerConfig {
        ws_origins: Some(vec!["https://app.example.com".into()]),
        ..ws_listener("ws-origins", None)
    });
    let broker = TestBroker::start_with(config).await;

    let bad_path = MqttJs::start(
        "bad path",
        json!({"url": url(&broker, "ws", "ws", "/elsewhere"), "protocolVersion": 5}),
    );
    let errors = bad_path.refused().await;
    assert!(
        errors.iter().any(|e| e.contains("404")),
        "HTTP 404 for another path: {errors:?}"
    );

    let no_subprotocol = MqttJs::start(
        "no subprotocol",
        json!({
            "url": url(&broker, "ws", "ws", "/mqtt"),
            "protocolVersion": 5,
            "subprotocol": null,
        }),
    );
    let errors = no_subprotocol.refused().await;
    assert!(
        errors.iter().any(|e| e.contains("400")),
        "HTTP 400 without an MQTT subprotocol: {errors:?}"
    );

    let foreign = MqttJs::start(
        "foreign origin",
        json!({
            "url": url(&broker, "ws", "ws-origins", "/mqtt"),
            "protocolVersion": 5,
            "origin": "https://evil.example",
        }),
    );
    let errors = foreign.refused().await;
    assert!(
        errors.iter().any(|e| e.contains("403")),
        "HTTP 403 for an Origin not in ws_origins: {errors:?}"
    );
    let mut listed = MqttJs::start(
        "listed origin",
        json!({
            "url": url(&broker, "ws", "ws-origins", "/mqtt"),
            "protocolVersion": 5,
            "origin": "https://app.example.com",
        }),
    );
    assert_eq!(listed.connected().await, "mqtt");
    listed.end().await;

    let mut good = MqttJs::start(
        "good client",
        json!({"url": url(&broker, "ws", "ws", "/mqtt"), "protocolVersion": 5}),
    );
    assert_eq!(good.connected().await, "mqtt");
    good.end().await;
    broker.stop().await;
}
