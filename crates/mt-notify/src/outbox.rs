//! The outbox's decisions, as pure functions of their inputs (SPEC §10): which message goes
//! next, what Telegram's answer means, and what happens to the message and its chat.
//!
//! Invariants (checked by the property tests below and by `tests/it/faults.rs`):
//! 1. **Per-chat order.** A message is sent only when it is the first (priority, id) of its
//!    chat's queue; a message waiting for a retry holds back the rest of its chat only.
//! 2. **Priority across chats.** Of the chats that can send now, the lowest (priority, id) goes.
//! 3. **Nothing blocks for ever.** A message Telegram refuses for good leaves the queue
//!    (`failed`) after [`Policy::max_refusals`] refusals; a chat-level refusal pauses only that
//!    chat, with capped backoff, and fails no message.
//! 4. **Nothing is lost.** Only a delivery or a permanent refusal takes a message out of the
//!    queue; transient failures (network, 5xx, 429) only delay it.
//! 5. **The sender sleeps to the right moment.** When nothing can go now, it waits until the
//!    earliest moment something can, and is idle only when the queue is empty.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use teloxide::{ApiError, RequestError};

/// A queued message, as far as choosing the next one is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Row id (order within a priority).
    pub id: i64,
    /// Destination chat.
    pub chat_id: String,
    /// Lower goes first.
    pub priority: i64,
    /// Not to be attempted before this.
    pub due: DateTime<Utc>,
}

/// What the sender does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send this message now.
    Send(i64),
    /// Nothing can go before this moment.
    WaitUntil(DateTime<Utc>),
    /// The queue is empty.
    Idle,
}

/// Chooses the next message from the queued ones (all of them, or only each chat's first:
/// the answer is the same). `paused` maps a chat to the end of its pause.
pub fn next_message<'a>(
    queue: impl IntoIterator<Item = &'a Queued>,
    paused: &BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Next {
    // Each chat's first message by (priority, id).
    let mut heads: BTreeMap<&str, &Queued> = BTreeMap::new();
    for m in queue {
        heads
            .entry(m.chat_id.as_str())
            .and_modify(|h| {
                if (m.priority, m.id) < (h.priority, h.id) {
                    *h = m;
                }
            })
            .or_insert(m);
    }
    let mut best: Option<&Queued> = None;
    let mut earliest: Option<DateTime<Utc>> = None;
    for (chat, head) in heads {
        let ready_at = match paused.get(chat) {
            Some(until) => head.due.max(*until),
            None => head.due,
        };
        if ready_at <= now {
            if best.is_none_or(|b| (head.priority, head.id) < (b.priority, b.id)) {
                best = Some(head);
            }
        } else {
            earliest = Some(earliest.map_or(ready_at, |e| e.min(ready_at)));
        }
    }
    match (best, earliest) {
        (Some(m), _) => Next::Send(m.id),
        (None, Some(t)) => Next::WaitUntil(t),
        (None, None) => Next::Idle,
    }
}

/// What a failed attempt says about the message and its chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Telegram or the network failed; the message is fine. `retry_after` from a 429.
    Transient {
        /// Telegram's flood-control wait, when it gave one.
        retry_after: Option<Duration>,
    },
    /// Telegram refused the markup: resend as plain text.
    Markup,
    /// Telegram refused this message for good (a 400 about the message, too long, too large).
    Message,
    /// Telegram refused the chat: the bot was kicked or blocked, the chat does not exist, or a
    /// group became a supergroup (`migrate_to` is its new id).
    Chat {
        /// The supergroup's id, for a migrated group.
        migrate_to: Option<i64>,
    },
}

