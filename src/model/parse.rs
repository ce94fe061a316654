//! The selector, expression and template grammars (spec §2–§3), written with
//! winnow. Errors carry the byte offset where parsing stopped and what was
//! expected there; `SyntaxError::message` renders "unexpected X in Y,
//! expected Z".

use std::borrow::Cow;
use std::time::Duration;

use winnow::combinator::{alt, opt, peek};
use winnow::error::{ErrMode, ParserError};
use winnow::prelude::*;
use winnow::stream::{LocatingSlice, Location, Stream};
use winnow::token::{any, literal, take_while};

use super::ast::*;
use super::builtins::FUNCTION_NAMES;

type In<'a> = LocatingSlice<&'a str>;
type PResult<T> = Result<T, ErrMode<SyntaxError>>;

/// Nesting deeper than this (parentheses, `${}`) is refused so that hostile
/// input cannot overflow the stack.
const MAX_NESTING: usize = 32;

/// Where and why a selector or expression did not parse. `Display` is the
/// short form; [`SyntaxError::message`] names what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {kind}")]
pub struct SyntaxError {
    /// Byte offset into the parsed text.
    pub offset: usize,
    pub kind: SyntaxErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxErrorKind {
    /// Something else was found where this was expected.
    #[error("expected {0}")]
    Expected(Cow<'static, str>),
    /// A complete message (e.g. an unknown duration unit).
    #[error("{0}")]
    Message(String),
}

impl SyntaxError {
    /// Renders the error for `text`, the input in which `what` ("selector",
    /// "expression") was being parsed.
    pub fn message(&self, text: &str, what: &str) -> String {
        match &self.kind {
            SyntaxErrorKind::Message(m) => m.clone(),
            SyntaxErrorKind::Expected(exp) => {
                let found = match text.get(self.offset..).and_then(|r| r.chars().next()) {
                    None => "end of input".to_string(),
                    Some('\'') => "\"'\"".to_string(),
                    Some(c) if c.is_control() => format!("{c:?}"),
                    Some(c) => format!("'{c}'"),
                };
                if exp.is_empty() {
                    format!("unexpected {found} in {what}")
                } else {
                    format!("unexpected {found} in {what}, expected {exp}")
                }
            }
        }
    }
}

impl<'a> ParserError<In<'a>> for SyntaxError {
    type Inner = Self;

    fn from_input(input: &In<'a>) -> Self {
        SyntaxError {
            offset: input.current_token_start(),
            kind: SyntaxErrorKind::Expected(Cow::Borrowed("")),
        }
    }

    // winnow's default panics in debug builds; a parser bug must surface
    // as an error, never as a panic on user input.
    fn assert(input: &In<'a>, _message: &'static str) -> Self {
        Self::from_input(input)
    }

    fn or(self, other: Self) -> Self {
        if other.offset >= self.offset {
            other
        } else {
            self
        }
    }

    fn into_inner(self) -> Result<Self::Inner, Self> {
        Ok(self)
    }
}

const OPERATORS: &str = "an operator (=, !=, <, <=, >, >=, contains, not-contains, matches)";
const EXPRESSION: &str =
    "an expression (attr:NAME, env:NAME, var:NAME, a string, a number, a duration, true/false, [an, array] or a function such as uuid())";
pub(crate) const FILTER_NAMES: &str =
    "json_path, regex, regex_group, count, get_index, first, last, type, length";

fn fail<T>(i: &In<'_>, expected: &'static str) -> PResult<T> {
    Err(ErrMode::Cut(SyntaxError {
        offset: i.current_token_start(),
        kind: SyntaxErrorKind::Expected(Cow::Borrowed(expected)),
    }))
}

fn fail_at<T>(offset: usize, message: String) -> PResult<T> {
    Err(ErrMode::Cut(SyntaxError {
        offset,
        kind: SyntaxErrorKind::Message(message),
    }))
}

fn finish<T>(r: PResult<T>) -> Result<T, SyntaxError> {
    r.map_err(|e| match e {
        ErrMode::Backtrack(e) | ErrMode::Cut(e) => e,
        ErrMode::Incomplete(_) => SyntaxError {
            offset: 0,
            kind: SyntaxErrorKind::Expected(Cow::Borrowed("")),
        },
    })
}

fn pos(i: &In<'_>) -> usize {
    i.current_token_start()
}

/// Consumes the character just peeked at.
fn bump(i: &mut In<'_>) -> PResult<()> {
    any.void().parse_next(i)
}

fn ws(i: &mut In<'_>) -> PResult<usize> {
    take_while(0.., char::is_whitespace)
        .map(|s: &str| s.len())
        .parse_next(i)
}

fn peek_char(i: &mut In<'_>) -> Option<char> {
    peek(any::<_, SyntaxError>).parse_next(i).ok()
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | '@')
}

/// Attribute and variable names: letters, digits, `_ . - / @`.
fn name<'a>(i: &mut In<'a>) -> PResult<&'a str> {
    take_while(1.., is_name_char).parse_next(i)
}

