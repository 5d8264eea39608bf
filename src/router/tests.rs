//! Router unit tests: fan-out batching, and the subscribe/takeover race.

use bytes::Bytes;

use super::*;
use crate::router::fanout::SCAN_GROUPS;
use crate::router::state::Outgoing;

fn router() -> Router {
    Router::new(RouterLimits {
        max_queued_messages: 100,
        max_queued_bytes: 1 << 20,
        max_queued_bytes_per_client: 1 << 20,
        slow_subscriber_timeout: Duration::from_secs(1),
    })
}

fn message(topic: &str, payload: &'static [u8]) -> Arc<Message> {
    let msg = Message::new(
        topic.into(),
        Bytes::from_static(payload),
        QoS::AtLeastOnce,
        false,
    );
    Arc::new(msg)
}

/// Payloads in a session's outbox, in order.
fn outbox(session: &SessionState) -> Vec<Bytes> {
    let mut out = Vec::new();
    session.take_outgoing(&mut out, 100, false, usize::MAX);
    out.into_iter()
        .map(|o| match o {
            Outgoing::Publish { delivery, .. } => delivery.msg.payload.clone(),
            Outgoing::PubRel { .. } => panic!("no PUBREL expected"),
        })
        .collect()
}

#[test]
fn fanout_holds_deliveries_until_delivered_then_each_subscriber_gets_them_in_order() {
    let router = router();
    // More subscribers than SCAN_GROUPS, so the fan-out switches to its index on the way.
    let sessions: Vec<_> = (0..SCAN_GROUPS + 4)
        .map(|i| {
            let attached = router.attach(&format!("c{i}"), true, 0, None);
            router.subscribe(
                &attached.session,
                "t/#",
                SubscriptionOptions::new(QoS::AtLeastOnce),
                None,
            );
            attached
        })
        .collect();
    let mut fanout = Fanout::default();
    for payload in [&b"1"[..], b"2", b"3"] {
        assert_eq!(
            router.publish_to(message("t/x", payload), &mut fanout).0,
            sessions.len()
        );
    }
    // Overlapping subscriptions of one client still deliver once.
    router.subscribe(
        &sessions[0].session,
        "t/x",
        SubscriptionOptions::new(QoS::AtMostOnce),
        None,
    );
    router.publish_to(message("t/x", b"4"), &mut fanout);
    assert!(sessions.iter().all(|a| a.session.queue_is_empty()));
    router.deliver(&mut fanout);
    assert!(fanout.is_empty());
    for a in &sessions {
        assert_eq!(
            outbox(&a.session),
            ["1", "2", "3", "4"].map(|p| Bytes::from_static(p.as_bytes()))
        );
    }
    // A Fanout is reusable.
    router.publish_to(message("t/y", b"5"), &mut fanout);
    router.deliver(&mut fanout);
    assert_eq!(outbox(&sessions[3].session), [Bytes::from_static(b"5")]);
}

/// Issue: a SUBSCRIBE racing a clean-start takeover's `discard` left a trie entry for a
/// session that had ended, queueing its messages forever. Subscribes on one thread, clean
/// start takeovers of the same client id on another; afterwards every session is gone, so no
/// subscription may be left.
#[test]
fn subscribe_racing_a_takeover_leaves_no_orphan() {
    let router = Arc::new(router());
    let rounds = 2_000;
    let subscriber = {
        let router = router.clone();
        std::thread::spawn(move || {
            for i in 0..rounds {
                let attached = router.attach("c", true, 0, None);
                for f in 0..4 {
                    router.subscribe(
                        &attached.session,
                        &format!("t/{i}/{f}"),
                        SubscriptionOptions::new(QoS::AtLeastOnce),
                        None,
                    );
                }
            }
        })
    };
    let taker = {
        let router = router.clone();
        std::thread::spawn(move || {
            for _ in 0..rounds {
                let attached = router.attach("c", true, 0, None);
                std::thread::yield_now();
                router.detach(&attached.session, attached.link.id());
            }
        })
    };
    subscriber.join().unwrap();
    taker.join().unwrap();
    // End whatever session is left.
    let last = router.attach("c", true, 0, None);
    router.detach(&last.session, last.link.id());
    assert_eq!(router.session_count(), 0);
    assert_eq!(router.subscription_count(), 0, "orphaned subscriptions");
    assert_eq!(router.stats.clients_connected.load(Ordering::Relaxed), 0);
}
