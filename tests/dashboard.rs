//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver,
//! fantoccini) against a broker with a password file. Signs in, watches the overview's message
//! rate rise while an MQTT client publishes, finds a client and kicks it (the client gets
//! DISCONNECT 0x98), sees a message in the live view, deletes a retained message (a new
//! subscriber then gets nothing retained), publishes from the form, and writes a screenshot of
//! every page to `target/dashboard-screenshots/NAME.png`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them): without
//! them the test fails and says so; it never skips.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{FAST_ARGON2, RawClient, TestBroker, config, connect_v5, login_packet, set_passwords};
use fantoccini::{Client, ClientBuilder, Locator};
use mqttd::config::HttpConfig;
use mqttd::protocol::{ConnAckReason, Connect, Properties, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Bound on any one wait for the browser (pages load, the stream ticks once a second).
const PATIENCE: Duration = Duration::from_secs(20);

/// Chromium's flags: headless, no sandbox (CI containers run as root), and nothing that phones
/// home or updates itself during the test.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// `program` on the PATH, or None.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Where the screenshots go: `<target>/dashboard-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("dashboard-screenshots")
}

/// A browser session. chromedriver runs in a process group of its own, with the Chromium it
/// starts; the whole group is killed when this is dropped, so a failing test leaves no browser
/// behind (killing chromedriver alone would orphan Chromium).
struct Browser {
    client: Client,
    base: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(base: String) -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser"]).unwrap_or_else(|| {
            panic!(
                "the dashboard test needs headless Chromium, and `chromium` is not on the PATH: \
                 install the Debian packages `chromium` and `chromium-driver` (.ci/run does)"
            )
        });
        let chromedriver = find_program(&["chromedriver"]).unwrap_or_else(|| {
            panic!(
                "the dashboard test needs `chromedriver`, not found on the PATH: install the \
                 Debian package `chromium-driver` (.ci/run does)"
            )
        });
        // --port=0: chromedriver picks a free port and names it on its first lines.
        let mut driver = Command::new(&chromedriver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start: {e}", chromedriver.display()));
        let mut lines = BufReader::new(driver.stdout.take().expect("piped stdout")).lines();
        let port = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.expect("chromedriver output") {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .expect("chromedriver starts in time")
        .expect("chromedriver names its port");
        // Keep reading its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        // Chromium's first start on a busy CI machine can take a while.
        let client = tokio::time::timeout(
            3 * PATIENCE,
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("Chromium starts in time")
        .unwrap_or_else(|e| panic!("cannot start Chromium through chromedriver: {e}"));
        Browser {
            client,
            base,
            driver,
            _profile: profile,
        }
    }

    /// Closes the session (Chromium exits); the drop then ends chromedriver.
    async fn close(self) {
        let _ = tokio::time::timeout(PATIENCE, self.client.clone().close()).await;
    }

    /// Opens a dashboard page (`#/name`).
    async fn open(&self, page: &str) {
        let url = format!("{}/#/{page}", self.base);
        self.client.goto(&url).await.expect("navigate");
    }

    /// Runs `script` (a function body returning a value) until it returns something truthy;
    /// returns that value. Panics after [`PATIENCE`] with `what` and the page's text.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self
                .client
                .execute(script, vec![])
                .await
                .unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                let text = self
                    .client
                    .execute("return document.body.innerText", vec![])
                    .await
                    .unwrap_or(Value::Null);
                panic!("timed out waiting for: {what}\n--- the page says ---\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element matching `css`.
    async fn visible(&self, css: &str) {
        let script = format!(
            "const e = document.querySelector({}); return !!e && e.getClientRects().length > 0;",
            json!(css)
        );
        self.until(&format!("{css} shown"), &script).await;
    }

    /// Waits until the text of `css` contains `needle`.
    async fn text_contains(&self, css: &str, needle: &str) {
        let script = format!(
            "const e = document.querySelector({}); return !!e && e.textContent.includes({});",
            json!(css),
            json!(needle)
        );
        self.until(&format!("{css} to say {needle:?}"), &script)
            .await;
    }

    async fn click(&self, css: &str) {
        self.visible(css).await;
        let e = self.client.find(Locator::Css(css)).await.expect(css);
        e.click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn fill(&self, css: &str, text: &str) {
        self.visible(css).await;
        let e = self.client.find(Locator::Css(css)).await.expect(css);
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Confirms the open confirmation dialog.
    async fn confirm(&self) {
        self.until(
            "the confirmation dialog",
            "return document.getElementById('confirm').open",
        )
        .await;
        self.click("#confirm-ok").await;
    }

    /// Writes the page as `<target>/dashboard-screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        // Let the browser paint what the last wait saw (two animation frames).
        let _ = self
            .client
            .execute_async(
                "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                vec![],
            )
            .await;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// An MQTT 3.1.1 client logged in as carol (an MQTT user, not an HTTP one).
async fn mqtt(addr: std::net::SocketAddr, id: &str) -> RawClient {
    let (c, code) = common::try_login(addr, login_packet(id, Some("carol"), Some(b"carol"))).await;
    assert_eq!(code, 0, "CONNACK for {id}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    set_passwords(
        &passwd,
        &[("alice", b"alice"), ("carol", b"carol")],
        FAST_ARGON2,
    );
    let mut c = config();
    c.auth.password_file = Some(passwd);
    c.http = Some(HttpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        admins: vec!["alice".into()],
        optional: false,
        ..HttpConfig::local()
    });
    // One gateway of each kind, for the listeners page: a CoAP gateway, a bridge whose remote is
    // not there (it backs off), a webhook on a filter nothing publishes to.
    let gateways = mqttd::config::Config::parse(
        r#"
[[coap]]
name = "field"
bind = "127.0.0.1:0"
[[bridge]]
name = "cloud"
address = "127.0.0.1:1"
topics = [{ pattern = "site/#" }]
[[webhook]]
name = "alerts"
url = "http://127.0.0.1:1/hook"
filters = ["alerts/#"]
"#,
        std::path::Path::new("gateways.toml"),
    )
    .expect("valid gateway tables");
    c.coap = gateways.coap;
    c.bridges = gateways.bridges;
    c.webhooks = gateways.webhooks;
    let broker = TestBroker::start_with(c).await;
    let base = format!("http://{}", broker.http.expect("http listener"));
    let addr = broker.addr;
    let browser = Browser::start(base).await;

    // Sign in.
    browser.open("overview").await;
    browser.visible("#login-username").await;
    browser.screenshot("login").await;
    browser.fill("#login-username", "alice").await;
    browser.fill("#login-password", "wrong").await;
    browser.click("#login-submit").await;
    browser
        .text_contains(".login-error", "BAD_USERNAME_OR_PWD")
        .await;
    browser.fill("#login-password", "alice").await;
    browser.click("#login-submit").await;
    browser.visible("#rate-in").await;
    browser.text_contains("#who-name", "alice").await;

    // Overview: the incoming rate rises while a client publishes. First make sure the page's
    // event stream flows (the uptime card changes: only the stream's `stats` events update it
    // after the first GET), so the publisher's connect event cannot slip by before it.
    let uptime = browser
        .until(
            "the uptime card",
            "const t = document.getElementById('uptime').textContent; return t !== '–' && t",
        )
        .await;
    browser
        .until(
            "the event stream to tick",
            &format!(
                "return document.getElementById('live-state').classList.contains('on') && \
                 document.getElementById('uptime').textContent !== {uptime}"
            ),
        )
        .await;
    let mut publisher = mqtt(addr, "steady-publisher").await;
    let publishing = tokio::spawn(async move {
        loop {
            publisher
                .publish("dash/rate", b"tick", QoS::AtMostOnce, false, 0)
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    browser
        .until(
            "the overview's incoming message rate above zero",
            "return parseFloat(document.getElementById('rate-in').textContent.replace(/,/g, '')) > 0",
        )
        .await;
    browser
        .text_contains("#client-events", "steady-publisher")
        .await;
    browser.screenshot("overview").await;

    // Clients: find one by search and kick it; it gets DISCONNECT 0x98.
    let (mut victim, ack) = RawClient::connect_v5_with(
        addr,
        Connect {
            username: Some("carol".into()),
            password: Some(mqttd::protocol::Password::new(b"carol".to_vec())),
            ..connect_v5("kick-me", Properties::default())
        },
    )
    .await;
    assert_eq!(ack.code, ConnAckReason::Success, "{ack:?}");
    browser.open("clients").await;
    browser.visible("#client-search").await;
    browser.fill("#client-search", "kick").await;
    browser
        .until(
            "the search to find kick-me alone",
            "const rows = document.querySelectorAll('#client-results tbody tr');
             return rows.length === 1 && rows[0].dataset.clientid === 'kick-me'",
        )
        .await;
    browser.screenshot("clients").await;
    browser.click("tr[data-clientid='kick-me'] a").await;
    browser.visible("#kick").await;
    browser.screenshot("client-detail").await;
    browser.click("#kick").await;
    browser.confirm().await;
    let disconnect = tokio::time::timeout(PATIENCE, victim.expect_disconnect())
        .await
        .expect("the kicked client hears of it");
    assert_eq!(u8::from(disconnect.reason), 0x98, "{disconnect:?}");
    browser
        .text_contains("#client-status", "disconnected")
        .await;

    // Live messages: a message published now shows up.
    browser.open("live").await;
    browser.fill("#live-filter", "dash/live/#").await;
    browser.click("#live-start").await;
    browser.text_contains("#live-status", "dash/live/#").await;
    let mut talker = mqtt(addr, "talker").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        // The stream subscribes as it opens: publish until the page shows one.
        talker
            .publish(
                "dash/live/hello",
                b"hello, browser",
                QoS::AtMostOnce,
                false,
                0,
            )
            .await;
        let seen = browser
            .client
            .execute(
                "return document.getElementById('live-list').textContent.includes('hello, browser')",
                vec![],
            )
            .await
            .unwrap_or(Value::Null);
        if seen == Value::Bool(true) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message in the live view"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.text_contains("#live-list", "dash/live/hello").await;
    browser.screenshot("live").await;

    // Retained: delete one; a new subscriber then gets nothing retained.
    talker
        .publish("dash/retained/lamp", b"on", QoS::AtLeastOnce, true, 1)
        .await;
    talker
        .publish("dash/retained/door", b"closed", QoS::AtLeastOnce, true, 2)
        .await;
    browser.open("retained").await;
    browser
        .visible("tr[data-topic='dash/retained/lamp'] button.delete")
        .await;
    browser.screenshot("retained").await;
    browser
        .click("tr[data-topic='dash/retained/lamp'] button.delete")
        .await;
    browser.confirm().await;
    browser.text_contains("#retained-status", "deleted").await;
    browser
        .until(
            "the deleted message to leave the list",
            "return !document.querySelector(\"tr[data-topic='dash/retained/lamp']\") && \
             !!document.querySelector(\"tr[data-topic='dash/retained/door']\")",
        )
        .await;
    // A new subscriber gets what is still retained (the door), then the marker published after
    // its subscription, and never the lamp.
    let mut subscriber = mqtt(addr, "late-subscriber").await;
    subscriber
        .subscribe("dash/retained/+", QoS::AtLeastOnce, 1)
        .await;
    talker
        .publish("dash/retained/marker", b"after", QoS::AtLeastOnce, false, 3)
        .await;
    let mut topics = Vec::new();
    loop {
        let p = subscriber.receive().await;
        if &*p.topic == "dash/retained/marker" {
            break;
        }
        topics.push(p.topic.to_string());
    }
    assert_eq!(
        topics,
        ["dash/retained/door"],
        "retained messages after the delete"
    );
    browser.open("retained/dash%2Fretained%2Fdoor").await;
    browser.text_contains("#retained-payload", "closed").await;
    browser.screenshot("retained-message").await;

    // Topics: the tree has the topics published above.
    browser.open("topics").await;
    browser.text_contains("#topic-tree", "rate").await;
    // Counted from the page's first request on: more topics appear at its next refresh.
    for topic in [
        "dash/kitchen/temp",
        "dash/kitchen/humidity",
        "devices/42/status",
    ] {
        talker
            .publish(topic, b"21", QoS::AtMostOnce, false, 0)
            .await;
    }
    browser.text_contains("#topic-tree", "humidity").await;
    browser.screenshot("topics").await;

    // Publish from the form; an MQTT subscriber gets it.
    subscriber
        .subscribe("dash/from-browser", QoS::AtMostOnce, 3)
        .await;
    browser.open("publish").await;
    browser.fill("#publish-topic", "dash/from-browser").await;
    browser
        .fill("#publish-payload", "sent by the dashboard")
        .await;
    browser.click("#publish-submit").await;
    browser.text_contains("#publish-result", "Published").await;
    let got = tokio::time::timeout(PATIENCE, async {
        loop {
            let p = subscriber.receive().await;
            if &*p.topic == "dash/from-browser" {
                return p;
            }
        }
    })
    .await
    .expect("the form's message arrives");
    assert_eq!(&got.payload[..], b"sent by the dashboard");
    browser.screenshot("publish").await;

    // History (not configured here): said plainly.
    browser.open("history").await;
    browser
        .text_contains("#history-results", "History is not enabled")
        .await;
    browser.screenshot("history").await;

    // Listeners.
    browser.open("listeners").await;
    browser.visible("tr[data-listener='plain']").await;
    for gateway in ["coap/field", "bridge/cloud", "webhook/alerts"] {
        browser
            .visible(&format!("tr[data-gateway='{gateway}']"))
            .await;
    }
    browser
        .text_contains(
            "tr[data-gateway='webhook/alerts']",
            "http://127.0.0.1:1/hook",
        )
        .await;
    browser.screenshot("listeners").await;

    // Sign out: the login form again.
    browser.click("#logout").await;
    browser.visible("#login-username").await;

    publishing.abort();
    browser.close().await;
    broker.stop().await;
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill(2) on the process group our own, not yet reaped, child leads.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}