/// Reads a teloxide error. teloxide turns Telegram's answer into an [`ApiError`] by its
/// description (the HTTP code is not kept), so unknown descriptions are read by their prefix:
/// "Bad Request:" (400) is about the message, "Forbidden:" (403) about the chat, anything else
/// (5xx, "Unauthorized", a proxy's page) is transient and retried.
pub fn classify(e: &RequestError) -> Refusal {
    use ApiError as A;
    match e {
        RequestError::RetryAfter(s) => Refusal::Transient {
            retry_after: Some(s.duration()),
        },
        RequestError::MigrateToChatId(id) => Refusal::Chat {
            migrate_to: Some(id.0),
        },
        RequestError::Api(api) => match api {
            A::CantParseEntities(_) => Refusal::Markup,
            A::BotBlocked
            | A::BotKicked
            | A::BotKickedFromSupergroup
            | A::BotKickedFromChannel
            | A::UserDeactivated
            | A::CantInitiateConversation
            | A::CantTalkWithBots
            | A::ChatNotFound
            | A::GroupDeactivated
            | A::NotEnoughRightsToPostMessages => Refusal::Chat { migrate_to: None },
            A::MessageIsTooLong
            | A::MessageTextIsEmpty
            | A::EditedMessageIsTooLong
            | A::RequestEntityTooLarge => Refusal::Message,
            A::Unknown(description) => classify_description(description),
            // Every other known description is about a method we never call, or about the
            // bot (invalid token, getUpdates conflict): the message is not at fault.
            _ => Refusal::Transient { retry_after: None },
        },
        _ => Refusal::Transient { retry_after: None },
    }
}

fn classify_description(description: &str) -> Refusal {
    let lower = description.to_ascii_lowercase();
    if lower.starts_with("forbidden")
        || lower.contains("chat not found")
        || lower.contains("not enough rights")
        || lower.contains("have no rights")
    {
        Refusal::Chat { migrate_to: None }
    } else if lower.starts_with("bad request") {
        if lower.contains("can't parse entities") {
            Refusal::Markup
        } else {
            Refusal::Message
        }
    } else {
        Refusal::Transient { retry_after: None }
    }
}

/// The retry and pause rules.
#[derive(Debug, Clone)]
pub struct Policy {
    /// First retry delay after a failure; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// Longest `retry_after` honoured as given.
    pub retry_after_cap: Duration,
    /// Refusals of one message before it is marked failed (0 counts as 1).
    pub max_refusals: u32,
    /// First pause of a refused chat; doubles per consecutive refusal.
    pub chat_pause_base: Duration,
    /// Longest pause of a refused chat.
    pub chat_pause_cap: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
            retry_after_cap: Duration::from_secs(3600),
            max_refusals: 3,
            chat_pause_base: Duration::from_secs(60),
            chat_pause_cap: Duration::from_secs(900),
        }
    }
}

/// A message's delivery record before the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Failed attempts so far (any reason).
    pub attempts: u32,
    /// Permanent refusals so far.
    pub refusals: u32,
    /// Consecutive chat-level refusals of its chat so far.
    pub chat_failures: u32,
}

/// What to record after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Delivered: mark it sent and lift any pause of its chat.
    Delivered,
    /// Keep it queued; try again at `at`. `refused` counts a permanent refusal.
    Retry {
        /// Next attempt.
        at: DateTime<Utc>,
        /// Whether this attempt was a permanent refusal.
        refused: bool,
    },
    /// Refused for good too often: mark it failed.
    Failed,
    /// Pause the chat until `until`; the message is kept as it is.
    PauseChat {
        /// End of the pause.
        until: DateTime<Utc>,
        /// The group's new id, for a migration.
        migrate_to: Option<i64>,
    },
}

