//! `${env:NAME}` and `${env:NAME:-default}` expansion, as the Collector does it.
//!
//! The Collector expands references in parsed values. Here expansion runs
//! on the file's text, one line at a time, so that line numbers in later
//! errors still point at the user's file, but it keeps the Collector's
//! meaning: comments are left alone (a `${x}` there is no error and no
//! warning), and a value is taken as it is, whatever YAML would make of
//! it: inside quotes it is escaped for them, and a value that is a whole
//! plain scalar and would not read back as itself (`a: b`, `#`, a leading
//! `*`, a line break) is written as a double-quoted string. `$$` is a
//! literal `$`. An unset variable without a default expands to the empty
//! string (the Collector's rule), and the name is reported so the caller
//! can warn about it.

/// Why expansion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ExpandError {
    pub line: usize,
    pub column: usize,
    pub kind: ExpandErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    #[error("unterminated ${{...}}, expected a closing '}}'")]
    Unterminated,
    #[error("unsupported reference ${{{0}}}, expected ${{env:NAME}} or ${{env:NAME:-default}}")]
    Unsupported(String),
    #[error("invalid environment variable name {0:?}")]
    BadName(String),
    /// The value is not printed: it may be a secret.
    #[error("the value of {name} contains {what}, which would change the YAML around this unquoted value; put the whole value in double quotes (key: \"...${{env:{name}}}...\"), and it is taken as written")]
    BreaksPlain { name: String, what: &'static str },
}

/// The result of expanding a text.
#[derive(Debug, Default)]
pub struct Expanded {
    pub text: String,
    /// Variables referenced without a default that were not set.
    pub unset: Vec<String>,
}

/// Expands references using `lookup` (normally `std::env::var`).
pub fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Expanded, ExpandError> {
    let mut out = Expanded {
        text: String::with_capacity(text.len()),
        unset: Vec::new(),
    };
    for (line_idx, line) in text.split_inclusive('\n').enumerate() {
        let code = &line[..comment_start(line)];
        let mut rest = code;
        let mut col = 1;
        while let Some(pos) = rest.find('$') {
            out.text.push_str(&rest[..pos]);
            col += rest[..pos].chars().count();
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.text.push('$');
                rest = stripped;
                col += 2;
                continue;
            }
            let Some(body_start) = after.strip_prefix('{') else {
                out.text.push('$');
                rest = after;
                col += 1;
                continue;
            };
            let err = |kind| ExpandError {
                line: line_idx + 1,
                column: col,
                kind,
            };
            let end = body_start
                .find('}')
                .ok_or_else(|| err(ExpandErrorKind::Unterminated))?;
            let body = &body_start[..end];
            let spec = body
                .strip_prefix("env:")
                .ok_or_else(|| err(ExpandErrorKind::Unsupported(body.to_owned())))?;
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(err(ExpandErrorKind::BadName(name.to_owned())));
            }
            let value = match (lookup(name), default) {
                (Some(v), _) if !(v.is_empty() && default.is_some()) => v,
                (_, Some(d)) => d.to_owned(),
                (_, None) => {
                    out.unset.push(name.to_owned());
                    String::new()
                }
            };
            let consumed = 2 + end + 1;
            let offset = code.len() - rest.len() + pos;
            let (before, after) = (&code[..offset], &code[offset + consumed..]);
            let whole = whole_plain_scalar(before, after);
            let quotes = quoting(before);
            if quotes == Quotes::None && !whole {
                if let Some(what) = breaks_plain(&value, before, after, begins_scalar(before)) {
                    return Err(err(ExpandErrorKind::BreaksPlain {
                        name: name.to_owned(),
                        what,
                    }));
                }
            }
            push_value(&mut out.text, &value, quotes, whole);
            col += body.chars().count() + 3;
            rest = &rest[pos + consumed..];
        }
        out.text.push_str(rest);
        out.text.push_str(&line[code.len()..]);
    }
    Ok(out)
}

/// The quotes a position on a line is inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quotes {
    None,
    Single,
    Double,
}

/// Which quotes are open at the end of `before` (a line's start). A quote
/// opens a quoted scalar only where a scalar begins (at the line's start,
/// after `:`, `-`, `?` or a flow's `[`, `{`, `,`); inside a plain scalar
/// (`it's`) it is a character like any other.
fn quoting(before: &str) -> Quotes {
    let mut q = Quotes::None;
    let mut chars = before.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        q = match (q, c) {
            (Quotes::None, '\'' | '"') => {
                let lead = before[..i].trim_end();
                let starts = lead.is_empty() || lead.ends_with([':', '-', '?', '[', '{', ',']);
                match (starts, c) {
                    (true, '\'') => Quotes::Single,
                    (true, _) => Quotes::Double,
                    (false, _) => Quotes::None,
                }
            }
            // `''` inside single quotes is one quote.
            (Quotes::Single, '\'') if chars.peek().is_some_and(|&(_, n)| n == '\'') => {
                chars.next();
                Quotes::Single
            }
            (Quotes::Single, '\'') | (Quotes::Double, '"') => Quotes::None,
            (Quotes::Double, '\\') => {
                chars.next();
                Quotes::Double
            }
            (q, _) => q,
        };
    }
    q
}

