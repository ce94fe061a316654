//! Positions in model files: diagnostics and the map from an offset inside a
//! scalar's value back to the line and column of the YAML file.

use std::sync::Arc;

use serde::Serialize;

/// One problem found in a model file, pointing into the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
}

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// How the characters of a scalar's value map to columns of the file.
#[derive(Debug, Clone, PartialEq)]
enum OffsetMap {
    /// Plain single-line scalar: value character `n` is at `col + n`.
    Direct,
    /// Quoted single-line scalar: the column of every value character (and
    /// one past the last), since escapes shift them.
    Columns(Arc<[u32]>),
    /// Literal block scalar: every line is indented by `col - 1`.
    Block,
    /// Anything else (folded or multi-line scalars): the scalar start.
    Start,
}

/// Where a scalar's value sits in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLoc {
    file: Arc<str>,
    line: u32,
    col: u32,
    map: OffsetMap,
}

impl SourceLoc {
    /// A location for text that did not come from a file (tests, API input):
    /// offsets map to columns of line 1.
    pub fn detached(file: &str) -> SourceLoc {
        SourceLoc {
            file: Arc::from(file),
            line: 1,
            col: 1,
            map: OffsetMap::Direct,
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Position of the scalar itself.
    pub fn start(&self) -> Position {
        Position {
            line: self.line as usize,
            column: self.col as usize,
        }
    }

    /// Position of the byte `offset` of `value` (the scalar's value).
    pub fn position(&self, value: &str, offset: usize) -> Position {
        let offset = floor_char_boundary(value, offset.min(value.len()));
        let before = &value[..offset];
        match &self.map {
            OffsetMap::Direct => Position {
                line: self.line as usize,
                column: self.col as usize + before.chars().count(),
            },
            OffsetMap::Columns(cols) => {
                let n = before.chars().count();
                match cols.get(n) {
                    Some(c) => Position {
                        line: self.line as usize,
                        column: *c as usize,
                    },
                    None => self.start(),
                }
            }
            OffsetMap::Block => {
                let newlines = before.matches('\n').count();
                let last_line = before.rsplit('\n').next().unwrap_or("");
                Position {
                    line: self.line as usize + newlines,
                    column: self.col as usize + last_line.chars().count(),
                }
            }
            OffsetMap::Start => self.start(),
        }
    }

    /// A diagnostic at byte `offset` of `value`.
    pub fn diagnostic(&self, value: &str, offset: usize, message: impl Into<String>) -> Diagnostic {
        let p = self.position(value, offset);
        Diagnostic {
            file: self.file.to_string(),
            line: p.line,
            column: p.column,
            message: message.into(),
        }
    }

    /// A diagnostic at the scalar's start.
    pub fn diagnostic_at_start(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: self.line as usize,
            column: self.col as usize,
            message: message.into(),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The YAML styles we distinguish when mapping offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

/// Builds the location of a scalar whose value is `value`, starting at
/// 1-based `line` and 0-based character column `col0` in `source`.
pub(crate) fn scalar_loc(
    file: &Arc<str>,
    source_line: Option<&str>,
    line: usize,
    col0: usize,
    style: Style,
    value: &str,
) -> SourceLoc {
    let mut loc = SourceLoc {
        file: file.clone(),
        line: line as u32,
        col: col0 as u32 + 1,
        map: OffsetMap::Start,
    };
    let single_line = !value.contains('\n');
    match style {
        // A plain scalar folded over several lines has no newline in its
        // value: only map offsets when the value is really on this line.
        Style::Plain
            if single_line
                && source_line.is_some_and(|l| {
                    l.chars().skip(col0).collect::<String>().starts_with(value)
                }) =>
        {
            loc.map = OffsetMap::Direct
        }
        Style::Literal => loc.map = OffsetMap::Block,
        Style::SingleQuoted | Style::DoubleQuoted if single_line => {
            if let Some(cols) = source_line.and_then(|l| quoted_columns(l, col0, style, value)) {
                loc.map = OffsetMap::Columns(cols.into());
            }
        }
        _ => {}
    }
    loc
}

/// Columns (1-based) of each value character of a quoted scalar that starts
/// with its quote at character `col0` of `line`; `None` when the raw text
/// does not end on this line or does not match the value.
fn quoted_columns(line: &str, col0: usize, style: Style, value: &str) -> Option<Vec<u32>> {
    let raw: Vec<char> = line.chars().skip(col0).collect();
    let quote = if style == Style::SingleQuoted {
        '\''
    } else {
        '"'
    };
    if raw.first() != Some(&quote) {
        return None;
    }
    let mut cols = Vec::with_capacity(value.len() + 1);
    let mut i = 1;
    loop {
        let c = *raw.get(i)?;
        let col = (col0 + i + 1) as u32;
        if style == Style::SingleQuoted {
            if c == '\'' {
                if raw.get(i + 1) == Some(&'\'') {
                    cols.push(col);
                    i += 2;
                    continue;
                }
                cols.push(col);
                break;
            }
            cols.push(col);
            i += 1;
        } else {
            if c == '"' {
                cols.push(col);
                break;
            }
            if c == '\\' {
                let len = match raw.get(i + 1)? {
                    'x' => 4,
                    'u' => 6,
                    'U' => 10,
                    _ => 2,
                };
                cols.push(col);
                i += len;
                continue;
            }
            cols.push(col);
            i += 1;
        }
    }
    // One entry per value character plus the closing position.
    if cols.len() == value.chars().count() + 1 {
        Some(cols)
    } else {
        None
    }
}
