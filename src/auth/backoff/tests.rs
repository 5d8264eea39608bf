//! The back-off rules on paused time: turns, delays, the username rule, forgetting, bounds.

use super::*;

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

fn backoff(n: u32, window: u64, max: u64) -> Arc<Backoff> {
    Arc::new(Backoff::new(
        n,
        Duration::from_secs(window),
        Duration::from_secs(max),
    ))
}

/// Takes a turn of `ip` and fails it; returns when the turn started (after `t0`).
async fn fail_once(b: &Arc<Backoff>, ip: IpAddr, user: &str, t0: Instant) -> Duration {
    let turn = b.turn(ip).await.expect("a turn");
    let started = t0.elapsed();
    turn.failed(user);
    started
}

#[tokio::test(start_paused = true)]
async fn delays_double_from_the_nth_failure_and_are_capped() {
    let b = backoff(3, 600, 5);
    let t0 = Instant::now();
    let mut starts = Vec::new();
    for i in 0..7 {
        starts.push(fail_once(&b, IP, &format!("u{i}"), t0).await.as_secs());
    }
    // Three at once, then 1s, 2s, 4s, then capped at 5s.
    assert_eq!(starts, [0, 0, 0, 1, 3, 7, 12]);
}

#[tokio::test(start_paused = true)]
async fn a_success_waits_for_its_turn_but_is_never_refused_and_delays_nobody() {
    let b = backoff(2, 600, 60);
    let t0 = Instant::now();
    fail_once(&b, IP, "x", t0).await;
    fail_once(&b, IP, "y", t0).await;
    fail_once(&b, IP, "z", t0).await; // at 1s; the next turn waits 2s
    let turn = b.turn(IP).await.unwrap();
    assert_eq!(t0.elapsed().as_secs(), 3);
    turn.succeeded("alice");
    let turn = b.turn(IP).await.unwrap();
    assert_eq!(t0.elapsed().as_secs(), 3, "a success adds no delay");
    turn.succeeded("bob");
    // Other addresses never waited.
    let other = b.turn(OTHER).await.unwrap();
    assert_eq!(t0.elapsed().as_secs(), 3);
    drop(other);
}

#[tokio::test(start_paused = true)]
async fn parallel_logins_get_n_turns_then_one_at_a_time() {
    let b = backoff(3, 600, 60);
    let a = b.turn(IP).await.unwrap();
    let c = b.turn(IP).await.unwrap();
    let d = b.turn(IP).await.unwrap();
    // A fourth waits (forever, here: the others are held).
    assert!(
        tokio::time::timeout(Duration::from_secs(1), b.turn(IP))
            .await
            .is_err()
    );
    a.failed("u");
    // Failing took that turn away: still none free.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), b.turn(IP))
            .await
            .is_err()
    );
    c.succeeded("v");
    let e = b.turn(IP).await.unwrap();
    d.failed("u");
    e.failed("u");
    // Three failures: one turn left, delayed 1s.
    let t0 = Instant::now();
    let f = b.turn(IP).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert!(
        tokio::time::timeout(Duration::from_secs(30), b.turn(IP))
            .await
            .is_err(),
        "one at a time"
    );
    drop(f);
    assert!(
        b.turn(IP).await.is_ok(),
        "a turn dropped uncounted is given back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_would_come_after_backoff_max_is_busy() {
    let b = backoff(1, 600, 4);
    let t0 = Instant::now();
    for _ in 0..4 {
        fail_once(&b, IP, "u", t0).await;
    }
    // Delays 1, 2, 4 (capped): the next turn is 4s away, within backoff_max.
    let held = b.turn(IP).await.unwrap();
    let started = Instant::now();
    // Behind a held turn, a waiter gives up after backoff_max.
    assert_eq!(b.turn(IP).await.unwrap_err(), Busy);
    assert_eq!(started.elapsed(), Duration::from_secs(4));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn username_rule_blocks_everywhere_and_success_clears_it() {
    let b = backoff(2, 600, 60);
    let t0 = Instant::now();
    fail_once(&b, IP, "alice", t0).await;
    assert!(!b.user_blocked("alice"));
    fail_once(&b, OTHER, "alice", t0).await;
    assert!(b.user_blocked("alice"));
    assert!(!b.user_blocked("bob"));
    b.record_success("alice");
    assert!(!b.user_blocked("alice"));
    // The block is temporary.
    fail_once(&b, IP, "carol", t0).await;
    fail_once(&b, OTHER, "carol", t0).await;
    tokio::time::sleep(Duration::from_millis(1001)).await;
    assert!(!b.user_blocked("carol"));
}

#[tokio::test(start_paused = true)]
async fn failures_are_forgotten_after_the_window_and_turns_come_back() {
    let b = backoff(2, 10, 60);
    let t0 = Instant::now();
    fail_once(&b, IP, "u", t0).await;
    fail_once(&b, IP, "u", t0).await;
    // Delayed by 1s; forgotten 10s after that.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let a = b.turn(IP).await.unwrap();
    let c = tokio::time::timeout(Duration::from_millis(1), b.turn(IP))
        .await
        .expect("both turns are back")
        .unwrap();
    assert!(!b.user_blocked("u"));
    drop((a, c));
}

#[tokio::test(start_paused = true)]
async fn failures_without_a_turn_count_too() {
    let b = backoff(2, 600, 60);
    let held = b.turn(IP).await.unwrap();
    let held2 = b.turn(IP).await.unwrap();
    // Both turns taken: the failure is owed and taken from the next turn given back.
    b.record_failure(IP, "u");
    drop(held);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), b.turn(IP))
            .await
            .is_err(),
        "the returned turn paid the debt"
    );
    b.record_failure(IP, "u");
    drop(held2);
    let t0 = Instant::now();
    let _t = b.turn(IP).await.unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(1),
        "delayed after N failures"
    );
}

#[tokio::test(start_paused = true)]
async fn healthy_addresses_leave_no_record_and_maps_stay_bounded() {
    let b = backoff(5, 60, 60);
    b.turn(IP).await.unwrap().succeeded("u");
    assert_eq!(b.tracked(), (0, 0));
    for i in 0..(MAX_TRACKED as u32 + 100) {
        let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
        b.record_failure(ip, &format!("u{i}"));
    }
    let (ips, users) = b.tracked();
    assert!(ips <= MAX_TRACKED && users <= MAX_TRACKED, "{ips} {users}");
}