/// What an attempt's outcome (`None`: delivered) means for the message and its chat.
/// [`Refusal::Markup`] is settled as a message refusal: the sender retries as plain text
/// before it gets here.
pub fn settle(
    outcome: Option<&Refusal>,
    before: Attempts,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Settlement {
    let after = |d: Duration| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    match outcome {
        None => Settlement::Delivered,
        Some(Refusal::Transient { retry_after }) => Settlement::Retry {
            at: after(match retry_after {
                Some(d) => (*d).min(policy.retry_after_cap),
                None => doubling(policy.backoff_base, before.attempts, policy.backoff_cap),
            }),
            refused: false,
        },
        Some(Refusal::Message | Refusal::Markup) => {
            if before.refusals.saturating_add(1) >= policy.max_refusals.max(1) {
                Settlement::Failed
            } else {
                Settlement::Retry {
                    at: after(doubling(
                        policy.backoff_base,
                        before.attempts,
                        policy.backoff_cap,
                    )),
                    refused: true,
                }
            }
        }
        Some(Refusal::Chat { migrate_to }) => Settlement::PauseChat {
            until: after(doubling(
                policy.chat_pause_base,
                before.chat_failures,
                policy.chat_pause_cap,
            )),
            migrate_to: *migrate_to,
        },
    }
}

/// `base × 2^n`, at most `cap`.
fn doubling(base: Duration, n: u32, cap: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(n.min(16))).min(cap)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use chrono::TimeZone;
    use proptest::prelude::*;
    use teloxide::types::{ChatId, Seconds};

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap()
    }

    fn q(id: i64, chat: &str, priority: i64, due_s: i64) -> Queued {
        Queued {
            id,
            chat_id: chat.to_owned(),
            priority,
            due: t0() + chrono::Duration::seconds(due_s),
        }
    }

    #[test]
    fn a_retrying_head_holds_back_its_chat_only() {
        let queue = [q(1, "a", 1, 30), q(2, "a", 1, 0), q(3, "b", 1, 0)];
        assert_eq!(next_message(&queue, &BTreeMap::new(), t0()), Next::Send(3));
        let only_a = &queue[..2];
        assert_eq!(
            next_message(only_a, &BTreeMap::new(), t0()),
            Next::WaitUntil(t0() + chrono::Duration::seconds(30))
        );
    }

    #[test]
    fn a_paused_chat_is_skipped_and_woken_at_the_pause_end() {
        let queue = [q(1, "a", 0, 0), q(2, "b", 5, 0)];
        let paused = BTreeMap::from([("a".to_owned(), t0() + chrono::Duration::seconds(60))]);
        assert_eq!(next_message(&queue, &paused, t0()), Next::Send(2));
        assert_eq!(
            next_message(&queue[..1], &paused, t0()),
            Next::WaitUntil(t0() + chrono::Duration::seconds(60))
        );
        assert_eq!(next_message(&[], &paused, t0()), Next::Idle);
    }

    #[test]
    fn telegram_answers_are_read_by_what_they_refuse() {
        let api = |e: ApiError| classify(&RequestError::Api(e));
        assert_eq!(api(ApiError::MessageIsTooLong), Refusal::Message);
        assert_eq!(
            api(ApiError::Unknown(
                "Bad Request: message must be non-empty".into()
            )),
            Refusal::Message
        );
        assert_eq!(
            api(ApiError::ChatNotFound),
            Refusal::Chat { migrate_to: None }
        );
        assert_eq!(
            api(ApiError::BotKickedFromSupergroup),
            Refusal::Chat { migrate_to: None }
        );
        assert_eq!(
            api(ApiError::Unknown(
                "Forbidden: bot is not a member of the supergroup chat".into()
            )),
            Refusal::Chat { migrate_to: None }
        );
        assert_eq!(
            classify(&RequestError::MigrateToChatId(ChatId(-100_123))),
            Refusal::Chat {
                migrate_to: Some(-100_123)
            }
        );
        assert_eq!(
            api(ApiError::Unknown("Internal Server Error".into())),
            Refusal::Transient { retry_after: None }
        );
        assert_eq!(
            api(ApiError::InvalidToken),
            Refusal::Transient { retry_after: None },
            "a bot problem is not the message's fault"
        );
        assert_eq!(
            classify(&RequestError::RetryAfter(Seconds::from_seconds(7))),
            Refusal::Transient {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            api(ApiError::CantParseEntities(
                "Bad Request: can't parse entities".into()
            )),
            Refusal::Markup
        );
    }

    #[test]
    fn refusals_are_bounded_and_chat_pauses_capped() {
        let p = Policy::default();
        let before = Attempts {
            attempts: 5,
            refusals: 0,
            chat_failures: 0,
        };
        assert!(matches!(
            settle(Some(&Refusal::Message), before, &p, t0()),
            Settlement::Retry { refused: true, .. }
        ));
        let last = Attempts {
            refusals: p.max_refusals - 1,
            ..before
        };
        assert_eq!(
            settle(Some(&Refusal::Message), last, &p, t0()),
            Settlement::Failed
        );
        let chat = Attempts {
            chat_failures: 30,
            ..before
        };
        assert_eq!(
            settle(Some(&Refusal::Chat { migrate_to: None }), chat, &p, t0()),
            Settlement::PauseChat {
                until: t0() + chrono::Duration::from_std(p.chat_pause_cap).unwrap(),
                migrate_to: None
            }
        );
    }

    /// How the fake Telegram of the simulation treats one message.
    #[derive(Debug, Clone)]
    enum Script {
        /// Fails transiently `n` times, then is delivered.
        Flaky(u8),
        /// Refused for good, every time.
        Refused,
    }

    #[derive(Debug, Clone)]
    struct Msg {
        chat: usize,
        priority: i64,
        script: Script,
    }

    fn msg() -> impl Strategy<Value = Msg> {
        (
            0usize..3,
            0i64..3,
            prop_oneof![4 => (0u8..4).prop_map(Script::Flaky), 1 => Just(Script::Refused)],
        )
            .prop_map(|(chat, priority, script)| Msg {
                chat,
                priority,
                script,
            })
    }

    const CHATS: [&str; 3] = ["-100a", "-100b", "42"];

    /// Runs the pure rules as the sender does, with a fake Telegram: chat 2 refuses every
    /// message while `kicked_until` (simulated seconds) is ahead.
    fn simulate(msgs: &[Msg], kicked_until: i64) -> (Vec<i64>, BTreeSet<i64>, Vec<(i64, i64)>) {
        let policy = Policy::default();
        let mut queue: Vec<Queued> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| q(i as i64 + 1, CHATS[m.chat], m.priority, 0))
            .collect();
        let mut state: HashMap<i64, (Attempts, u8)> = HashMap::new();
        let mut paused: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut chat_failures: HashMap<String, u32> = HashMap::new();
        let mut delivered = Vec::new();
        let mut failed = BTreeSet::new();
        let mut sends = Vec::new();
        let mut now = t0();
        for _ in 0..10_000 {
            match next_message(&queue, &paused, now) {
                Next::Idle => break,
                Next::WaitUntil(t) => {
                    assert!(t > now, "invariant 5: a wait is in the future");
                    now = t;
                }
                Next::Send(id) => {
                    let pos = queue.iter().position(|m| m.id == id).unwrap();
                    let m = queue[pos].clone();
                    assert!(m.due <= now);
                    assert!(paused.get(&m.chat_id).is_none_or(|u| *u <= now));
                    sends.push((id, (now - t0()).num_seconds()));
                    let msg = &msgs[(id - 1) as usize];
                    let (attempts, transient_seen) = state.entry(id).or_insert((
                        Attempts {
                            attempts: 0,
                            refusals: 0,
                            chat_failures: 0,
                        },
                        0,
                    ));
                    attempts.chat_failures = chat_failures.get(&m.chat_id).copied().unwrap_or(0);
                    let kicked = msg.chat == 2 && (now - t0()).num_seconds() < kicked_until;
                    let outcome = if kicked {
                        Some(Refusal::Chat { migrate_to: None })
                    } else {
                        match msg.script {
                            Script::Flaky(n) if *transient_seen < n => {
                                *transient_seen += 1;
                                Some(Refusal::Transient { retry_after: None })
                            }
                            Script::Flaky(_) => None,
                            Script::Refused => Some(Refusal::Message),
                        }
                    };
                    match settle(outcome.as_ref(), *attempts, &policy, now) {
                        Settlement::Delivered => {
                            queue.remove(pos);
                            delivered.push(id);
                            paused.remove(&m.chat_id);
                            chat_failures.remove(&m.chat_id);
                        }
                        Settlement::Retry { at, refused } => {
                            attempts.attempts += 1;
                            attempts.refusals += u32::from(refused);
                            queue[pos].due = at;
                        }
                        Settlement::Failed => {
                            queue.remove(pos);
                            failed.insert(id);
                        }
                        Settlement::PauseChat { until, .. } => {
                            assert!(until > now);
                            paused.insert(m.chat_id.clone(), until);
                            *chat_failures.entry(m.chat_id.clone()).or_default() += 1;
                        }
                    }
                }
            }
        }
        assert!(queue.is_empty(), "the simulation drains the queue");
        (delivered, failed, sends)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Invariants 1–4 over generated queues: every message is delivered exactly once or
        /// failed after the bounded refusals, each chat in (priority, id) order, and a refused
        /// message or a kicked chat never blocks the other chats.
        #[test]
        fn every_message_is_delivered_once_or_failed_and_chats_keep_order(
            msgs in proptest::collection::vec(msg(), 0..40),
            kicked_until in prop_oneof![Just(0i64), 1i64..20_000],
        ) {
            let (delivered, failed, sends) = simulate(&msgs, kicked_until);
            let policy = Policy::default();
            for (i, m) in msgs.iter().enumerate() {
                let id = i as i64 + 1;
                let times = delivered.iter().filter(|d| **d == id).count();
                match m.script {
                    Script::Refused => {
                        prop_assert!(failed.contains(&id) && times == 0);
                        let refusals = sends.iter().filter(|(s, at)| *s == id
                            && !(m.chat == 2 && *at < kicked_until)).count();
                        prop_assert_eq!(refusals as u32, policy.max_refusals);
                    }
                    Script::Flaky(_) => prop_assert!(times == 1 && !failed.contains(&id)),
                }
            }
            for chat in 0..CHATS.len() {
                let order: Vec<(i64, i64)> = delivered.iter()
                    .filter(|id| msgs[(**id - 1) as usize].chat == chat)
                    .map(|id| (msgs[(*id - 1) as usize].priority, *id))
                    .collect();
                let mut sorted = order.clone();
                sorted.sort_unstable();
                prop_assert_eq!(order, sorted, "invariant 1: chat {} in order", chat);
            }
        }

        /// Invariants 2 and 5 for one choice: the chosen message is the first of its chat and
        /// the lowest ready (priority, id); a wait is until the earliest ready moment.
        #[test]
        fn the_choice_is_the_first_ready_head(
            msgs in proptest::collection::vec((0usize..3, 0i64..3, -5i64..5), 0..30),
            pauses in proptest::collection::vec(proptest::option::of(-5i64..5), 3),
        ) {
            let queue: Vec<Queued> = msgs.iter().enumerate()
                .map(|(i, (c, p, d))| q(i as i64 + 1, CHATS[*c], *p, *d)).collect();
            let paused: BTreeMap<String, DateTime<Utc>> = pauses.iter().enumerate()
                .filter_map(|(c, p)| p.map(|s| (CHATS[c].to_owned(), t0() + chrono::Duration::seconds(s))))
                .collect();
            let head = |chat: &str| queue.iter().filter(|m| m.chat_id == chat)
                .min_by_key(|m| (m.priority, m.id));
            let ready_at = |m: &Queued| paused.get(&m.chat_id).map_or(m.due, |u| m.due.max(*u));
            let heads: Vec<&Queued> = CHATS.iter().filter_map(|c| head(c)).collect();
            match next_message(&queue, &paused, t0()) {
                Next::Idle => prop_assert!(queue.is_empty()),
                Next::Send(id) => {
                    let m = queue.iter().find(|m| m.id == id).unwrap();
                    prop_assert_eq!(head(&m.chat_id).map(|h| h.id), Some(id));
                    prop_assert!(ready_at(m) <= t0());
                    for h in heads.iter().filter(|h| ready_at(h) <= t0()) {
                        prop_assert!((m.priority, m.id) <= (h.priority, h.id));
                    }
                }
                Next::WaitUntil(t) => {
                    prop_assert!(heads.iter().all(|h| ready_at(h) > t0()));
                    prop_assert_eq!(Some(t), heads.iter().map(|h| ready_at(h)).min());
                }
            }
            // Passing only each chat's first message gives the same answer.
            let only_heads: Vec<Queued> = heads.iter().map(|h| (*h).clone()).collect();
            prop_assert_eq!(next_message(&only_heads, &paused, t0()), next_message(&queue, &paused, t0()));
        }
    }
}