/// Where a line's comment begins (its length if it has none): a `#` outside
/// quotes, at the start or after white space.
fn comment_start(line: &str) -> usize {
    let mut prev_space = true;
    let mut i = 0;
    while i < line.len() {
        let Some(c) = line[i..].chars().next() else {
            break;
        };
        if c == '#' && prev_space && quoting(&line[..i]) == Quotes::None {
            return i;
        }
        prev_space = c.is_whitespace();
        i += c.len_utf8();
    }
    line.len()
}

/// Whether a reference after `before` on its line begins a scalar: after
/// `key: `, `- ` or a flow's `[`/`{`/`,`.
fn begins_scalar(before: &str) -> bool {
    let b = before.trim_end();
    let starts = before.len() > b.len() || before.is_empty();
    let opens = b.is_empty()
        || b.ends_with(':')
        || b.trim_start() == "-"
        || b.ends_with(" -")
        || b.ends_with(['[', '{', ',']);
    (starts || b.ends_with(['[', '{', ','])) && opens
}

/// What in `v`, pasted into part of a plain scalar, would change what YAML
/// reads (a line break, `: `, ` #`; in a flow, its punctuation; at the
/// scalar's start, an indicator), if anything.
fn breaks_plain(v: &str, before: &str, after: &str, at_start: bool) -> Option<&'static str> {
    if v.contains(['\n', '\r']) {
        return Some("a line break");
    }
    // With the characters on either side, which can complete an indicator
    // (`x:` before a space, a `#` after one).
    let left = before
        .chars()
        .next_back()
        .map_or(" ".to_owned(), String::from);
    let right = after.chars().next().map_or(" ".to_owned(), String::from);
    let around = format!("{left}{v}{right}");
    if around.contains(": ") || around.contains(":\t") {
        return Some("\": \"");
    }
    if around.contains(" #") || around.contains("\t#") {
        return Some("\" #\"");
    }
    if at_start && (v.starts_with("- ") || v.starts_with("-\t") || format!("{v}{right}") == "- ") {
        return Some("a YAML indicator at its start");
    }
    let depth = before.chars().fold(0i32, |d, c| match c {
        '[' | '{' => d + 1,
        ']' | '}' => d - 1,
        _ => d,
    });
    if depth > 0 && v.contains([',', '[', ']', '{', '}']) {
        return Some("a flow's punctuation (, [ ] { })");
    }
    if at_start
        && v.starts_with([
            '*', '&', '!', '|', '>', '%', '@', '`', '"', '\'', '#', '[', '{', '?',
        ])
    {
        return Some("a YAML indicator at its start");
    }
    None
}

/// Whether a reference between `before` and `after` on its line is a whole
/// plain scalar: after `key: `, `- ` or a flow's `[`/`{`/`,`, and followed
/// only by the end, a flow's `,`/`]`/`}`, or white space.
fn whole_plain_scalar(before: &str, after: &str) -> bool {
    let a = after.trim_start();
    let ends = a.is_empty() || a.starts_with([',', ']', '}']);
    begins_scalar(before) && ends
}

/// Whether YAML reads `v`, written plain, back as the same string (or the
/// number or boolean it spells, as the Collector's typed fields take it).
fn reads_back_plain(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/:@+=%()".contains(c))
        && !v.contains(": ")
        && !v.ends_with(':')
        && !v.starts_with(['-', '%', '@', ':'])
}

fn push_value(out: &mut String, v: &str, quotes: Quotes, whole: bool) {
    match quotes {
        Quotes::Single => out.push_str(&v.replace('\'', "''")),
        Quotes::Double => push_escaped(out, v),
        Quotes::None if whole && !v.is_empty() && !reads_back_plain(v) => {
            out.push('"');
            push_escaped(out, v);
            out.push('"');
        }
        Quotes::None => out.push_str(v),
    }
}

