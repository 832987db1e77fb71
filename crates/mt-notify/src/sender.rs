//! The background sender: delivers queued messages to Telegram, one process at a time.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mt_common::SharedClock;
use mt_common::config::Config;
use mt_common::timefmt::from_db;
use mt_store::{QueuedNotification, Store};
use secrecy::ExposeSecret;
use teloxide::payloads::SendMessageSetters;
use teloxide::requests::Requester;
use teloxide::types::{ChatId, ParseMode, Recipient};
use teloxide::{Bot, RequestError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::markdown::to_plain;
use crate::outbox::{
    Attempts, Next, Policy, Queued, Refusal, Settlement, classify, next_message, settle,
};

/// Name of the database lease that picks the one sender.
pub const LEASE_NAME: &str = "telegram-sender";

/// The longest a healthy sender goes between two turns: a paced send in a group chat
/// (about 3 s), a request timeout and teloxide's pause after a 5xx, with a wide margin.
pub const PROGRESS_BOUND: Duration = Duration::from_secs(300);

/// Messages marked per transaction when Telegram is disabled.
const LOG_BATCH: u32 = 500;

/// Timing of the sender. The defaults follow Telegram's limits; tests shorten them.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Minimum gap between two messages to one chat (Telegram: about one per second).
    pub min_interval: Duration,
    /// Most messages to one group chat in any minute (Telegram: 20).
    pub group_per_minute: usize,
    /// How often an idle or passive sender looks at the queue and the lease.
    pub poll_interval: Duration,
    /// Lease length. Renewed before every send, and longer than one send can take
    /// (request timeout + teloxide's 10 s pause after a 5xx), so a slow send never lets a
    /// second sender in.
    pub lease_ttl: Duration,
    /// Total timeout of one Telegram request.
    pub request_timeout: Duration,
    /// Retries, refusals and chat pauses (SPEC §10).
    pub policy: Policy,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(1100),
            group_per_minute: 20,
            poll_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(45),
            request_timeout: Duration::from_secs(15),
            policy: Policy::default(),
        }
    }
}

/// Why the sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The bot token or URL is missing or invalid.
    #[error(transparent)]
    Config(#[from] mt_common::ConfigError),
    /// `telegram.api_url` is not a URL.
    #[error("config key telegram.api_url: {0}")]
    Url(#[from] url::ParseError),
    /// The HTTP client could not be built.
    #[error("cannot build the Telegram HTTP client: {0}")]
    Client(String),
}

/// What [`Sender::deliver_test`] did with the test message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestDelivery {
    /// Telegram accepted it (recorded as delivered).
    Delivered,
    /// Telegram refused it, or could not be reached: the exact answer (recorded as failed, so
    /// it is never sent later by surprise).
    Refused {
        /// Telegram's description (e.g. `Bad Request: chat not found`), or the transport error.
        error: String,
    },
    /// Telegram is disabled: nothing can be sent (`telegram.enabled = false`).
    Disabled,
    /// Another process holds the sender lease: that running daemon delivers it.
    LeaseHeld {
        /// The holder, as recorded in the lease.
        holder: String,
    },
}

/// Delivers the outbox. Build with [`Sender::new`], run with [`Sender::run`].
#[derive(Debug)]
pub struct Sender {
    store: Store,
    clock: SharedClock,
    bot: Option<Bot>,
    holder: String,
    options: SenderOptions,
    pacer: Pacer,
    /// Our lease, while held: its fence (every outbox write checks it) and until when it
    /// surely holds, by the injected clock and by the monotonic clock (a wall clock that jumps
    /// never makes it look longer). `None`: not held.
    lease: Option<HeldLease>,
    /// A message Telegram accepted whose delivery the database has not recorded yet: nothing
    /// new is sent until it is (SPEC §10), so a failing write never repeats a message.
    unrecorded: Option<Unrecorded>,
}

/// The sender lease as this process knows it.
#[derive(Debug, Clone)]
struct HeldLease {
    fence: mt_store::Fence,
    until: DateTime<Utc>,
    until_mono: std::time::Instant,
}

/// A delivery kept in memory until the database records it.
#[derive(Debug, Clone)]
struct Unrecorded {
    id: i64,
    chat_id: String,
    at: DateTime<Utc>,
}

