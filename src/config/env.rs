//! `${env:NAME}` and `${env:NAME:-default}` expansion, as the Collector does it.
//!
//! Expansion runs on the file's text before YAML parsing, one line at a time,
//! so line numbers in later errors still point at the user's file. `$$` is a
//! literal `$`. An unset variable without a default expands to the empty
//! string (the Collector's rule), and the name is reported so the caller can
//! warn about it.

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
        let mut rest = line;
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
            match (lookup(name), default) {
                (Some(v), _) if !(v.is_empty() && default.is_some()) => out.text.push_str(&v),
                (_, Some(d)) => out.text.push_str(d),
                (_, None) => out.unset.push(name.to_owned()),
            }
            let consumed = 2 + end + 1;
            col += body.chars().count() + 3;
            rest = &rest[pos + consumed..];
        }
        out.text.push_str(rest);
    }
    Ok(out)
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
}