/// A word operator must not run into the following name (`containsx`).
fn keyword<'a>(word: &'static str) -> impl Parser<In<'a>, &'a str, ErrMode<SyntaxError>> {
    move |i: &mut In<'a>| {
        let cp = i.checkpoint();
        let w = literal(word).parse_next(i)?;
        if peek_char(i).is_some_and(is_name_char) {
            i.reset(&cp);
            return Err(ErrMode::from_input(i));
        }
        Ok(w)
    }
}

fn cmp_op(i: &mut In<'_>) -> PResult<CmpOp> {
    alt((
        literal("<=").value(CmpOp::Le),
        literal(">=").value(CmpOp::Ge),
        literal("!=").value(CmpOp::Ne),
        literal("==").value(CmpOp::Eq),
        literal("=").value(CmpOp::Eq),
        literal("<").value(CmpOp::Lt),
        literal(">").value(CmpOp::Gt),
        keyword("not-contains").value(CmpOp::NotContains),
        keyword("contains").value(CmpOp::Contains),
        keyword("matches").value(CmpOp::Matches),
    ))
    .parse_next(i)
}

// === selectors ===

/// Parses a selector (spec §2). The empty selector selects every span.
pub fn parse_selector(text: &str) -> Result<SelectorAst, SyntaxError> {
    let mut i = LocatingSlice::new(text);
    finish(selector_list(&mut i))
}

fn selector_list(i: &mut In<'_>) -> PResult<SelectorAst> {
    ws(i)?;
    let mut paths = Vec::new();
    if i.is_empty() {
        return Ok(SelectorAst { paths });
    }
    paths.push(path(i)?);
    loop {
        ws(i)?;
        match peek_char(i) {
            None => break,
            Some(',') => {
                bump(i)?;
                ws(i)?;
                paths.push(path(i)?);
            }
            Some(_) => return fail(i, "',', '>', '~' or another span"),
        }
    }
    Ok(SelectorAst { paths })
}

fn path(i: &mut In<'_>) -> PResult<Path> {
    let mut steps = vec![step(i, Combinator::Descendant)?];
    loop {
        let cp = i.checkpoint();
        let spaces = ws(i)?;
        match peek_char(i) {
            None | Some(',') => {
                i.reset(&cp);
                break;
            }
            Some(c @ ('>' | '~')) => {
                bump(i)?;
                ws(i)?;
                let comb = if c == '>' {
                    Combinator::Child
                } else {
                    Combinator::Sibling
                };
                steps.push(step(i, comb)?);
            }
            Some('s') if spaces > 0 => steps.push(step(i, Combinator::Descendant)?),
            Some(_) => return fail(i, "',', '>', '~' or another span"),
        }
    }
    Ok(Path { steps })
}