/// Telegram's per-chat pacing: at least `min_interval` between messages, and at most
/// `per_minute` messages in any minute to a group chat.
#[derive(Debug)]
struct Pacer {
    min_interval: Duration,
    per_minute: usize,
    sent: VecDeque<Instant>,
}

impl Pacer {
    fn new(min_interval: Duration, per_minute: usize) -> Self {
        Self {
            min_interval,
            per_minute: per_minute.max(1),
            sent: VecDeque::new(),
        }
    }

    /// How long to wait at `now` before sending one more message.
    fn delay(&mut self, now: Instant, group: bool) -> Duration {
        let minute = Duration::from_secs(60);
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= minute)
        {
            self.sent.pop_front();
        }
        let mut wait = self
            .sent
            .back()
            .map(|last| self.min_interval.saturating_sub(now.duration_since(*last)))
            .unwrap_or_default();
        if group
            && self.sent.len() >= self.per_minute
            && let Some(first) = self.sent.front()
        {
            wait = wait.max(minute.saturating_sub(now.duration_since(*first)));
        }
        wait
    }

    fn record(&mut self, at: Instant) {
        self.sent.push_back(at);
    }
}

/// What one turn of the loop found.
enum Turn {
    /// Another process holds the lease, or the queue is empty.
    Idle,
    /// The head message is not due yet.
    Wait(Duration),
    /// Something was delivered or rescheduled: look again at once.
    Again,
}

