//! `GET /metrics`: Prometheus / OpenMetrics text, made at scrape time from what the broker
//! already counts ([`crate::stats`], the router's sizes), so the hot path pays nothing for it.
//!
//! Names start with `mqttd_` and follow EMQX's families (`emqx_connections_count` ->
//! `mqttd_connections`, `emqx_messages_received` -> `mqttd_messages_received_total`, ...), so its
//! Grafana dashboards translate by a rename. Counters get the `_total` suffix OpenMetrics adds.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::AppState;
use super::auth::{Caller, Need};
use super::error::ApiError;
use crate::stats::{AclAction, AuthFailure, Limit, Stats};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`. Behind the viewer role unless `[http] metrics_public` (then no caller).
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
) -> Response {
    if let Some(Extension(caller)) = caller
        && let Err(e) = caller.may(Need::Read)
    {
        return e.into_response();
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(state)));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return ApiError::unavailable(format!("metrics could not be encoded: {e}")).into_response();
    }
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Reads the broker's numbers when the registry is encoded.
#[derive(Debug)]
struct Snapshot(Arc<AppState>);

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter family with one label: `(label value, count)` each.
fn counter_family<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let c = ConstCounter::new(0u64);
    let mut family = e.encode_descriptor(name, help, None, c.metric_type())?;
    for (value, n) in values {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let state = &self.0;
        let router = &state.ctx.router;
        let s = &router.stats;
        let by_listener = router.connections_by_listener();
        {
            let g = ConstGauge::new(0i64);
            let mut family = e.encode_descriptor(
                "mqttd_connections",
                "Open MQTT connections, by listener",
                None,
                g.metric_type(),
            )?;
            for (listener, n) in &by_listener {
                let labels = [("listener", listener.as_ref())];
                ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut e,
            "mqttd_connections_max",
            "Most MQTT connections open at once since start",
            Stats::get(&s.clients_maximum),
        )?;
        gauge(
            &mut e,
            "mqttd_sessions",
            "Sessions, connected or not",
            router.session_count() as u64,
        )?;
        gauge(
            &mut e,
            "mqttd_subscriptions",
            "Subscriptions of all sessions",
            router.subscription_count() as u64,
        )?;
        gauge(
            &mut e,
            "mqttd_retained_messages",
            "Retained messages held",
            router.retained_count() as u64,
        )?;
        gauge(
            &mut e,
            "mqttd_queued_bytes",
            "Bytes waiting in session queues",
            router.queued_bytes() as u64,
        )?;
        counter(
            &mut e,
            "mqttd_messages_received",
            "PUBLISH messages received (MQTT, HTTP, other front ends)",
            Stats::get(&s.publish_received),
        )?;
        counter(
            &mut e,
            "mqttd_messages_sent",
            "PUBLISH messages sent to subscribers",
            Stats::get(&s.publish_sent),
        )?;
        counter(
            &mut e,
            "mqttd_messages_dropped",
            "Messages dropped (full queues, slow consumers, memory budget)",
            Stats::get(&s.publish_dropped),
        )?;
        counter(
            &mut e,
            "mqttd_packets_received",
            "MQTT packets received",
            Stats::get(&s.messages_received),
        )?;
        counter(
            &mut e,
            "mqttd_packets_sent",
            "MQTT packets sent",
            Stats::get(&s.messages_sent),
        )?;
        counter(
            &mut e,
            "mqttd_bytes_received",
            "Bytes received from MQTT clients",
            Stats::get(&s.bytes_received),
        )?;
        counter(
            &mut e,
            "mqttd_bytes_sent",
            "Bytes sent to MQTT clients",
            Stats::get(&s.bytes_sent),
        )?;
        counter_family(
            &mut e,
            "mqttd_limit_hits",
            "Times each configured limit was hit, by its config key",
            "limit",
            Limit::ALL.map(|l| (l.name(), s.limit_hits(l))),
        )?;
        counter(
            &mut e,
            "mqttd_client_auth_success",
            "MQTT logins let in (password, anonymous, certificate, enhanced authentication)",
            Stats::get(&s.auth_success),
        )?;
        counter_family(
            &mut e,
            "mqttd_client_auth_failure",
            "MQTT logins refused, by reason",
            "reason",
            AuthFailure::ALL.map(|r| (r.name(), s.auth_failures(r))),
        )?;
        counter_family(
            &mut e,
            "mqttd_authorization_deny",
            "Accesses the ACL denied, by action (publish, subscribe, deliver)",
            "action",
            AclAction::ALL.map(|a| (a.name(), s.acl_denials(a))),
        )?;
        counter(
            &mut e,
            "mqttd_auth_password_verifications",
            "Password hashes computed (cache hits and back-off refusals not counted)",
            state.ctx.auth.current().verifications(),
        )?;
        if let Some(drops) = &state.msglog_drops {
            counter(
                &mut e,
                "mqttd_message_log_dropped",
                "Messages the message log could not keep up with",
                drops.get(),
            )?;
        }
        if let Some(history) = &state.history {
            let c = &history.counters;
            counter(
                &mut e,
                "mqttd_history_rows_written",
                "Messages the history recorded",
                Stats::get(&c.recorded),
            )?;
            counter(
                &mut e,
                "mqttd_history_rows_failed",
                "Messages the history lost to a failed write (full disk, I/O error)",
                Stats::get(&c.failed),
            )?;
        }
        if let Some(drops) = &state.history_drops {
            counter(
                &mut e,
                "mqttd_history_dropped",
                "Messages the history recorder could not keep up with",
                drops.get(),
            )?;
        }
        gateway_families(&mut e, &state.gateways)?;
        gauge(
            &mut e,
            "mqttd_uptime_seconds",
            "Seconds since the broker started",
            s.uptime().as_secs(),
        )?;
        if let Some(p) = process() {
            gauge(
                &mut e,
                "mqttd_process_resident_memory_bytes",
                "Resident memory of the broker process",
                p.resident_bytes,
            )?;
            let cpu = ConstCounter::new(p.cpu_seconds);
            cpu.encode(e.encode_descriptor(
                "mqttd_process_cpu_seconds",
                "CPU time used by the broker process (user + system)",
                None,
                cpu.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// One gateway metric family: (kind, metric), the first gateway's metric (its help and type),
/// and each gateway's (name, value).
type Family<'a> = (
    (&'static str, &'static str),
    crate::gateway::Metric,
    Vec<(&'a str, u64)>,
);

/// The gateways' numbers: `mqttd_<kind>_<metric>{name="..."}` (one family per kind and metric,
/// a series per gateway), and `mqttd_gateway_state{kind, name, state} 1`, the state as a label
/// (what `$SYS/broker/<kind>/<name>/state` says).
fn gateway_families(
    e: &mut DescriptorEncoder,
    gateways: &crate::gateway::Statuses,
) -> std::fmt::Result {
    if gateways.is_empty() {
        return Ok(());
    }
    let mut families: Vec<Family> = Vec::new();
    for g in gateways.iter() {
        for m in g.metrics() {
            let key = (g.kind().as_str(), m.name);
            match families.iter_mut().find(|(k, ..)| *k == key) {
                Some((_, _, series)) => series.push((g.name(), m.value)),
                None => families.push((key, m, vec![(g.name(), m.value)])),
            }
        }
    }
    for ((kind, metric), m, series) in &families {
        let name = format!("mqttd_{kind}_{metric}");
        if m.counter {
            counter_family(e, &name, m.help, "name", series.iter().copied())?;
        } else {
            let g = ConstGauge::new(0i64);
            let mut family = e.encode_descriptor(&name, m.help, None, g.metric_type())?;
            for (gateway, v) in series {
                ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&[("name", *gateway)])?)?;
            }
        }
    }
    let g = ConstGauge::new(0i64);
    let mut family = e.encode_descriptor(
        "mqttd_gateway_state",
        "Each gateway's state (CoAP, bridges, webhooks), as a label; the value is always 1",
        None,
        g.metric_type(),
    )?;
    for gw in gateways.iter() {
        let labels = [
            ("kind", gw.kind().as_str()),
            ("name", gw.name()),
            ("state", gw.state()),
        ];
        ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The broker process's memory and CPU use (Linux `/proc/self`; None elsewhere).
#[derive(Debug, Clone, Copy)]
pub struct Process {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
}

pub fn process() -> Option<Process> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces: utime
    // and stime are stat(5)'s 14th and 15th, so the 12th and 13th after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Clock ticks per second as /proc reports them (USER_HZ): 100 on every Linux ABI.
    const USER_HZ: f64 = 100.0;
    Some(Process {
        resident_bytes: rss_kib * 1024,
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
    })
}