fn step(i: &mut In<'_>, combinator: Combinator) -> PResult<Step> {
    let start = pos(i);
    if keyword("span").parse_next(i).is_err() {
        return fail(i, "'span'");
    }
    let mut filters = Vec::new();
    if peek_char(i) == Some('[') {
        bump(i)?;
        loop {
            ws(i)?;
            match peek_char(i) {
                Some(']') => {
                    bump(i)?;
                    break;
                }
                None => return fail(i, "']' to close the filters"),
                Some(_) => {}
            }
            filters.push(span_filter(i)?);
            match peek_char(i) {
                Some(']') => {}
                Some(c) if c.is_whitespace() => {}
                // Tracetest's documentation also separates filters with a
                // comma (`span[service.name="cart-api", name="purchase
                // products"]`): the same AND as a space.
                Some(',') => {
                    bump(i)?;
                    ws(i)?;
                    if matches!(peek_char(i), Some(']') | None) {
                        return fail(i, "a filter after ','");
                    }
                }
                None => return fail(i, "']' to close the filters"),
                Some(_) => return fail(i, "a space or ',' between filters, or ']'"),
            }
        }
    }
    let mut pseudo = None;
    if peek_char(i) == Some(':') {
        bump(i)?;
        pseudo = Some(pseudo_class(i)?);
    }
    if peek_char(i).is_some_and(|c| !c.is_whitespace() && !matches!(c, ',' | '>' | '~')) {
        return fail(
            i,
            "'[', ':', ',', '>', '~', a space or the end of the selector",
        );
    }
    Ok(Step {
        combinator,
        filters,
        pseudo,
        span: start..pos(i),
    })
}

fn span_filter(i: &mut In<'_>) -> PResult<SpanFilter> {
    // Tracetest writes bare names; `attr:` is accepted for symmetry with
    // assertions.
    let _ = opt(literal("attr:")).parse_next(i)?;
    let name_start = pos(i);
    let attr = match name.parse_next(i) {
        Ok(n) => n.to_string(),
        Err(_) => return fail(i, "an attribute name"),
    };
    let attr_span = name_start..pos(i);
    ws(i)?;
    let op_start = pos(i);
    let op = match cmp_op(i) {
        Ok(op) => op,
        Err(_) => return fail(i, OPERATORS),
    };
    let op_span = op_start..pos(i);
    ws(i)?;
    let value = match peek_char(i) {
        Some('"' | '\'') => string_literal(i, 0)?,
        Some(c) if c.is_ascii_digit() || c == '-' || c == '.' => number(i, true)?,
        _ => {
            let start = pos(i);
            if let Ok(b) =
                alt((keyword("true").value(true), keyword("false").value(false))).parse_next(i)
            {
                Expr::Lit {
                    value: Literal::Bool(b),
                    span: start..pos(i),
                }
            } else if let Some(e) = opt(variable_ref).parse_next(i)? {
                e
            } else {
                return fail(i, "a value (a quoted string, a number, a duration, true/false, env:NAME or var:NAME)");
            }
        }
    };
    Ok(SpanFilter {
        attr,
        attr_span,
        op,
        op_span,
        value,
    })
}

fn pseudo_class(i: &mut In<'_>) -> PResult<Pseudo> {
    let start = pos(i);
    let word: &str =
        take_while(0.., |c: char| c.is_alphanumeric() || c == '_' || c == '-').parse_next(i)?;
    match word {
        "first" => Ok(Pseudo::First),
        "last" => Ok(Pseudo::Last),
        "nth_child" | "nth-child" => {
            if literal::<_, _, SyntaxError>("(").parse_next(i).is_err() {
                return fail(i, "'(' after :nth_child");
            }
            ws(i)?;
            let n_start = pos(i);
            let digits: &str = take_while(1.., |c: char| c.is_ascii_digit())
                .parse_next(i)
                .or_else(|_: ErrMode<SyntaxError>| fail(i, "a position (1, 2, ...)"))?;
            let n = match digits.parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return fail_at(
                        n_start,
                        format!("invalid :nth_child position {digits}, expected 1 or more"),
                    )
                }
            };
            ws(i)?;
            if literal::<_, _, SyntaxError>(")").parse_next(i).is_err() {
                return fail(i, "')'");
            }
            Ok(Pseudo::NthChild(n))
        }
        "" => fail(i, ":first, :last or :nth_child(n)"),
        other => fail_at(
            start,
            format!("unknown pseudo-class ':{other}', expected :first, :last or :nth_child(n)"),
        ),
    }
}

// === expressions ===

/// Parses a whole expression (an output value, a side of an assertion).
pub fn parse_expression(text: &str) -> Result<Expr, SyntaxError> {
    let mut i = LocatingSlice::new(text);
    finish((|i: &mut In<'_>| {
        ws(i)?;
        let e = expr(i, 0)?;
        ws(i)?;
        if !i.is_empty() {
            return fail(i, "an arithmetic operator (+, -, *, /), '|' and a filter, or the end of the expression");
        }
        Ok(e)
    })(&mut i))
}

