//! Delivery through the outbox against the fake Telegram.

use std::time::Duration;

use chrono::Duration as Span;
use mt_notify::markdown::to_plain;
use mt_notify::{LEASE_NAME, Sender, SenderOptions};

use crate::common::*;

fn names(texts: &[String]) -> Vec<String> {
    texts.iter().map(|t| message_name(t)).collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("message {n:03}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_then_recovery_delivers_every_message_once_in_order() {
    let h = Harness::new(true).await;
    h.telegram.set_outage(true);
    h.enqueue(0..5).await;
    let (task, stop) = h.spawn(h.sender(h.store.clone()));

    // Twenty minutes of outage, in steps: each due retry times out and is rescheduled.
    eventually("a first failed attempt", || async {
        h.telegram.requests() >= 1
    })
    .await;
    advancing_until(&h, "a second failed attempt", Span::seconds(30), || async {
        h.store.next_notification().await.unwrap().unwrap().attempts >= 2
    })
    .await;
    let head = h.store.next_notification().await.unwrap().unwrap();
    let error = head.last_error.unwrap_or_default();
    println!("last_error during the outage: {error}");
    assert!(error.contains("timed out"), "{error}");
    assert!(
        !error.contains(TOKEN),
        "the bot token never reaches the database: {error}"
    );
    assert_eq!(h.queued().await, 5, "nothing is dropped during an outage");
    assert!(h.telegram.delivered().is_empty());

    // Recovery: logical time keeps moving (a send in flight when the outage ends may still be
    // rescheduled by up to the 300 s backoff cap).
    h.telegram.set_outage(false);
    eventually("all delivered", || async {
        h.clock.advance(Span::seconds(30));
        h.queued().await == 0
    })
    .await;
    assert_eq!(names(&h.telegram.delivered_texts()), expected(0..5));
    assert_eq!(h.store.outbox_stats().await.unwrap().sent, 5);

    stop.cancel();
    task.await.unwrap();
    assert!(
        h.store.lease_holder(LEASE_NAME).await.unwrap().is_none(),
        "lease released on shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_running_senders_never_send_a_message_twice() {
    let h = Harness::new(true).await;
    h.enqueue(0..20).await;
    let a = h.sender(h.store.clone());
    let b = h.sender(h.other_daemon_store().await);
    let (holder_a, holder_b) = (a.holder().to_owned(), b.holder().to_owned());
    assert_ne!(holder_a, holder_b);
    let (task_a, stop_a) = h.spawn(a);
    let (task_b, stop_b) = h.spawn(b);
    eventually("first batch delivered", || async { h.queued().await == 0 }).await;
    assert_eq!(names(&h.telegram.delivered_texts()), expected(0..20));

    // The lease holder dies without releasing its lease; the other takes over once it expires.
    let (holder, _) = h
        .store
        .lease_holder(LEASE_NAME)
        .await
        .unwrap()
        .expect("someone holds it");
    let survivor_stop = if holder == holder_a {
        task_a.abort();
        stop_b
    } else {
        task_b.abort();
        stop_a
    };
    h.enqueue(20..25).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.queued().await,
        5,
        "the survivor waits for the dead holder's lease to expire"
    );
    h.clock.advance(Span::seconds(31));
    eventually("second batch delivered", || async { h.queued().await == 0 }).await;
    assert_eq!(
        names(&h.telegram.delivered_texts()),
        expected(0..25),
        "each once, in order"
    );
    survivor_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let h = Harness::new(true).await;
    h.telegram.script([Reply::RetryAfter(17)]);
    h.enqueue(0..2).await;
    let (_task, stop) = h.spawn(h.sender(h.store.clone()));

    eventually("the 429", || async { h.telegram.requests() == 1 }).await;
    eventually("rescheduled", || async {
        h.store
            .next_notification()
            .await
            .unwrap()
            .is_some_and(|m| m.attempts == 1)
    })
    .await;
    let head = h.store.next_notification().await.unwrap().unwrap();
    assert_eq!(head.next_attempt_at, "2026-01-19 00:00:17");
    assert!(head.last_error.unwrap().contains("retry after 17"));

    // Many polls later, still not resent: the clock has not reached retry_after.
    h.clock.advance(Span::seconds(16));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.telegram.requests(), 1, "no request before retry_after");

    h.clock.advance(Span::seconds(1));
    eventually("delivered after retry_after", || async {
        h.queued().await == 0
    })
    .await;
    assert_eq!(
        names(&h.telegram.delivered_texts()),
        expected(0..2),
        "order kept behind the 429"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_refused_by_telegram_is_resent_once_as_plain_text() {
    let h = Harness::new(true).await;
    h.telegram.refuse_markdown(true);
    h.enqueue(0..1).await;
    let queued = h.store.notifications(10).await.unwrap();
    let (_task, stop) = h.spawn(h.sender(h.store.clone()));
    eventually("delivered", || async { h.queued().await == 0 }).await;
    assert_eq!(h.telegram.requests(), 2, "one refused, one plain");
    let delivered = h.telegram.delivered();
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0].get("parse_mode").is_none(),
        "plain text has no parse mode"
    );
    assert_eq!(
        delivered[0]["text"].as_str().unwrap(),
        to_plain(&queued[0].text)
    );
    assert!(!delivered[0]["text"].as_str().unwrap().contains("\\-"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_message_with_an_unparseable_answer_is_not_sent_again() {
    let h = Harness::new(true).await;
    h.telegram.script([Reply::OkUnparseable]);
    h.enqueue(0..2).await;
    let (_task, stop) = h.spawn(h.sender(h.store.clone()));
    eventually("delivered", || async { h.queued().await == 0 }).await;
    assert_eq!(h.telegram.requests(), 2);
    assert_eq!(names(&h.telegram.delivered_texts()), expected(0..2));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queuing_never_waits_for_a_hung_telegram() {
    let h = Harness::new(true).await;
    h.telegram.set_outage(true);
    h.enqueue(0..1).await;
    // A send that hangs for a minute (real time): it stays in flight during the whole test.
    let options = SenderOptions {
        request_timeout: Duration::from_secs(60),
        ..fast_options()
    };
    let sender = Sender::new(&h.config, h.store.clone(), h.clock.shared(), options).unwrap();
    let (_task, stop) = h.spawn(sender);
    eventually("a send in flight", || async { h.telegram.requests() >= 1 }).await;
    // While the sender waits on Telegram, events and their messages still commit (the budget
    // is generous for a loaded machine; a queue waiting on Telegram would take the full minute).
    tokio::time::timeout(Duration::from_secs(20), h.enqueue(1..50))
        .await
        .expect("queuing is independent of Telegram");
    assert_eq!(h.queued().await, 50);
    assert_eq!(
        h.telegram.requests(),
        1,
        "the hung send was still in flight"
    );
    let head = h.store.next_notification().await.unwrap().unwrap();
    assert_eq!(
        head.attempts, 0,
        "the hung attempt is not yet settled: {head:?}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_event_sends_nothing() {
    let h = Harness::new(true).await;
    let mut tx = h.store.begin().await.unwrap();
    h.notifier
        .queue(&mut tx, &Harness::message(0), h.clock.now_utc())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(h.queued().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_telegram_disabled_messages_are_logged_not_sent() {
    let h = Harness::new(false).await;
    h.enqueue(0..3).await;
    let (_task, stop) = h.spawn(h.sender(h.store.clone()));
    eventually("logged", || async { h.queued().await == 0 }).await;
    let stats = h.store.outbox_stats().await.unwrap();
    assert_eq!((stats.logged, stats.sent), (3, 0));
    assert_eq!(h.telegram.requests(), 0);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_wait_behind_event_messages() {
    use mt_notify::templates::AnalyticsSummary;
    let h = Harness::new(true).await;
    let mut tx = h.store.begin().await.unwrap();
    let summary = mt_notify::Message::AnalyticsSummary(AnalyticsSummary::default());
    h.notifier
        .queue(&mut tx, &summary, h.clock.now_utc())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    h.enqueue(0..2).await;
    let (_task, stop) = h.spawn(h.sender(h.store.clone()));
    eventually("delivered", || async { h.queued().await == 0 }).await;
    let texts = h.telegram.delivered_texts();
    assert!(texts[0].contains("message 000") && texts[1].contains("message 001"));
    assert!(texts[2].contains("NETWORK ANALYTICS"));
    stop.cancel();
}

/// SPEC §11: shutdown while Telegram is slow. Before: the sender waited for the send (up to
/// its request timeout, a minute here) before it stopped. Now: the send gets the shutdown
/// grace (2 s) and is abandoned; the message stays queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_never_waits_for_a_slow_telegram() {
    let h = Harness::new(true).await;
    h.telegram.set_answer_delay(Duration::from_secs(30));
    h.enqueue(0..1).await;
    let options = SenderOptions {
        request_timeout: Duration::from_secs(60),
        ..fast_options()
    };
    let sender = Sender::new(&h.config, h.store.clone(), h.clock.shared(), options).unwrap();
    let (task, stop) = h.spawn(sender);
    eventually("a send in flight", || async { h.telegram.requests() >= 1 }).await;
    let asked = std::time::Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the sender stops within the grace, not after Telegram answers")
        .unwrap();
    let took = asked.elapsed();
    println!(
        "sender stopped {took:?} after the shutdown signal (grace 2 s, Telegram answering in 30 s)"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(h.queued().await, 1, "the unanswered message stays queued");
}