impl Sender {
    /// A sender for `config.telegram`. With Telegram disabled no token is needed and messages
    /// are only logged.
    pub fn new(
        config: &Config,
        store: Store,
        clock: SharedClock,
        options: SenderOptions,
    ) -> Result<Self, SenderError> {
        let bot = if config.telegram.enabled {
            let (token, _) = config.telegram_bot_token()?;
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5).min(options.request_timeout))
                .timeout(options.request_timeout)
                .user_agent(concat!(
                    "magic-transit-ondemand/",
                    env!("CARGO_PKG_VERSION")
                ))
                .build()
                .map_err(|e| SenderError::Client(e.to_string()))?;
            let url = url::Url::parse(&config.telegram.api_url)?;
            Some(Bot::with_client(token.expose_secret(), client).set_api_url(url))
        } else {
            None
        };
        let holder = format!(
            "pid{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let pacer = Pacer::new(options.min_interval, options.group_per_minute);
        Ok(Self {
            store,
            clock,
            bot,
            holder,
            options,
            pacer,
            lease: None,
            unrecorded: None,
        })
    }

    /// `mtctl telegram test`: sends the queued message `id` at once, if no running daemon holds
    /// the sender lease, and records the outcome: delivered, or failed with Telegram's exact
    /// answer. Nothing else in the queue is sent; the lease is released before returning.
    pub async fn deliver_test(&mut self, id: i64) -> mt_store::Result<TestDelivery> {
        let Some(bot) = self.bot.clone() else {
            return Ok(TestDelivery::Disabled);
        };
        let Some(fence) = self.lease(self.clock.now(), true).await? else {
            let holder = self
                .store
                .lease_holder(LEASE_NAME)
                .await?
                .map(|(holder, _)| holder)
                .unwrap_or_default();
            return Ok(TestDelivery::LeaseHeld { holder });
        };
        let outcome = async {
            let Some(message) = self.store.queued_notification(id).await? else {
                return Ok(TestDelivery::Refused {
                    error: format!("message {id} is no longer queued"),
                });
            };
            let result = match send(&bot, &message, false).await {
                Err(e) if classify(&e) == Refusal::Markup => send(&bot, &message, true).await,
                other => other,
            };
            match result {
                Ok(()) => {
                    self.store
                        .record_delivery(&fence, id, &message.chat_id, self.clock.now())
                        .await?;
                    Ok(TestDelivery::Delivered)
                }
                Err(e) => {
                    let error = describe(&e);
                    self.store.fail_notification(&fence, id, &error).await?;
                    Ok(TestDelivery::Refused { error })
                }
            }
        }
        .await;
        self.lease = None;
        if let Err(e) = self.store.release_lease(LEASE_NAME, &self.holder).await {
            tracing::warn!(error = %e, "cannot release the sender lease; it expires by itself");
        }
        outcome
    }

    /// This sender's lease holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Delivers messages until `shutdown`, then gives the lease up. A send in flight (or its
    /// pacing wait) gets [`mt_common::shutdown::GRACE`] to finish and record; a slower one is
    /// abandoned, so shutdown never waits for a slow or rate-limiting Telegram (that one
    /// message may be sent again after the restart, SPEC §10).
    pub async fn run(self, shutdown: CancellationToken) {
        self.run_with(shutdown, mt_common::service::Progress::new())
            .await;
    }

    /// Runs the sender as the daemon's supervised task "telegram sender": it beats its
    /// progress after every turn, so a sender stuck longer than [`PROGRESS_BOUND`] stops the
    /// watchdog pings, and one that ends before shutdown stops the daemon.
    pub fn supervise(self, service: &mut mt_common::service::Service) {
        service.spawn(
            "telegram sender",
            Some(PROGRESS_BOUND),
            move |task| async move {
                self.run_with(task.stop, task.progress).await;
                Ok(())
            },
        );
    }

    async fn run_with(
        mut self,
        shutdown: CancellationToken,
        progress: mt_common::service::Progress,
    ) {
        tracing::info!(holder = %self.holder, telegram = self.bot.is_some(), "notification sender started");
        while !shutdown.is_cancelled() {
            progress.beat();
            let turn = tokio::select! {
                turn = self.turn() => turn,
                () = mt_common::shutdown::grace_elapsed(&shutdown, mt_common::shutdown::GRACE) => {
                    tracing::warn!(grace_secs = mt_common::shutdown::GRACE.as_secs(), "shutdown: a Telegram send or its pacing wait did not finish in time; abandoned");
                    break;
                }
            };
            let pause = match turn {
                Ok(Turn::Again) => continue,
                Ok(Turn::Idle) => self.options.poll_interval,
                Ok(Turn::Wait(d)) => d.min(self.options.poll_interval),
                Err(e) => {
                    tracing::warn!(error = %e, "notification sender: database error, retrying");
                    self.options.poll_interval
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        if let Err(e) = self.store.release_lease(LEASE_NAME, &self.holder).await {
            tracing::warn!(error = %e, "cannot release the sender lease; it expires by itself");
        }
        tracing::info!("notification sender stopped");
    }

    async fn turn(&mut self) -> mt_store::Result<Turn> {
        match self.fenced_turn().await {
            Err(mt_store::Error::LeaseLost { .. }) => {
                // Another sender took over while this one was slow or cut off from the
                // database: it owns the queue now (it may repeat the one message whose
                // delivery this sender could not record, SPEC §10).
                tracing::warn!(holder = %self.holder, "the sender lease was taken over; this sender stands by");
                self.lease = None;
                self.unrecorded = None;
                Ok(Turn::Idle)
            }
            other => other,
        }
    }

    async fn fenced_turn(&mut self) -> mt_store::Result<Turn> {
        if let Some(u) = &self.unrecorded {
            let Some(fence) = self.lease.as_ref().map(|l| l.fence.clone()) else {
                return Err(mt_store::Error::LeaseLost {
                    name: LEASE_NAME.into(),
                });
            };
            self.store
                .record_delivery(&fence, u.id, &u.chat_id, u.at)
                .await?;
            tracing::info!(id = u.id, "delivery recorded after the database recovered");
            self.unrecorded = None;
        }
        let now = self.clock.now();
        let Some(fence) = self.lease(now, false).await? else {
            return Ok(Turn::Idle);
        };
        let heads = self.store.queue_heads().await?;
        if self.bot.is_none() || heads.iter().any(|h| h.chat_id.is_empty()) {
            return self.log_only(&fence).await;
        }
        let pauses = self.store.chat_pauses().await?;
        let paused: BTreeMap<String, DateTime<Utc>> = pauses
            .iter()
            .filter_map(|p| Some((p.chat_id.clone(), from_db(&p.paused_until)?)))
            .collect();
        let queue: Vec<Queued> = heads
            .into_iter()
            .map(|h| Queued {
                due: from_db(&h.next_attempt_at).unwrap_or(now),
                id: h.id,
                chat_id: h.chat_id,
                priority: h.priority,
            })
            .collect();
        let id = match next_message(&queue, &paused, now) {
            Next::Idle => return Ok(Turn::Idle),
            Next::WaitUntil(t) => return Ok(Turn::Wait((t - now).to_std().unwrap_or_default())),
            Next::Send(id) => id,
        };
        let Some(message) = self.store.queued_notification(id).await? else {
            return Ok(Turn::Again);
        };
        let Some(bot) = self.bot.clone() else {
            return Ok(Turn::Again);
        };
        self.pace(&message.chat_id).await;
        // The lease must outlast the send: renew first unless it surely does.
        let Some(fence) = self.lease(self.clock.now(), true).await? else {
            return Ok(Turn::Idle);
        };
        let result = match send(&bot, &message, false).await {
            Err(e) if classify(&e) == Refusal::Markup => {
                tracing::warn!(id = message.id, kind = %message.kind, error = %e, "telegram refused the markup; resending as plain text");
                send(&bot, &message, true).await
            }
            other => other,
        };
        let chat_failures = pauses
            .iter()
            .find(|p| p.chat_id == message.chat_id)
            .map_or(0, |p| p.failures);
        let before = Attempts {
            attempts: count(message.attempts),
            refusals: count(message.refusals),
            chat_failures: count(chat_failures),
        };
        let refusal = result.as_ref().err().map(classify);
        let error = result.as_ref().err().map(describe).unwrap_or_default();
        let now = self.clock.now();
        match settle(refusal.as_ref(), before, &self.options.policy, now) {
            Settlement::Delivered => {
                tracing::info!(id = message.id, kind = %message.kind, "notification delivered");
                if let Err(e) = self
                    .store
                    .record_delivery(&fence, message.id, &message.chat_id, now)
                    .await
                {
                    if matches!(e, mt_store::Error::LeaseLost { .. }) {
                        return Err(e);
                    }
                    tracing::error!(id = message.id, error = %e, "telegram accepted the message but the database cannot record it; nothing new is sent until it does");
                    self.unrecorded = Some(Unrecorded {
                        id: message.id,
                        chat_id: message.chat_id.clone(),
                        at: now,
                    });
                    return Err(e);
                }
            }
            Settlement::Retry { at, refused } => {
                tracing::warn!(id = message.id, kind = %message.kind, attempts = message.attempts + 1, refused, retry_in_secs = (at - now).num_seconds(), error = %error, "notification not delivered; kept queued");
                self.store
                    .reschedule_notification(&fence, message.id, at, &error, refused)
                    .await?;
            }
            Settlement::Failed => {
                tracing::error!(id = message.id, kind = %message.kind, refusals = message.refusals + 1, error = %error, "telegram refused the message for good; marked failed (see mtctl notifications)");
                self.store
                    .fail_notification(&fence, message.id, &error)
                    .await?;
            }
            Settlement::PauseChat { until, migrate_to } => {
                let new_chat = migrate_to.map(|id| id.to_string());
                tracing::error!(chat_id = %message.chat_id, new_chat_id = new_chat.as_deref().unwrap_or("-"), paused_secs = (until - now).num_seconds(), error = %error, "telegram refused the chat; its delivery is paused and its queue kept");
                self.store
                    .pause_chat(&fence, &message.chat_id, &error, until, migrate_to, now)
                    .await?;
            }
        }
        Ok(Turn::Again)
    }

    /// Telegram disabled (or no chat): writes the waiting messages to the log and marks them,
    /// a batch per transaction, at most one partial batch per poll interval.
    async fn log_only(&mut self, fence: &mt_store::Fence) -> mt_store::Result<Turn> {
        let batch = self.store.queued_notifications(LOG_BATCH).await?;
        let mut ids = Vec::with_capacity(batch.len());
        for message in batch
            .iter()
            .filter(|m| self.bot.is_none() || m.chat_id.is_empty())
        {
            tracing::info!(id = message.id, kind = %message.kind, text = ?to_plain(&message.text), "telegram disabled; message logged");
            ids.push(message.id);
        }
        self.store
            .mark_notifications_logged(fence, &ids, self.clock.now())
            .await?;
        // A full batch: more are waiting. Else the queue was drained: look again after the
        // poll interval, not at once. Marking each group commit's few messages in a
        // transaction of their own doubled the receiver's fsyncs under load (issue #22).
        Ok(if batch.len() >= LOG_BATCH as usize {
            Turn::Again
        } else {
            Turn::Idle
        })
    }

    /// Takes or renews the lease when needed: when not held, when half of it is used, or
    /// (`before_send`) when a send could outlast it. Otherwise no database write.
    async fn lease(
        &mut self,
        now: DateTime<Utc>,
        before_send: bool,
    ) -> mt_store::Result<Option<mt_store::Fence>> {
        let ttl = self.options.lease_ttl;
        let margin = if before_send {
            (self.options.request_timeout + Duration::from_secs(11)).max(ttl / 2)
        } else {
            ttl / 2
        };
        let wall_margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
        if let Some(held) = &self.lease
            && held.until - now > wall_margin
            && held
                .until_mono
                .checked_duration_since(std::time::Instant::now())
                .is_some_and(|left| left > margin)
        {
            return Ok(Some(held.fence.clone()));
        }
        // Measured from before the request: the lease surely holds that long.
        let asked = std::time::Instant::now();
        let fence = self
            .store
            .acquire_lease(LEASE_NAME, &self.holder, ttl)
            .await?;
        self.lease = fence.clone().map(|fence| HeldLease {
            fence,
            until: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            until_mono: asked + ttl,
        });
        Ok(fence)
    }

    /// Waits until one more message to `chat` keeps within Telegram's pacing.
    async fn pace(&mut self, chat: &str) {
        let group = chat.starts_with('-');
        loop {
            let wait = self.pacer.delay(Instant::now(), group);
            if wait.is_zero() {
                self.pacer.record(Instant::now());
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// A count from the database as `u32` (negative or huge values clamp).
fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

async fn send(bot: &Bot, message: &QueuedNotification, plain: bool) -> Result<(), RequestError> {
    let recipient = match message.chat_id.parse::<i64>() {
        Ok(id) => Recipient::Id(ChatId(id)),
        Err(_) => Recipient::ChannelUsername(message.chat_id.clone()),
    };
    let request = if plain {
        bot.send_message(recipient, to_plain(&message.text))
    } else {
        let request = bot.send_message(recipient, message.text.clone());
        match message.parse_mode.as_str() {
            "MarkdownV2" => request.parse_mode(ParseMode::MarkdownV2),
            "HTML" => request.parse_mode(ParseMode::Html),
            _ => request,
        }
    };
    match request.await {
        Ok(_) => Ok(()),
        // Telegram said ok but its answer did not fit teloxide's model (API drift): the message
        // was sent, and sending it again would duplicate it.
        Err(RequestError::InvalidJson { raw, .. }) if answered_ok(&raw) => {
            tracing::warn!("telegram accepted the message but its answer could not be parsed");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn answered_ok(raw: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(raw)
        .is_ok_and(|v| v.get("ok") == Some(&serde_json::Value::Bool(true)))
}

/// A one-line description of a delivery failure (never includes the bot token: teloxide
/// strips it from network errors).
fn describe(e: &RequestError) -> String {
    match e {
        RequestError::RetryAfter(s) => format!("429 flood control: retry after {}s", s.seconds()),
        // Telegram's own description, once ("Bad Request: chat not found").
        RequestError::Api(api) => api.to_string(),
        RequestError::MigrateToChatId(id) => {
            format!(
                "chat migrated to a supergroup: set telegram.chat_id = \"{}\"",
                id.0
            )
        }
        other => {
            // The causes carry the useful part ("operation timed out", "connection refused").
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_keeps_one_per_interval_and_twenty_per_minute_for_groups() {
        let mut pacer = Pacer::new(Duration::from_millis(1100), 20);
        let t0 = Instant::now();
        assert_eq!(pacer.delay(t0, true), Duration::ZERO);
        pacer.record(t0);
        assert_eq!(
            pacer.delay(t0 + Duration::from_millis(100), true),
            Duration::from_millis(1000)
        );
        assert_eq!(
            pacer.delay(t0 + Duration::from_millis(1100), true),
            Duration::ZERO
        );
        // Twenty messages 1.1 s apart: the 21st waits for the minute of the first to pass.
        let mut pacer = Pacer::new(Duration::from_millis(1100), 20);
        for i in 0..20 {
            pacer.record(t0 + Duration::from_millis(1100) * i);
        }
        let now = t0 + Duration::from_millis(1100) * 20;
        assert_eq!(
            pacer.delay(now, true),
            Duration::from_secs(60) - Duration::from_millis(22_000)
        );
        assert_eq!(
            pacer.delay(now, false),
            Duration::ZERO,
            "private chats: one per interval only"
        );
        assert_eq!(
            pacer.delay(t0 + Duration::from_secs(60), true),
            Duration::ZERO,
            "the first left the window"
        );
    }
}
