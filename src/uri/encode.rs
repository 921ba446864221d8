//! Percent-encoding and Python-literal rendering shared by the URI builders.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Everything outside RFC 3986 "unreserved" is encoded: Python's `quote(s, safe='')`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encode one URI component (user, password, path segment, query value) so that every byte survives
/// a single `unquote` (kombu, SQLAlchemy) and `unquote_plus` (pymongo: `+` becomes `%2B`).
pub fn component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Encode a path, keeping `/` separators.
pub fn path(s: &str) -> String {
    s.split('/').map(component).collect::<Vec<_>>().join("/")
}

/// A host as it appears in a URI authority: IPv6 literals in brackets.
pub fn host(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

/// `user:password@`, `:password@`, `user@` or nothing, each part encoded with `enc`.
pub fn userinfo(user: Option<&str>, password: Option<&str>, enc: fn(&str) -> String) -> String {
    match (user, password) {
        (None, None) => String::new(),
        (Some(u), None) => format!("{}@", enc(u)),
        (None, Some(p)) => format!(":{}@", enc(p)),
        (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
    }
}

/// `?k=v&k2=v2` (empty when there are no pairs), values and keys encoded.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let q: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{}={}", component(k), component(&v)))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// Render a JSON value as a Python literal (for `celeryconfig.py`).
pub fn python_literal(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => python_str(s),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(python_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", python_str(k), python_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A Python string literal that round-trips any Unicode string (ASCII-only output).
pub fn python_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (' '..='~').contains(&c) => out.push(c),
            c if (c as u32) <= 0xFF => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_encodes_like_python_quote_safe_empty() {
        assert_eq!(component("p@ss:w/rd#?%"), "p%40ss%3Aw%2Frd%23%3F%25");
        assert_eq!(component("a b+c&d"), "a%20b%2Bc%26d");
        assert_eq!(component("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(component("é"), "%C3%A9");
    }

    #[test]
    fn hosts_bracket_ipv6() {
        assert_eq!(host("::1"), "[::1]");
        assert_eq!(host("10.0.0.1"), "10.0.0.1");
        assert_eq!(host("redis.prod"), "redis.prod");
    }

    #[test]
    fn python_literals() {
        let v = serde_json::json!({"a": [1, true, null, "it's\n\u{e9}\u{1F600}"]});
        assert_eq!(
            python_literal(&v),
            r"{'a': [1, True, None, 'it\'s\n\xe9\U0001f600']}"
        );
    }
}
