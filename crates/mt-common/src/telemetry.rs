//! Tracing initialisation shared by every binary: one line per event on stderr, filtered by
//! `RUST_LOG` (default `info`). Colours only on a terminal.
//!
//! Under systemd, stderr goes to journald, which stores every line at the unit's default
//! priority unless the line starts with a `<N>` syslog-priority prefix (`SyslogLevelPrefix=`,
//! on by default). When stderr *is* the journal stream (`$JOURNAL_STREAM` names its device and
//! inode), each line gets the prefix of its level (error 3, warn 4, info 6, debug and trace 7)
//! and no timestamp (journald adds its own), so `journalctl -p warning` shows warnings and
//! errors only. Anywhere else (a terminal, a pipe, a file) the lines are unchanged.

use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber. Safe to call once per process; later calls are ignored.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if stderr_is_journal() {
        let format = tracing_subscriber::fmt::format()
            .with_target(false)
            .with_ansi(false)
            .without_time();
        let _ = builder.event_format(JournalPriority(format)).try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// The `<N>` prefix journald reads as the line's priority (sd-daemon(3)).
pub fn journal_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Whether `journal_stream` (the value of `$JOURNAL_STREAM`, "device:inode") names the file
/// whose device and inode are given: systemd's way to say "your stderr is the journal" that
/// stays false after stderr was redirected elsewhere.
pub fn names_stream(journal_stream: Option<&str>, device: u64, inode: u64) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    dev.parse() == Ok(device) && ino.parse() == Ok(inode)
}

fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;

    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    names_stream(stream.to_str(), meta.dev(), meta.ino())
}

/// Writes the journald priority prefix, then the line as `F` formats it.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", journal_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_must_match_device_and_inode() {
        assert!(names_stream(Some("8:1234"), 8, 1234));
        assert!(!names_stream(Some("8:1234"), 8, 1235));
        assert!(!names_stream(Some("9:1234"), 8, 1234));
        assert!(!names_stream(Some("garbage"), 8, 1234));
        assert!(!names_stream(None, 8, 1234));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(journal_priority(&Level::ERROR), 3);
        assert_eq!(journal_priority(&Level::WARN), 4);
        assert_eq!(journal_priority(&Level::INFO), 6);
        assert_eq!(journal_priority(&Level::DEBUG), 7);
        assert_eq!(journal_priority(&Level::TRACE), 7);
    }
}