/// Parses `left op right`.
pub fn parse_assertion(text: &str) -> Result<AssertionAst, SyntaxError> {
    let mut i = LocatingSlice::new(text);
    finish((|i: &mut In<'_>| {
        ws(i)?;
        let left = expr(i, 0)?;
        ws(i)?;
        let op_start = pos(i);
        let op = match cmp_op(i) {
            Ok(op) => op,
            Err(_) if i.is_empty() => return fail(i, OPERATORS),
            Err(_) => return fail(i, "an operator (=, !=, <, <=, >, >=, contains, not-contains, matches), an arithmetic operator or '|'"),
        };
        let op_span = op_start..pos(i);
        ws(i)?;
        let right = expr(i, 0)?;
        ws(i)?;
        if !i.is_empty() {
            return fail(i, "an arithmetic operator (+, -, *, /), '|' and a filter, or the end of the assertion");
        }
        Ok(AssertionAst {
            left,
            op,
            op_span,
            right,
        })
    })(&mut i))
}

fn expr(i: &mut In<'_>, depth: usize) -> PResult<Expr> {
    if depth > MAX_NESTING {
        return fail_at(pos(i), "expression nested too deeply".to_string());
    }
    let start = pos(i);
    let mut left = term(i, depth)?;
    loop {
        let cp = i.checkpoint();
        ws(i)?;
        let op = match peek_char(i) {
            Some('+') => ArithOp::Add,
            Some('-') => ArithOp::Sub,
            _ => {
                i.reset(&cp);
                break;
            }
        };
        bump(i)?;
        ws(i)?;
        let right = term(i, depth)?;
        left = Expr::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
            span: start..pos(i),
        };
    }
    Ok(left)
}

fn term(i: &mut In<'_>, depth: usize) -> PResult<Expr> {
    let start = pos(i);
    let mut left = piped(i, depth)?;
    loop {
        let cp = i.checkpoint();
        ws(i)?;
        let op = match peek_char(i) {
            Some('*') => ArithOp::Mul,
            Some('/') => ArithOp::Div,
            _ => {
                i.reset(&cp);
                break;
            }
        };
        bump(i)?;
        ws(i)?;
        let right = piped(i, depth)?;
        left = Expr::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
            span: start..pos(i),
        };
    }
    Ok(left)
}

fn piped(i: &mut In<'_>, depth: usize) -> PResult<Expr> {
    let start = pos(i);
    let mut e = primary(i, depth)?;
    loop {
        let cp = i.checkpoint();
        ws(i)?;
        if peek_char(i) != Some('|') {
            i.reset(&cp);
            break;
        }
        bump(i)?;
        ws(i)?;
        let filter = filter_call(i)?;
        e = Expr::Pipe {
            input: Box::new(e),
            filter,
            span: start..pos(i),
        };
    }
    Ok(e)
}

fn filter_call(i: &mut In<'_>) -> PResult<FilterCall> {
    let name_start = pos(i);
    let fname: &str = match take_while::<_, _, ErrMode<SyntaxError>>(1.., |c: char| c.is_alphanumeric() || c == '_').parse_next(i) {
        Ok(n) => n,
        Err(_) => {
            return fail(
                i,
                "a filter name (json_path, regex, regex_group, count, get_index, first, last, type, length)",
            )
        }
    };
    let name_span = name_start..pos(i);
    let cp = i.checkpoint();
    ws(i)?;
    let arg_start = pos(i);
    let (arg, arg_span) = match peek_char(i) {
        Some(q @ ('\'' | '"')) => {
            bump(i)?;
            let s = quoted_text(i, q)?;
            (Some(FilterArg::Str(s)), Some(arg_start..pos(i)))
        }
        Some(c) if c.is_ascii_digit() => {
            let digits: &str = take_while(1.., |c: char| c.is_ascii_digit()).parse_next(i)?;
            match digits.parse::<i64>() {
                Ok(n) => (Some(FilterArg::Int(n)), Some(arg_start..pos(i))),
                Err(_) => return fail_at(arg_start, format!("number {digits} is too large")),
            }
        }
        _ => {
            i.reset(&cp);
            (None, None)
        }
    };
    Ok(FilterCall {
        name: fname.to_string(),
        name_span,
        arg,
        arg_span,
    })
}

