//! Test helpers: a temporary database file and the `sqlite3` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use mt_store::{OpenOptions, Store};

/// A temporary directory holding one database file.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestDb {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("magic_transit.db");
        Self { dir, path }
    }

    pub async fn open(&self) -> Store {
        Store::open(&OpenOptions::new(&self.path))
            .await
            .expect("open store")
    }
}

/// Runs `sql` through the `sqlite3` CLI (as an operator would) and returns its output.
/// `mode` is a `.mode` name (`list`, `quote`, …).
pub fn sqlite3(db: &Path, mode: &str, sql: &str) -> String {
    use std::io::Write;
    use std::process::Stdio;

    // The SQL goes on stdin: as an argument, text starting with "--" would be read as an option.
    let mut child = Command::new("sqlite3")
        .arg("-batch")
        .arg("-bail")
        .arg("-cmd")
        .arg(format!(".mode {mode}"))
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 CLI is installed (apt-get install sqlite3)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("write sql");
    let out = child.wait_with_output().expect("sqlite3 output");
    assert!(
        out.status.success(),
        "sqlite3 failed on {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A fixture file of this crate.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
