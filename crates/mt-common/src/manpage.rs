//! Man pages for every binary of the suite, generated from its own `clap` definition (so they
//! never drift from `--help`): `BINARY --print-man-pages DIR` writes `BINARY.1` and one page per
//! subcommand (`mtctl-status.1`, …, which the main page refers to) into DIR and exits. The
//! Debian package build (`scripts/build-deb`) runs it for each binary.

/// The undocumented flag that writes the man pages.
pub const FLAG: &str = "--print-man-pages";

/// When the first argument is [`FLAG`], writes `C`'s man pages into the directory named by the
/// second argument and exits (0, or 1 with a message when it cannot). Call it first thing in
/// `main`, before parsing.
pub fn exit_if_requested<C: clap::CommandFactory>() {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|a| a != FLAG) {
        return;
    }
    let Some(dir) = args.next() else {
        eprintln!("error: {FLAG} needs a directory");
        std::process::exit(2);
    };
    match clap_mangen::generate_to(C::command(), &dir) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!(
                "error: cannot write man pages to {}: {e}",
                std::path::Path::new(&dir).display()
            );
            std::process::exit(1);
        }
    }
}
