//! The `mt-dashboard` binary: configuration errors are exit code 2 with the key named, before
//! anything listens; a started dashboard serves and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config(dir: &std::path::Path, port: u16, hash: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\npath = \"{}\"\n[telegram]\nenabled = false\n[dashboard]\nlisten = \"127.0.0.1:{port}\"\n\
             [[dashboard.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nrole = \"operator\"\n",
            dir.join("mt.db").display()
        ),
    )
    .unwrap();
    path
}

fn dashboard(config: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mt-dashboard"));
    c.arg("--config").arg(config).env("RUST_LOG", "warn");
    c
}

#[test]
fn a_malformed_password_hash_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), 1, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ");
    let out = dashboard(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dashboard.users[0].password_hash"), "{err}");
    assert!(!dir.path().join("mt.db").exists(), "nothing was opened");
}

#[test]
fn it_serves_then_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hash = mt_control::password::hash("a long enough password").unwrap();
    let path = config(dir.path(), port, &hash);
    let mut child = dashboard(&path).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        assert!(Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

/// A failed login never writes the typed user name raw: a newline in it cannot forge a journal
/// line, and an unknown name (perhaps a password typed into the wrong field) is not logged at
/// all — "unknown user" and the address only. A configured user's name is quoted.
#[test]
fn failed_logins_never_log_a_typed_name_raw() {
    use std::io::{BufRead, BufReader, Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hash = mt_control::password::hash("a long enough password").unwrap();
    let path = config(dir.path(), port, &hash);
    let mut child = dashboard(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let request = |raw: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                s.write_all(raw.as_bytes()).unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                return answer;
            }
            assert!(Instant::now() < deadline, "never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let login = |user: &str| -> String {
        let form = request("GET /login HTTP/1.0\r\n\r\n");
        let cookie = form
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: mt_login="))
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("a login cookie in {form}"))
            .to_owned();
        let csrf = form
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_owned();
        let body = format!(
            "csrf={csrf}&user={}&password=wrong",
            user.replace('%', "%25")
                .replace('\n', "%0A")
                .replace(' ', "%20")
                .replace('=', "%3D")
        );
        request(&format!(
            "POST /login HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Cookie: mt_login={cookie}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let secret = "hunter2-correct-horse";
    let forged = format!("{secret}\nWARN mt_dashboard: login user=alice ok");
    assert!(login(&forged).starts_with("HTTP/1.0 401"));
    assert!(login("alice").starts_with("HTTP/1.0 401"));

    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while log
        .iter()
        .filter(|l: &&String| l.contains("login failed"))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "no login lines in {log:#?}");
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            log.push(line);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let failed: Vec<&String> = log.iter().filter(|l| l.contains("login failed")).collect();
    println!("{failed:#?}");
    assert!(
        failed[0].contains("user=unknown user") && failed[0].contains("client=127.0.0.1"),
        "{failed:?}"
    );
    assert!(failed[1].contains("user=\"alice\""), "{failed:?}");
    assert!(
        log.iter().all(
            |l| !l.contains(secret) && !l.starts_with("WARN mt_dashboard: login user=alice ok")
        ),
        "the typed name reached the log: {log:#?}"
    );
}
