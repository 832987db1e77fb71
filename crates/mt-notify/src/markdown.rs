//! Telegram MarkdownV2 escaping.
//!
//! Every character of `_*[]()~`>#+-=|{}.!` and `\` must be escaped outside entities; inside a
//! code span only `` ` `` and `\`. An IP address or CIDR (`.`, `:`, `/`) would otherwise break a
//! message, which Telegram then refuses outright.

/// Characters Telegram reserves in MarkdownV2 text.
pub const RESERVED: &[char] = &[
    '_', '*', '[', ']', '(', ')', '~', '`', '>', '#', '+', '-', '=', '|', '{', '}', '.', '!', '\\',
];

/// Escapes `s` for MarkdownV2 text (outside entities, or inside bold/italic).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    for c in s.chars() {
        if RESERVED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes `s` for the inside of a `` `code` `` span.
pub fn escape_code(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The text a MarkdownV2 message shows, without markup: used when Telegram refuses to parse a
/// message ("can't parse entities"), so the SOC still gets its content.
pub fn to_plain(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut chars = markdown.chars().peekable();
    let mut in_code = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '`' => in_code = !in_code,
            '*' | '_' | '~' if !in_code => {}
            '|' if !in_code && chars.peek() == Some(&'|') => {
                chars.next();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_reserved_character() {
        assert_eq!(escape("203.0.113.0/24"), "203\\.0\\.113\\.0/24");
        assert_eq!(escape("a_b*c"), "a\\_b\\*c");
        assert_eq!(escape("\\"), "\\\\");
        assert_eq!(escape_code("a`b\\c.d"), "a\\`b\\\\c.d");
    }

    #[test]
    fn plain_text_drops_markup_and_escapes() {
        assert_eq!(
            to_plain("*CIDR:* `203.0.113.0/24 a_b` 1\\.2 \\| _x_"),
            "CIDR: 203.0.113.0/24 a_b 1.2 | x"
        );
    }
}
