//! Man pages for every binary of the suite, generated from its own `clap` definition (so they
//! never drift from `--help`): `BINARY --print-man-page` writes the roff page to stdout and
//! exits. The Debian package build (`scripts/build-deb`) runs it for each binary.

use std::io::Write as _;

/// The undocumented flag that prints the man page.
pub const FLAG: &str = "--print-man-page";

/// When the first argument is [`FLAG`], prints `C`'s man page and exits (0, or 1 when stdout
/// fails). Call it first thing in `main`, before parsing.
pub fn exit_if_requested<C: clap::CommandFactory>() {
    if std::env::args_os().nth(1).is_none_or(|a| a != FLAG) {
        return;
    }
    let mut page = Vec::new();
    let written = clap_mangen::Man::new(C::command())
        .render(&mut page)
        .and_then(|()| std::io::stdout().write_all(&page));
    std::process::exit(i32::from(written.is_err()));
}
