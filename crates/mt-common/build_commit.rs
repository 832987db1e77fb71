//! Build script shared by the daemon crates (`build = "../mt-common/build_commit.rs"`): the
//! git commit the binary was built from, for `mt_build_info` (see `mt_common::build_info!`).
//!
//! `MAGIC_TRANSIT_COMMIT` overrides it (a build from a tarball has no `.git`); without either
//! the commit is `unknown`. It lives in the daemon crates, not in `mt-common`, so a new commit
//! rebuilds four crates instead of the whole workspace. The variable it sets does not start
//! with `MT_`: cargo also sets it for `cargo test`, and the config loader refuses unknown
//! `MT_` variables in the environment the daemons inherit.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Asks cargo to run this again when HEAD moves (a commit, a checkout) — only files that
/// exist: a missing one would make cargo rerun the script on every build.
fn watch(path: Option<String>) {
    if let Some(p) = path
        && std::path::Path::new(&p).exists()
    {
        println!("cargo:rerun-if-changed={p}");
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=MAGIC_TRANSIT_COMMIT");
    let commit = std::env::var("MAGIC_TRANSIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            watch(git(&[
                "rev-parse",
                "--path-format=absolute",
                "--git-path",
                "HEAD",
            ]));
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch(git(&[
                    "rev-parse",
                    "--path-format=absolute",
                    "--git-path",
                    &branch,
                ]));
            }
            watch(git(&[
                "rev-parse",
                "--path-format=absolute",
                "--git-path",
                "packed-refs",
            ]));
            Some(commit)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=MAGIC_TRANSIT_BUILD_COMMIT={commit}");
}