fn variable_ref(i: &mut In<'_>) -> PResult<Expr> {
    let start = pos(i);
    let kind = alt((literal("attr:"), literal("env:"), literal("var:"))).parse_next(i)?;
    let n = match name.parse_next(i) {
        Ok(n) => n.to_string(),
        Err(_) => {
            return fail(
                i,
                match kind {
                    "attr:" => "an attribute name after 'attr:'",
                    "env:" => "a variable name after 'env:'",
                    _ => "a variable name after 'var:'",
                },
            )
        }
    };
    let span = start..pos(i);
    Ok(match kind {
        "attr:" => Expr::Attr { name: n, span },
        "env:" => Expr::Env { name: n, span },
        _ => Expr::Var { name: n, span },
    })
}

fn primary(i: &mut In<'_>, depth: usize) -> PResult<Expr> {
    let start = pos(i);
    match peek_char(i) {
        Some('"' | '\'') => string_literal(i, depth),
        Some(c) if c.is_ascii_digit() || c == '.' => number(i, false),
        Some('-') => number(i, false),
        Some('(') => {
            bump(i)?;
            ws(i)?;
            let e = expr(i, depth + 1)?;
            ws(i)?;
            if peek_char(i) != Some(')') {
                return fail(i, "')'");
            }
            bump(i)?;
            Ok(e)
        }
        // Tracetest's array literal: `[1, 2s, "text"] | type = "array"`.
        Some('[') => {
            bump(i)?;
            let items = expr_list(i, depth, ']', "',' or ']' in the array")?;
            Ok(Expr::Array {
                items,
                span: start..pos(i),
            })
        }
        _ => {
            if let Ok(b) =
                alt((keyword("true").value(true), keyword("false").value(false))).parse_next(i)
            {
                return Ok(Expr::Lit {
                    value: Literal::Bool(b),
                    span: start..pos(i),
                });
            }
            match opt(variable_ref).parse_next(i)? {
                Some(e) => Ok(e),
                None => call(i, depth),
            }
        }
    }
}

/// Expressions separated by commas up to `close`, after the opening
/// bracket: an array's items, a function's arguments.
fn expr_list(
    i: &mut In<'_>,
    depth: usize,
    close: char,
    expected: &'static str,
) -> PResult<Vec<Expr>> {
    if depth >= MAX_NESTING {
        return fail_at(pos(i), "expression nested too deeply".to_string());
    }
    let mut items = Vec::new();
    ws(i)?;
    if peek_char(i) == Some(close) {
        bump(i)?;
        return Ok(items);
    }
    loop {
        items.push(expr(i, depth + 1)?);
        ws(i)?;
        match peek_char(i) {
            Some(',') => {
                bump(i)?;
                ws(i)?;
            }
            Some(c) if c == close => {
                bump(i)?;
                return Ok(items);
            }
            _ => return fail(i, expected),
        }
    }
}

/// `name(args)`: a generator function. Tracetest's lexer reads a name as
/// letters, digits and `_` starting with a letter; unknown names and wrong
/// argument counts are refused here so the file's position is kept.
fn call(i: &mut In<'_>, depth: usize) -> PResult<Expr> {
    let start = pos(i);
    let cp = i.checkpoint();
    let fname: &str =
        take_while(0.., |c: char| c.is_ascii_alphanumeric() || c == '_').parse_next(i)?;
    let name_end = pos(i);
    ws(i)?;
    if !fname.starts_with(|c: char| c.is_ascii_alphabetic()) || peek_char(i) != Some('(') {
        i.reset(&cp);
        return fail(i, EXPRESSION);
    }
    let Some(function) = Function::from_name(fname) else {
        return fail_at(
            start,
            format!("unknown function '{fname}', expected one of: {FUNCTION_NAMES}"),
        );
    };
    bump(i)?;
    let args = expr_list(i, depth, ')', "',' or ')' in the function's arguments")?;
    let (required, most) = function.arity();
    if args.len() < required || args.len() > most {
        let takes = match (required, most) {
            (0, 0) => "no arguments".to_string(),
            (r, m) if r == m => format!("{r} arguments"),
            (0, m) => format!("at most {m} argument{}", if m == 1 { "" } else { "s" }),
            (r, m) => format!("{r} to {m} arguments"),
        };
        let at = args.get(most).map_or(name_end, |extra| extra.span().start);
        return fail_at(
            at,
            format!("{}() takes {takes}, got {}", function.name(), args.len()),
        );
    }
    Ok(Expr::Call {
        function,
        args,
        span: start..pos(i),
    })
}