fn push_escaped(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_default_and_unset() {
        let e = expand(
            "a: ${env:TOKEN}\nb: ${env:NOPE:-x:y}\nc: ${env:NOPE}\nd: $$5 $x\ne: ${env:EMPTY:-d}\n",
            env,
        )
        .unwrap();
        assert_eq!(e.text, "a: s3cret\nb: x:y\nc: \nd: $5 $x\ne: d\n");
        assert_eq!(e.unset, vec!["NOPE".to_owned()]);
    }

    #[test]
    fn errors_point_at_the_reference() {
        let e = expand("a: 1\nb: ${HOME}\n", env).unwrap_err();
        assert_eq!((e.line, e.column), (2, 4));
        assert!(matches!(e.kind, ExpandErrorKind::Unsupported(_)));
        let e = expand("x: ${env:A", env).unwrap_err();
        assert_eq!(e.kind, ExpandErrorKind::Unterminated);
        let e = expand("x: ${env:1A}", env).unwrap_err();
        assert_eq!(e.kind, ExpandErrorKind::BadName("1A".into()));
    }

    #[test]
    fn comments_are_left_alone() {
        let e = expand(
            "# set ${env:TOKEN} or ${bad}\na: ${env:TOKEN} # not ${env:NOPE}\nb: \"x # ${env:TOKEN}\"\nc: d#${env:TOKEN}\n",
            env,
        )
        .unwrap();
        assert_eq!(
            e.text,
            "# set ${env:TOKEN} or ${bad}\na: s3cret # not ${env:NOPE}\nb: \"x # s3cret\"\nc: d#s3cret\n"
        );
        assert!(e.unset.is_empty(), "{:?}", e.unset);
        // An apostrophe inside a plain value opens no quotes.
        let e = expand("a: it's ${env:TOKEN} # ${env:NOPE}\n", env).unwrap();
        assert_eq!(e.text, "a: it's s3cret # ${env:NOPE}\n");
        assert!(e.unset.is_empty(), "{:?}", e.unset);
    }

    #[test]
    fn values_are_taken_as_they_are() {
        let lookup = |name: &str| match name {
            "COLON" => Some("a: b".to_owned()),
            "HASH" => Some("x #y".to_owned()),
            "QUOTE" => Some("it's \"q\"\\".to_owned()),
            "STAR" => Some("*alias".to_owned()),
            "PORT" => Some("4317".to_owned()),
            "HOST" => Some("jaeger.example:4317".to_owned()),
            _ => None,
        };
        let text = "a: ${env:COLON}\nb: ${env:HASH}\nc: \"${env:QUOTE}\"\nd: '${env:QUOTE}'\ne: ${env:STAR}\nf: ${env:PORT}\ng: http://${env:HOST}/x\nh: { k: ${env:COLON}, n: ${env:PORT} }\ni:\n  - ${env:HASH}\n";
        let e = expand(text, lookup).unwrap();
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&e.text).unwrap_or_else(|err| panic!("{err}\n{}", e.text));
        let s = |k: &str| v[k].as_str().map(str::to_owned);
        assert_eq!(s("a").as_deref(), Some("a: b"));
        assert_eq!(s("b").as_deref(), Some("x #y"));
        assert_eq!(s("c").as_deref(), Some("it's \"q\"\\"));
        assert_eq!(s("d").as_deref(), Some("it's \"q\"\\"));
        assert_eq!(s("e").as_deref(), Some("*alias"));
        assert_eq!(v["f"].as_u64(), Some(4317));
        assert_eq!(s("g").as_deref(), Some("http://jaeger.example:4317/x"));
        assert_eq!(v["h"]["k"].as_str(), Some("a: b"));
        assert_eq!(v["h"]["n"].as_u64(), Some(4317));
        assert_eq!(v["i"][0].as_str(), Some("x #y"));
    }

    /// A reference that is only part of an unquoted value: a value that
    /// stays inside it is pasted; one that would change the YAML around
    /// it (end the value early, start a comment, open a flow) is an error
    /// at the reference that says to quote the value, and never shows the
    /// value itself (it may be a secret).
    #[test]
    fn part_of_a_plain_value_is_pasted_only_when_it_stays_inside() {
        let lookup = |name: &str| match name {
            "HOST" => Some("jaeger.example".to_owned()),
            "COLON" => Some("k: v".to_owned()),
            "HASH" => Some("a #b".to_owned()),
            "COMMA" => Some("a,b".to_owned()),
            "STAR" => Some("*x".to_owned()),
            "LINES" => Some("a\nb".to_owned()),
            "SHARP" => Some("#b".to_owned()),
            "TRAILING" => Some("k:".to_owned()),
            "DASH" => Some("- y".to_owned()),
            _ => None,
        };
        let e = expand("a: http://${env:HOST}:4317/x\nb: [x-${env:HOST}]\n", lookup).unwrap();
        assert_eq!(
            e.text,
            "a: http://jaeger.example:4317/x\nb: [x-jaeger.example]\n"
        );
        for (text, what) in [
            ("a: x${env:COLON}\n", "\": \""),
            ("a: x ${env:HASH}\n", "\" #\""),
            ("a: x${env:LINES}\n", "a line break"),
            ("a: { b: x${env:COMMA} }\n", "flow"),
            ("a: ${env:STAR}/y\n", "indicator"),
            ("a: x ${env:SHARP}\n", "\" #\""),
            ("a: ${env:TRAILING} y\n", "\": \""),
            ("- ${env:DASH}x\n", "indicator"),
        ] {
            let err = expand(text, lookup).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(what) && msg.contains("double quotes"),
                "{text}: {msg}"
            );
            assert_eq!(err.line, 1, "{text}");
            for secret in ["k: v", "a #b", "a,b", "*x", "#b", "- y"] {
                assert!(!msg.contains(secret), "{text}: the value shown: {msg}");
            }
        }
        // Quoted, the same values are taken as written.
        let e = expand("a: \"x${env:COLON}\"\nb: \"{ ${env:COMMA} }\"\n", lookup).unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&e.text).unwrap();
        assert_eq!(v["a"].as_str(), Some("xk: v"));
        assert_eq!(v["b"].as_str(), Some("{ a,b }"));
    }
}
