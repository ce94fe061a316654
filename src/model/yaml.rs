//! A positioned YAML tree built from saphyr-parser events, so that every key
//! and scalar of a model file keeps its line and column.

use std::collections::HashMap;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle};

use super::source::{scalar_loc, Diagnostic, Position, SourceLoc, Style};

/// Deeper nesting than any model needs; refusing it keeps recursion bounded.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    /// A scalar; `plain` is true for unquoted, non-block scalars (where
    /// `null`, `~` and the empty string mean "no value").
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub pos: Position,
    /// Present for scalars.
    pub loc: Option<SourceLoc>,
}

impl Node {
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "null",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true } if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// One YAML document of a file.
pub(crate) struct YamlDoc {
    pub root: Node,
}

/// Parses every document of `text`. A syntax error ends the parse: the
/// documents before it are returned together with the error.
pub(crate) fn parse_documents(file: &Arc<str>, text: &str) -> (Vec<YamlDoc>, Option<Diagnostic>) {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut b = Builder {
        file,
        lines: &lines,
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
    };
    let mut docs = Vec::new();
    loop {
        match b.next() {
            Err(d) => return (docs, Some(d)),
            Ok(None) => return (docs, None),
            Ok(Some((Event::DocumentStart(_), _))) => match b.node(None, 0) {
                Ok(root) => {
                    docs.push(YamlDoc { root });
                    // DocumentEnd
                    if let Err(d) = b.next() {
                        return (docs, Some(d));
                    }
                }
                Err(d) => return (docs, Some(d)),
            },
            Ok(Some((Event::StreamEnd, _))) => return (docs, None),
            Ok(Some(_)) => {}
        }
    }
}

struct Builder<'a, 'i> {
    file: &'a Arc<str>,
    lines: &'a [&'a str],
    parser: Parser<'i, saphyr_parser::StrInput<'i>>,
    anchors: HashMap<usize, Node>,
}

type Ev<'i> = (Event<'i>, Position, usize);

/// An event with its position and 0-based start column.
type Located<'i> = (Event<'i>, (Position, usize));

impl<'i> Builder<'_, 'i> {
    fn next(&mut self) -> Result<Option<Located<'i>>, Diagnostic> {
        match self.parser.next_event() {
            None => Ok(None),
            Some(Ok((ev, span))) => Ok(Some((
                ev,
                (
                    Position {
                        line: span.start.line(),
                        column: span.start.col() + 1,
                    },
                    span.start.col(),
                ),
            ))),
            Some(Err(e)) => Err(Diagnostic {
                file: self.file.to_string(),
                line: e.marker().line(),
                column: e.marker().col() + 1,
                message: format!("invalid YAML: {}", e.info()),
            }),
        }
    }

    fn error(&self, pos: Position, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }

    /// Reads one node; `first` is an already-read event to start from.
    fn node(&mut self, first: Option<Ev<'i>>, depth: usize) -> Result<Node, Diagnostic> {
        let (ev, pos, col0) = match first {
            Some(e) => e,
            None => match self.next()? {
                Some((ev, (pos, col0))) => (ev, pos, col0),
                None => {
                    return Err(
                        self.error(Position { line: 1, column: 1 }, "unexpected end of YAML")
                    )
                }
            },
        };
        if depth > MAX_DEPTH {
            return Err(self.error(pos, "YAML nested too deeply"));
        }
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                };
                let line = self.lines.get(pos.line.saturating_sub(1)).copied();
                let loc = scalar_loc(self.file, line, pos.line, col0, style, &value);
                let node = Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain: style == Style::Plain,
                    },
                    pos,
                    loc: Some(loc),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                Ok(node)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => Ok(n.clone()),
                None => Err(self.error(pos, "unknown YAML alias")),
            },
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        Some((Event::SequenceEnd, _)) => break,
                        Some((ev, (p, c))) => items.push(self.node(Some((ev, p, c)), depth + 1)?),
                        None => return Err(self.error(pos, "unterminated YAML list")),
                    }
                }
                let node = Node {
                    kind: NodeKind::Seq(items),
                    pos,
                    loc: None,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                Ok(node)
            }
            Event::MappingStart(anchor, _) => {
                let mut entries = Vec::new();
                loop {
                    match self.next()? {
                        Some((Event::MappingEnd, _)) => break,
                        Some((ev, (p, c))) => {
                            let key = self.node(Some((ev, p, c)), depth + 1)?;
                            let value = self.node(None, depth + 1)?;
                            entries.push((key, value));
                        }
                        None => return Err(self.error(pos, "unterminated YAML mapping")),
                    }
                }
                let node = Node {
                    kind: NodeKind::Map(entries),
                    pos,
                    loc: None,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                Ok(node)
            }
            other => Err(self.error(pos, format!("unexpected YAML event {other:?}"))),
        }
    }
}