/// `"..."` or `'...'`, both with `${expr}` interpolation, as in Tracetest.
/// In single quotes only `\'` and `\\` are escapes (everything else is
/// kept as written, as before interpolation was added to them).
fn string_literal(i: &mut In<'_>, depth: usize) -> PResult<Expr> {
    let start = pos(i);
    let q = any.parse_next(i)?;
    let unclosed = if q == '\'' {
        "\"'\" to close the string"
    } else {
        "'\"' to close the string"
    };
    let mut parts = Vec::new();
    let mut text = String::new();
    loop {
        match opt(any::<_, ErrMode<SyntaxError>>).parse_next(i)? {
            None => return fail(i, unclosed),
            Some(c) if c == q => break,
            Some('\\') => match opt(any::<_, ErrMode<SyntaxError>>).parse_next(i)? {
                None if q == '\'' => return fail(i, "a character after '\\'"),
                None => return fail(i, unclosed),
                Some(c) if q == '\'' => {
                    if c != q && c != '\\' {
                        text.push('\\');
                    }
                    text.push(c);
                }
                Some(c) => push_escape(&mut text, c),
            },
            Some('$') if peek_char(i) == Some('{') => {
                bump(i)?;
                if depth >= MAX_NESTING {
                    return fail_at(pos(i), "expression nested too deeply".to_string());
                }
                ws(i)?;
                let e = expr(i, depth + 1)?;
                ws(i)?;
                if peek_char(i) != Some('}') {
                    return fail(i, "'}' to close '${'");
                }
                bump(i)?;
                if !text.is_empty() {
                    parts.push(InterpPart::Text(std::mem::take(&mut text)));
                }
                parts.push(InterpPart::Expr(e));
            }
            Some(c) => text.push(c),
        }
    }
    let span = start..pos(i);
    if parts.is_empty() {
        return Ok(Expr::Lit {
            value: Literal::Str(text),
            span,
        });
    }
    if !text.is_empty() {
        parts.push(InterpPart::Text(text));
    }
    Ok(Expr::Interp { parts, span })
}

/// Known escapes are decoded; an unknown one (`\d` in a regex) is kept as
/// written so regular expressions need no double escaping.
fn push_escape(text: &mut String, c: char) {
    match c {
        'n' => text.push('\n'),
        't' => text.push('\t'),
        'r' => text.push('\r'),
        '"' | '\'' | '\\' | '$' => text.push(c),
        other => {
            text.push('\\');
            text.push(other);
        }
    }
}

/// The rest of a quoted string without interpolation, after its opening quote.
fn quoted_text(i: &mut In<'_>, quote: char) -> PResult<String> {
    let mut text = String::new();
    loop {
        match opt(any::<_, ErrMode<SyntaxError>>).parse_next(i)? {
            None => {
                return fail(
                    i,
                    if quote == '\'' {
                        "\"'\" to close the string"
                    } else {
                        "'\"' to close the string"
                    },
                )
            }
            Some(c) if c == quote => return Ok(text),
            Some('\\') => match opt(any::<_, ErrMode<SyntaxError>>).parse_next(i)? {
                None => return fail(i, "a character after '\\'"),
                Some(c) if c == quote || c == '\\' => text.push(c),
                Some(c) => {
                    text.push('\\');
                    text.push(c);
                }
            },
            Some(c) => text.push(c),
        }
    }
}

