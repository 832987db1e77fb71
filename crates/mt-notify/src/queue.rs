//! Queuing a message inside the caller's transaction.

use chrono::{DateTime, Utc};
use mt_common::config::TelegramConfig;
use mt_store::{NewNotification, WriteTx, Writes};

use crate::{MAX_MESSAGE_CHARS, Message};

/// Parse mode of every rendered template.
pub const PARSE_MODE: &str = "MarkdownV2";

/// Renders and queues messages for the configured chat.
#[derive(Debug, Clone)]
pub struct Notifier {
    chat_id: String,
    org_name: String,
}

impl Notifier {
    /// A notifier for `[telegram]`. With `enabled = false` messages are still queued (with no
    /// chat), and the sender writes them to the log instead of Telegram.
    pub fn new(config: &TelegramConfig) -> Self {
        Self {
            chat_id: if config.enabled {
                config.chat_id.clone()
            } else {
                String::new()
            },
            org_name: config.org_name.clone(),
        }
    }

    /// Queues `message` in `tx`: it is sent only if `tx` commits, and the caller never waits
    /// for Telegram. A text longer than one Telegram message is queued as consecutive parts.
    /// Returns the queued rows' ids.
    pub async fn queue(
        &self,
        tx: &mut WriteTx,
        message: &Message,
        now: DateTime<Utc>,
    ) -> mt_store::Result<Vec<i64>> {
        self.queue_all(tx, [(message, now)]).await
    }

    /// Queues several messages in order, as [`Notifier::queue`] one after another would, in
    /// one statement (the receiver's group commit). Returns every queued row's id, in order.
    pub async fn queue_all<'m>(
        &self,
        tx: &mut WriteTx,
        messages: impl IntoIterator<Item = (&'m Message, DateTime<Utc>)>,
    ) -> mt_store::Result<Vec<i64>> {
        let parts = self.parts(messages);
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        tx.enqueue_notifications(&self.rows(&parts)).await
    }

    /// Queues the same rows as [`Notifier::queue_all`] in `writes`, to go with the commit
    /// ([`WriteTx::commit_with`]): the receiver's group commit, which reads no ids.
    pub fn queue_into<'m>(
        &self,
        writes: &mut Writes,
        messages: impl IntoIterator<Item = (&'m Message, DateTime<Utc>)>,
    ) {
        let parts = self.parts(messages);
        writes.notifications(&self.rows(&parts));
    }

    /// Each message rendered, split into parts of at most one Telegram message, in order.
    fn parts<'m>(
        &self,
        messages: impl IntoIterator<Item = (&'m Message, DateTime<Utc>)>,
    ) -> Vec<(&'m Message, DateTime<Utc>, String)> {
        messages
            .into_iter()
            .flat_map(|(message, now)| {
                split_message(&message.render(&self.org_name), MAX_MESSAGE_CHARS)
                    .into_iter()
                    .map(move |part| (message, now, part))
            })
            .collect()
    }

    /// The outbox rows of `parts`, for the configured chat.
    fn rows<'a>(
        &'a self,
        parts: &'a [(&Message, DateTime<Utc>, String)],
    ) -> Vec<NewNotification<'a>> {
        parts
            .iter()
            .map(|(message, now, part)| NewNotification {
                chat_id: &self.chat_id,
                kind: message.kind(),
                priority: message.priority() as i64,
                text: part,
                parse_mode: PARSE_MODE,
                created_at: *now,
            })
            .collect()
    }
}

/// Splits `text` into parts of at most `limit` UTF-16 code units, at line boundaries. A single
/// line longer than `limit` is cut at a character boundary that does not separate an escape
/// backslash from the character it escapes.
///
/// Telegram's limit is "1-4096 characters after entities parsing" (Bot API, `sendMessage`),
/// and it counts text in UTF-16 code units (its entity offsets are UTF-16; a character outside
/// the Basic Multilingual Plane, such as most emoji, counts 2). Counting the UTF-16 units of
/// the MarkdownV2 *source* is never less than what Telegram counts after parsing (markup and
/// escapes only shrink the text), so every part is accepted whichever way it counts.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(2);
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    for line in text.split_inclusive('\n') {
        let len = utf16_len(line);
        if current_len + len > limit && !current.is_empty() {
            parts.push(std::mem::take(&mut current));
            current_len = 0;
        }
        if len <= limit {
            current.push_str(line);
            current_len += len;
            continue;
        }
        let mut chunk = String::new();
        let mut chunk_len = 0;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            // Keep "\x" together.
            let pair = c == '\\' && chars.peek().is_some();
            let need = c.len_utf16() + chars.peek().filter(|_| pair).map_or(0, |n| n.len_utf16());
            if chunk_len + need > limit {
                parts.push(std::mem::take(&mut chunk));
                chunk_len = 0;
            }
            chunk.push(c);
            chunk_len += c.len_utf16();
            if pair && let Some(next) = chars.next() {
                chunk.push(next);
                chunk_len += next.len_utf16();
            }
        }
        current = chunk;
        current_len = chunk_len;
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
        .into_iter()
        .map(|p| p.trim_end_matches('\n').to_owned())
        .filter(|p| !p.trim().is_empty())
        .collect()
}

/// Length as Telegram counts it: UTF-16 code units.
pub fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_message("a\nb\n", 10), vec!["a\nb"]);
    }

    #[test]
    fn splits_at_line_boundaries_and_keeps_every_line() {
        let text: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
        let parts = split_message(&text, 100);
        assert!(parts.iter().all(|p| p.chars().count() <= 100));
        assert!(
            parts.iter().all(|p| p.starts_with("line ")),
            "no part starts mid-line"
        );
        assert_eq!(parts.join("\n") + "\n", text);
    }

    #[test]
    fn a_huge_line_is_cut_without_splitting_an_escape() {
        let line = "\\.".repeat(3000);
        let parts = split_message(&line, 4095);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(p.chars().count() <= 4095);
            assert!(p.starts_with("\\."), "{}", &p[..4]);
        }
        assert_eq!(parts.concat(), line);
    }

    #[test]
    fn emoji_count_two_as_telegram_counts_them() {
        // 3,000 emoji: 3,000 characters but 6,000 UTF-16 units, over Telegram's 4,096.
        let text = "🚨".repeat(3000);
        let parts = split_message(&text, 4096);
        assert_eq!(
            parts.len(),
            2,
            "{:?}",
            parts.iter().map(|p| utf16_len(p)).collect::<Vec<_>>()
        );
        assert!(parts.iter().all(|p| utf16_len(p) <= 4096));
        assert_eq!(parts.concat(), text);
    }

    proptest::proptest! {
        /// Every part fits Telegram's limit as it counts, no escape is separated from what it
        /// escapes, and the parts put back together are the text (line breaks at cuts aside).
        #[test]
        fn every_part_fits_and_nothing_is_lost(
            lines in proptest::collection::vec("(\\\\[._*]|[a-z ]|🚨|é|\\n){0,60}", 0..40),
            limit in 8usize..64,
        ) {
            let text = lines.join("\n");
            let parts = split_message(&text, limit);
            for p in &parts {
                proptest::prop_assert!(utf16_len(p) <= limit, "{} > {limit}: {p:?}", utf16_len(p));
                proptest::prop_assert!(!p.ends_with('\\') || p.ends_with("\\\\"), "escape cut: {p:?}");
            }
            // Only line breaks at cuts and whitespace-only parts are dropped.
            let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            proptest::prop_assert_eq!(strip(&parts.concat()), strip(&text));
        }
    }
}
