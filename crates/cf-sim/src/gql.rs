//! A strict parser for the GraphQL subset Cloudflare's analytics queries use: one operation,
//! variable definitions, aliases, arguments (variables, strings, numbers, enums, lists,
//! objects) and nested selection sets. Fragments and directives are refused.

use serde_json::{Map, Number, Value};

/// One field of a selection set.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// `alias:` if given.
    pub alias: Option<String>,
    /// The field name.
    pub name: String,
    /// Arguments, resolved against the request's variables.
    pub args: Map<String, Value>,
    /// Sub-selections.
    pub selections: Vec<Field>,
}

impl Field {
    /// The key under which the field appears in the answer.
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Punct(char),
    Name(String),
    Str(String),
    Num(String),
    Spread,
}

fn tokenize(src: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() || c == ',' || c == '\u{feff}' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' | '}' | '(' | ')' | '[' | ']' | ':' | '!' | '$' | '=' | '@' => {
                out.push(Token::Punct(c));
                i += 1;
            }
            '.' if chars.get(i + 1) == Some(&'.') && chars.get(i + 2) == Some(&'.') => {
                out.push(Token::Spread);
                i += 3;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let e = chars.get(i + 1).ok_or("unterminated string")?;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => *other,
                            });
                            i += 2;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(s));
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || matches!(chars[i], '.' | 'e' | 'E' | '+' | '-'))
                {
                    i += 1;
                }
                out.push(Token::Num(chars[start..i].iter().collect()));
            }
            c if c == '_' || c.is_ascii_alphabetic() => {
                let start = i;
                while i < chars.len() && (chars[i] == '_' || chars[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                out.push(Token::Name(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    variables: &'a Map<String, Value>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Result<Token, String> {
        let t = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of query")?;
        self.pos += 1;
        Ok(t)
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next()? {
            Token::Punct(p) if p == c => Ok(()),
            other => Err(format!("expected {c:?}, found {other:?}")),
        }
    }

    fn name(&mut self) -> Result<String, String> {
        match self.next()? {
            Token::Name(n) => Ok(n),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    fn is(&self, c: char) -> bool {
        self.peek() == Some(&Token::Punct(c))
    }

    fn document(&mut self) -> Result<Vec<Field>, String> {
        if let Some(Token::Name(n)) = self.peek() {
            if n != "query" {
                return Err(format!("only queries are supported, not {n:?}"));
            }
            self.pos += 1;
            if let Some(Token::Name(_)) = self.peek() {
                self.pos += 1;
            }
            if self.is('(') {
                self.variable_definitions()?;
            }
        }
        let selections = self.selection_set()?;
        if self.pos != self.tokens.len() {
            return Err("only one operation per request is supported".into());
        }
        Ok(selections)
    }

    fn variable_definitions(&mut self) -> Result<(), String> {
        self.expect('(')?;
        while !self.is(')') {
            self.expect('$')?;
            self.name()?;
            self.expect(':')?;
            self.type_ref()?;
            if self.is('=') {
                self.pos += 1;
                self.value()?;
            }
        }
        self.expect(')')
    }

    fn type_ref(&mut self) -> Result<(), String> {
        if self.is('[') {
            self.pos += 1;
            self.type_ref()?;
            self.expect(']')?;
        } else {
            self.name()?;
        }
        if self.is('!') {
            self.pos += 1;
        }
        Ok(())
    }

    fn selection_set(&mut self) -> Result<Vec<Field>, String> {
        self.expect('{')?;
        let mut fields = Vec::new();
        while !self.is('}') {
            match self.peek() {
                Some(Token::Spread) => return Err("fragments are not supported".into()),
                Some(Token::Punct('@')) => return Err("directives are not supported".into()),
                _ => fields.push(self.field()?),
            }
        }
        self.expect('}')?;
        Ok(fields)
    }

    fn field(&mut self) -> Result<Field, String> {
        let first = self.name()?;
        let (alias, name) = if self.is(':') {
            self.pos += 1;
            (Some(first), self.name()?)
        } else {
            (None, first)
        };
        let mut args = Map::new();
        if self.is('(') {
            self.pos += 1;
            while !self.is(')') {
                let key = self.name()?;
                self.expect(':')?;
                args.insert(key, self.value()?);
            }
            self.expect(')')?;
        }
        let selections = if self.is('{') {
            self.selection_set()?
        } else {
            Vec::new()
        };
        Ok(Field {
            alias,
            name,
            args,
            selections,
        })
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.next()? {
            Token::Punct('$') => {
                let name = self.name()?;
                Ok(self.variables.get(&name).cloned().unwrap_or(Value::Null))
            }
            Token::Str(s) => Ok(Value::String(s)),
            Token::Num(n) => {
                let number = n
                    .parse::<i64>()
                    .map(Number::from)
                    .ok()
                    .or_else(|| n.parse::<f64>().ok().and_then(Number::from_f64))
                    .ok_or_else(|| format!("bad number {n:?}"))?;
                Ok(Value::Number(number))
            }
            Token::Name(n) => Ok(match n.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => Value::String(n),
            }),
            Token::Punct('[') => {
                let mut items = Vec::new();
                while !self.is(']') {
                    items.push(self.value()?);
                }
                self.expect(']')?;
                Ok(Value::Array(items))
            }
            Token::Punct('{') => {
                let mut map = Map::new();
                while !self.is('}') {
                    let key = self.name()?;
                    self.expect(':')?;
                    map.insert(key, self.value()?);
                }
                self.expect('}')?;
                Ok(Value::Object(map))
            }
            other => Err(format!("unexpected {other:?} where a value was expected")),
        }
    }
}

/// Parses `query` and resolves its variables; returns the operation's top-level selections.
pub fn parse(query: &str, variables: &Map<String, Value>) -> Result<Vec<Field>, String> {
    let mut parser = Parser {
        tokens: tokenize(query)?,
        pos: 0,
        variables,
    };
    parser.document()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_aliases_arguments_and_variables() {
        let q = r#"query Q($a: string!, $n: uint64!, $l: [string!]) { viewer { accounts(filter: { accountTag: $a }) {
            x: dataset(filter: { datetime_geq: "2026-01-01T00:00:00Z", outcome: "drop" }, limit: $n, orderBy: [sum_packets_DESC]) {
              dimensions { a b } sum { packets } } } } }"#;
        let vars = json!({"a": "acc", "n": 10}).as_object().unwrap().clone();
        let top = parse(q, &vars).unwrap();
        let accounts = &top[0].selections[0];
        assert_eq!(accounts.args["filter"]["accountTag"], "acc");
        let ds = &accounts.selections[0];
        assert_eq!((ds.key(), ds.name.as_str()), ("x", "dataset"));
        assert_eq!(ds.args["limit"], 10);
        assert_eq!(ds.args["orderBy"], json!(["sum_packets_DESC"]));
        assert_eq!(ds.selections[0].selections.len(), 2);
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        let vars = Map::new();
        assert!(parse("mutation { x }", &vars).is_err());
        assert!(parse("{ x { ...F } }", &vars).is_err());
        assert!(parse("{ x", &vars).is_err());
        assert!(parse("{ x } { y }", &vars).is_err());
    }
}
