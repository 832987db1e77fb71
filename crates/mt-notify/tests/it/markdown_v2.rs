//! A strict checker of Telegram's MarkdownV2 rules, for the entities our templates may use.
//!
//! Rules (core.telegram.org/bots/api#markdownv2-style): any character with code 1–126 may be
//! escaped with `\`; outside entities `_*[]()~`>#+-=|{}.!` must be escaped; inside `code`, `` ` ``
//! and `\` must be escaped; entities must be closed and properly nested.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Bold,
    Italic,
    Underline,
    Strike,
    Spoiler,
}

/// `Ok(())` when Telegram would accept `text` as MarkdownV2.
pub fn validate(text: &str) -> Result<(), String> {
    let chars: Vec<char> = text.chars().collect();
    let mut stack: Vec<Entity> = Vec::new();
    let mut in_code = false;
    let mut i = 0;
    let toggle = |stack: &mut Vec<Entity>, e: Entity, at: usize| -> Result<(), String> {
        if stack.last() == Some(&e) {
            stack.pop();
            Ok(())
        } else if stack.contains(&e) {
            Err(format!("entity {e:?} closed across another at char {at}"))
        } else {
            stack.push(e);
            Ok(())
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let Some(&next) = chars.get(i + 1) else {
                return Err("trailing backslash".into());
            };
            if !(1..=126).contains(&(next as u32)) {
                return Err(format!("cannot escape {next:?} at char {i}"));
            }
            if in_code && next != '`' && next != '\\' {
                return Err(format!("needless escape {next:?} inside code at char {i}"));
            }
            i += 2;
            continue;
        }
        if in_code {
            if c == '`' {
                in_code = false;
            }
            i += 1;
            continue;
        }
        match c {
            '`' => in_code = true,
            '*' => toggle(&mut stack, Entity::Bold, i)?,
            '_' if chars.get(i + 1) == Some(&'_') => {
                toggle(&mut stack, Entity::Underline, i)?;
                i += 1;
            }
            '_' => toggle(&mut stack, Entity::Italic, i)?,
            '~' => toggle(&mut stack, Entity::Strike, i)?,
            '|' if chars.get(i + 1) == Some(&'|') => {
                toggle(&mut stack, Entity::Spoiler, i)?;
                i += 1;
            }
            '[' | ']' | '(' | ')' | '>' | '#' | '+' | '-' | '=' | '|' | '{' | '}' | '.' | '!' => {
                return Err(format!(
                    "character {c:?} is reserved and must be escaped (char {i})"
                ));
            }
            _ => {}
        }
        i += 1;
    }
    if in_code {
        return Err("unclosed code span".into());
    }
    if let Some(e) = stack.last() {
        return Err(format!("unclosed entity {e:?}"));
    }
    Ok(())
}

#[test]
fn the_validator_rejects_what_telegram_rejects() {
    assert!(validate("*bold* _it_ `1.2.3.4` \\. \\|").is_ok());
    assert!(validate("203.0.113.0/24").is_err(), "unescaped dot");
    assert!(validate("*bold").is_err());
    assert!(validate("*a _b* c_").is_err(), "crossed entities");
    assert!(validate("`code").is_err());
    assert!(validate("a\\").is_err());
    assert!(validate("`a\\.b`").is_err(), "escape of . inside code");
    assert!(validate("x - y").is_err());
}
