//! `mtctl telegram test`: one message to the configured chat, delivered now, with Telegram's
//! exact answer when it is refused.

use std::time::Duration;

use anyhow::{Context as _, bail};
use mt_common::SystemClock;
use mt_common::config::Config;
use mt_notify::templates::TestMessage;
use mt_notify::{Message, Notifier, Sender, SenderOptions, TestDelivery};
use mt_store::Store;

use crate::output::operator;

/// How often the outcome is read while a running daemon delivers the message.
const POLL: Duration = Duration::from_millis(250);

/// Queues the test message and delivers it (or waits up to `wait` for the daemon holding the
/// sender lease to). Fails, with what Telegram said and what to do, when it is not delivered.
pub async fn test(config: &Config, store: &Store, wait: Duration) -> anyhow::Result<()> {
    let chat = &config.telegram.chat_id;
    if !config.telegram.enabled {
        bail!("telegram.enabled is false: the daemons only log their messages; nothing was sent");
    }
    if chat.trim().is_empty() {
        bail!("telegram.chat_id is empty: set it to the group's id (see the README, \"Telegram\")");
    }
    let clock = SystemClock::shared();
    // Built before queueing: a missing bot token queues nothing.
    let mut sender = Sender::new(
        config,
        store.clone(),
        clock.clone(),
        SenderOptions::default(),
    )?;
    let now = clock.now();
    let message = Message::Test(TestMessage {
        operator: operator(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into()),
        at: now,
    });
    let mut tx = store.begin().await?;
    let ids = Notifier::new(&config.telegram)
        .queue(&mut tx, &message, now)
        .await?;
    tx.commit().await?;
    let id = *ids.first().context("the test message was not queued")?;
    println!("queued test message {id} for chat {chat}");
    match sender.deliver_test(id).await? {
        TestDelivery::Delivered => {
            println!("delivered: Telegram accepted the message for chat {chat}");
            Ok(())
        }
        TestDelivery::Refused { error } => refused(chat, &error),
        TestDelivery::Disabled => bail!("telegram.enabled is false; nothing was sent"),
        TestDelivery::LeaseHeld { holder } => {
            println!(
                "a running daemon ({holder}) holds the sender lease and delivers it; waiting up to {}s",
                wait.as_secs()
            );
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let (status, last_error) = store
                    .notification_status(id)
                    .await?
                    .context("the test message disappeared from the outbox")?;
                match status.as_str() {
                    "sent" => {
                        println!("delivered: Telegram accepted the message for chat {chat}");
                        return Ok(());
                    }
                    "failed" => return refused(chat, last_error.as_deref().unwrap_or("")),
                    "logged" => bail!("the daemon logged the message instead of sending it"),
                    _ if tokio::time::Instant::now() >= deadline => bail!(
                        "not delivered within {}s; it stays queued (last error: {}); see `mtctl notifications` and the daemon's log",
                        wait.as_secs(),
                        last_error.as_deref().unwrap_or("none yet")
                    ),
                    _ => tokio::time::sleep(POLL).await,
                }
            }
        }
    }
}

/// The error for a refusal: Telegram's answer, then what usually fixes it.
fn refused(chat: &str, error: &str) -> anyhow::Result<()> {
    let hint = advice(error);
    bail!("Telegram did not deliver the test message to chat {chat}: {error}{hint}")
}

/// What to do about the common refusals (the wording is Telegram's Bot API descriptions).
fn advice(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("migrated") || e.contains("upgraded to a supergroup") {
        "\n  the group became a supergroup: put its new id (above) in telegram.chat_id"
    } else if e.contains("chat not found") {
        "\n  telegram.chat_id is wrong, or the bot was never added to that chat (see the README, \"Telegram\")"
    } else if e.contains("not a member") || e.contains("kicked") || e.contains("blocked") {
        "\n  add the bot to the group again (or unblock it), then re-run this test"
    } else if e.contains("unauthorized") || e.contains("invalid token") {
        "\n  the bot token is wrong or was revoked: check telegram.bot_token_file (BotFather's /token)"
    } else if e.contains("not enough rights") {
        "\n  the bot may not post in this chat: let members (or the bot, as an admin) send messages"
    } else {
        ""
    }
}