/// Integer, float or duration (`200ms`, `1.5s`); `in_filter` when it is
/// the value of a selector filter.
fn number(i: &mut In<'_>, in_filter: bool) -> PResult<Expr> {
    let start = pos(i);
    let neg = opt(literal("-")).parse_next(i)?.is_some();
    let int_part: &str = take_while(0.., |c: char| c.is_ascii_digit()).parse_next(i)?;
    let mut frac: Option<&str> = None;
    if peek_char(i) == Some('.') {
        let cp = i.checkpoint();
        bump(i)?;
        let f: &str = take_while(0.., |c: char| c.is_ascii_digit()).parse_next(i)?;
        if f.is_empty() && int_part.is_empty() {
            i.reset(&cp);
        } else {
            frac = Some(f);
        }
    }
    if int_part.is_empty() && frac.is_none_or(str::is_empty) {
        return fail(i, "a number");
    }
    // Tracetest also reads `200 ms`: one space between number and unit.
    if peek_char(i) == Some(' ') {
        let cp = i.checkpoint();
        bump(i)?;
        let word: &str = take_while(0.., |c: char| c.is_alphabetic() || c == 'µ').parse_next(i)?;
        let ends = peek_char(i).is_none_or(|c| !is_name_char(c));
        // Not when the word is an attribute a selector filter compares
        // (`span[a = 5 m = 1]`). An assertion has no such word, so there
        // `100 ms = 100 ms` is two durations, as in Tracetest.
        ws(i)?;
        let compared =
            in_filter && peek_char(i).is_some_and(|c| matches!(c, '=' | '!' | '<' | '>'));
        i.reset(&cp);
        let ends = ends && !compared;
        if unit_nanos(word).is_some() && ends {
            bump(i)?;
        }
    }
    let unit_start = pos(i);
    let unit: &str = take_while(0.., |c: char| c.is_alphabetic() || c == 'µ').parse_next(i)?;
    let text = match frac {
        Some(f) => format!("{}{int_part}.{f}", if neg { "-" } else { "" }),
        None => format!("{}{int_part}", if neg { "-" } else { "" }),
    };
    let span = start..pos(i);
    if unit.is_empty() {
        if frac.is_none() {
            return match text.parse::<i64>() {
                Ok(n) => Ok(Expr::Lit {
                    value: Literal::Int(n),
                    span,
                }),
                Err(_) => fail_at(start, format!("number {text} is too large")),
            };
        }
        return match text.parse::<f64>() {
            Ok(x) => Ok(Expr::Lit {
                value: Literal::Float(x),
                span,
            }),
            Err(_) => fail_at(start, format!("invalid number {text}")),
        };
    }
    let Some(unit_ns) = unit_nanos(unit) else {
        return fail_at(
            unit_start,
            format!("unknown duration unit '{unit}', expected ns, us, ms, s, m or h"),
        );
    };
    if neg {
        return fail_at(start, "a duration cannot be negative".to_string());
    }
    match duration_from(&text, unit_ns) {
        Some(d) => Ok(Expr::Lit {
            value: Literal::Duration(d),
            span,
        }),
        None => fail_at(start, format!("duration {text}{unit} is too large")),
    }
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

fn duration_from(number: &str, unit_ns: u64) -> Option<Duration> {
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(unit_ns).map(Duration::from_nanos);
    }
    let x: f64 = number.parse().ok()?;
    let ns = x * unit_ns as f64;
    if !ns.is_finite() || ns < 0.0 || ns > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(ns.round() as u64))
}

/// Parses a whole duration such as `30s` or `1.5m` (used for `within`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num == "." {
        return None;
    }
    duration_from(num, unit_nanos(unit)?)
}

// === templates ===

/// Parses text with `${expr}` interpolations (trigger URLs, headers, alert
/// summaries). Everything outside `${...}` is literal text.
pub fn parse_template(text: &str) -> Result<Vec<InterpPart>, SyntaxError> {
    let mut i = LocatingSlice::new(text);
    finish((|i: &mut In<'_>| {
        let mut parts = Vec::new();
        let mut buf = String::new();
        while let Some(c) = opt(any::<_, ErrMode<SyntaxError>>).parse_next(i)? {
            if c == '$' && peek_char(i) == Some('{') {
                bump(i)?;
                ws(i)?;
                let e = expr(i, 1)?;
                ws(i)?;
                if peek_char(i) != Some('}') {
                    return fail(i, "'}' to close '${'");
                }
                bump(i)?;
                if !buf.is_empty() {
                    parts.push(InterpPart::Text(std::mem::take(&mut buf)));
                }
                parts.push(InterpPart::Expr(e));
            } else {
                buf.push(c);
            }
        }
        if !buf.is_empty() {
            parts.push(InterpPart::Text(buf));
        }
        Ok(parts)
    })(&mut i))
}
