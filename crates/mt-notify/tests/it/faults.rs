//! Fault injection (SPEC §10): a delivery the database cannot record, messages and chats
//! Telegram refuses for good.

use std::time::Duration;

use chrono::Duration as Span;
use mt_notify::{Sender, SenderOptions};
use mt_store::OpenOptions;

use crate::common::*;

fn names(texts: &[String]) -> Vec<String> {
    texts.iter().map(|t| message_name(t)).collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("message {n:03}")).collect()
}

/// Telegram accepts a message, then the database refuses the write that records it (another
/// process holds the write lock past `busy_timeout`). Before: the message stayed queued and
/// was sent again about once a second. Now: nothing is sent while the record fails, and each
/// message is delivered exactly once when the database is writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_database_cannot_record_is_never_sent_again() {
    let h = Harness::new(true).await;
    h.enqueue(0..3).await;
    let sender_store = mt_store::Store::open(&OpenOptions {
        busy_timeout: Duration::from_millis(200),
        ..h.store_options()
    })
    .await
    .unwrap();
    let (accepted, go) = h.telegram.hold_after_next_accept();
    let (task, stop) = h.spawn(h.sender(sender_store));

    tokio::task::spawn_blocking(move || accepted.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("telegram received the first message");
    // Another daemon takes the write lock before the sender hears Telegram's answer.
    let blocker = h.other_daemon_store().await;
    let lock = blocker.begin().await.unwrap();
    go.send(()).unwrap();

    // The sender keeps failing to record for a while; it must not send anything meanwhile.
    for _ in 0..20 {
        h.clock.advance(Span::seconds(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        h.telegram.requests(),
        1,
        "nothing is sent while a delivery is unrecorded"
    );

    lock.rollback().await.unwrap();
    eventually("all delivered", || async { h.queued().await == 0 }).await;
    assert_eq!(names(&h.telegram.delivered_texts()), expected(0..3));
    assert_eq!(h.telegram.requests(), 3, "exactly one request per message");
    assert_eq!(h.store.outbox_stats().await.unwrap().sent, 3);
    stop.cancel();
    task.await.unwrap();
}

/// A message Telegram refuses for good ("message is too long") followed by ten good ones.
/// Before: the sender retried the head for ever and the ten waited behind it. Now: the ten
/// are delivered in order, the refused one is `failed` after the bounded refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_failed_and_never_blocks_the_ten_behind_it() {
    let h = Harness::new(true).await;
    h.telegram.refuse(Refuse::TooLong("message 000".into()));
    h.enqueue(0..11).await;
    let (task, stop) = h.spawn(h.sender(h.store.clone()));
    advancing_until(&h, "the queue drained", Span::seconds(10), || async {
        h.queued().await == 0
    })
    .await;
    assert_eq!(names(&h.telegram.delivered_texts()), expected(1..11));
    let stats = h.store.outbox_stats().await.unwrap();
    assert_eq!((stats.sent, stats.failed), (10, 1));
    let failed = h.store.failed_notifications(10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(
        message_name(&failed[0].text) == "message 000"
            && failed[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("message is too long")),
        "{failed:?}"
    );
    assert_eq!(failed[0].refusals, 3, "bounded: three refusals");
    assert_eq!(
        h.telegram.requests(),
        13,
        "3 refused attempts + 10 deliveries"
    );

    let page = {
        let mut page = mt_common::metrics::Exposition::new();
        mt_notify::outbox_metrics(&mut page, &stats);
        page.finish()
    };
    assert!(page.contains("mt_notifications_failed_total 1"), "{page}");
    stop.cancel();
    task.await.unwrap();
}

/// The bot is kicked from the SOC group: no message fails, that chat pauses with its queue
/// kept, another chat's messages still go; once the bot is back, the queue is delivered in
/// order and the pause lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_chat_pauses_keeps_its_queue_and_never_blocks_other_chats() {
    let h = Harness::new(true).await;
    h.telegram.refuse(Refuse::Kicked(CHAT.into()));
    h.enqueue(0..3).await;
    h.enqueue_for_chat("4242", 3..6).await;
    let (task, stop) = h.spawn(h.sender(h.store.clone()));

    // Telegram counts a message as delivered before the sender records it: wait for both.
    eventually("the other chat delivered and recorded", || async {
        h.telegram.delivered().len() == 3 && h.queued().await == 3
    })
    .await;
    assert_eq!(names(&h.telegram.delivered_texts()), expected(3..6));
    let pauses = h.store.chat_pauses().await.unwrap();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    assert_eq!(pauses[0].chat_id, CHAT);
    assert!(pauses[0].reason.contains("kicked"), "{pauses:?}");
    let stats = h.store.outbox_stats().await.unwrap();
    assert_eq!((stats.queued, stats.failed, stats.paused_chats), (3, 0, 1));

    // An hour of refusals: capped backoff, never more than one attempt per 5-minute step (a
    // slow machine only makes fewer), still nothing failed.
    for _ in 0..12 {
        h.clock.advance(Span::minutes(5));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let in_the_hour = h.telegram.requests() - 3;
    assert!(
        in_the_hour <= 12,
        "paused with backoff, not hammered: {in_the_hour} attempts in an hour"
    );
    // The pause is retried, not given up: wait (in logical time) for a second refused attempt.
    advancing_until(&h, "a second refused attempt", Span::minutes(5), || async {
        h.telegram.requests() - 3 >= 2
    })
    .await;
    let stats = h.store.outbox_stats().await.unwrap();
    assert_eq!((stats.queued, stats.failed), (3, 0));

    h.telegram.accept_all();
    advancing_until(&h, "the paused chat drained", Span::minutes(1), || async {
        h.queued().await == 0
    })
    .await;
    let texts = h.telegram.delivered_texts();
    assert_eq!(names(&texts[3..]), expected(0..3), "its order kept");
    assert!(
        h.store.chat_pauses().await.unwrap().is_empty(),
        "pause lifted"
    );
    stop.cancel();
    task.await.unwrap();
}

/// A group migrated to a supergroup: the pause names the new chat id, no message fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_group_pauses_and_names_the_new_chat_id() {
    let h = Harness::new(true).await;
    h.telegram
        .refuse(Refuse::Migrated(CHAT.into(), -1_009_999_999_999));
    h.enqueue(0..2).await;
    let (task, stop) = h.spawn(h.sender(h.store.clone()));
    eventually("the chat paused", || async {
        !h.store.chat_pauses().await.unwrap().is_empty()
    })
    .await;
    let pause = &h.store.chat_pauses().await.unwrap()[0];
    assert_eq!(pause.migrate_to_chat_id.as_deref(), Some("-1009999999999"));
    assert!(pause.reason.contains("-1009999999999"), "{pause:?}");
    let stats = h.store.outbox_stats().await.unwrap();
    assert_eq!((stats.queued, stats.failed), (2, 0));
    stop.cancel();
    task.await.unwrap();
}

/// "Chat not found" (a wrong chat id) is a chat-level refusal, not a message failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_not_found_pauses_the_chat() {
    let h = Harness::new(true).await;
    h.telegram.refuse(Refuse::ChatNotFound(CHAT.into()));
    h.enqueue(0..2).await;
    let (task, stop) = h.spawn(h.sender(h.store.clone()));
    eventually("the chat paused", || async {
        h.store.outbox_stats().await.unwrap().paused_chats == 1
    })
    .await;
    for _ in 0..10 {
        h.clock.advance(Span::minutes(20));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let stats = h.store.outbox_stats().await.unwrap();
    assert_eq!((stats.queued, stats.failed), (2, 0));
    stop.cancel();
    task.await.unwrap();
}

/// A sender on a host whose clock lags (or that was paused) still believes in its lease when
/// the database's clock says it expired and another sender took over (SPEC §7.9, §10). Before:
/// nothing fenced it, so it recorded its delivery and went on sending the queue next to the
/// new holder (later messages twice). Now: its record is refused by the fencing token, it
/// stands by, and every later message is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_lease_was_taken_over_cannot_record_and_stands_by() {
    let h = Harness::new(true).await;
    h.enqueue(0..3).await;
    // Sender A: its own host clock, which never moves (lagging, or paused), and a slow path to
    // Telegram (its own fake, answering two seconds late).
    let slow = FakeTelegram::start().await;
    slow.set_answer_delay(Duration::from_secs(2));
    let a_config = config(&h.config.database.path, &slow.server.uri(), true);
    let lagging = mt_common::ManualClock::new(h.clock.now_utc());
    let a = Sender::new(
        &a_config,
        h.other_daemon_store().await,
        lagging.shared(),
        SenderOptions {
            request_timeout: Duration::from_secs(10),
            ..fast_options()
        },
    )
    .unwrap();
    let (task_a, stop_a) = h.spawn(a);
    eventually("A sent its first message", || async {
        slow.requests() >= 1
    })
    .await;

    // By the database's clock A's lease (30 s) expires; B takes over and drains the queue,
    // repeating the one message A has not recorded (allowed: at most one per chat).
    h.clock.advance(Span::seconds(31));
    let b = h.sender(h.other_daemon_store().await);
    let holder_b = b.holder().to_owned();
    let (task_b, stop_b) = h.spawn(b);
    eventually("B drained the queue", || async { h.queued().await == 0 }).await;

    // A hears Telegram's answer (two seconds after sending) and cannot record it; more
    // messages come.
    eventually("A's answer arrived", || async {
        slow.delivered().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // (Queued by a daemon on A's host: due by A's clock as well as by B's.)
    for n in 3..8 {
        let mut tx = h.store.begin().await.unwrap();
        h.notifier
            .queue(&mut tx, &Harness::message(n), lagging.now_utc())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    eventually("the new messages delivered", || async {
        h.queued().await == 0
    })
    .await;
    // Give a stale A every chance to send them too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        slow.requests(),
        1,
        "A sends nothing after losing its lease: {:?}",
        slow.delivered_texts()
    );
    assert_eq!(
        names(&h.telegram.delivered_texts()),
        expected(0..8),
        "B repeats A's unrecorded message once; every later message is sent once"
    );
    assert_eq!(
        h.store
            .lease_holder(mt_notify::LEASE_NAME)
            .await
            .unwrap()
            .map(|(holder, _)| holder),
        Some(holder_b),
        "B keeps the lease"
    );
    stop_a.cancel();
    stop_b.cancel();
    task_a.await.unwrap();
    task_b.await.unwrap();
}
