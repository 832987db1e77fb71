//! Output helpers: the original suite's table layout and durations.

/// `=` rule of the given width.
pub fn rule(c: char, width: usize) -> String {
    std::iter::repeat_n(c, width).collect()
}

/// `18m 45s`, `2h 5m`, `45s` (the seed's duration style); shared with the dashboard.
pub use mt_control::duration;

/// At most `n` characters of `s` (the seed truncates columns, e.g. `auto_schedu`).
pub fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Prints `value` as pretty JSON.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The operator's name: `$SUDO_USER`, else `$USER`.
pub fn operator() -> String {
    std::env::var("SUDO_USER")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_cuts() {
        assert_eq!(duration(1125), "18m 45s");
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(-3), "0s");
        assert_eq!(cut("auto_scheduled", 11), "auto_schedu");
    }
}
