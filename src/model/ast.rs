//! Syntax trees of selectors and expressions. Spans are byte ranges into the
//! text they were parsed from (the YAML scalar's value).

use std::fmt;
use std::ops::Range;
use std::time::Duration;

pub use super::builtins::Function;

/// Byte range into the parsed text.
pub type Span = Range<usize>;

/// A literal value written in a model.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Duration(Duration),
}

/// A comparison operator of an assertion or a selector filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    NotContains,
    Matches,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Contains => "contains",
            CmpOp::NotContains => "not-contains",
            CmpOp::Matches => "matches",
        }
    }
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArithOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }
}

/// An expression: the sides of an assertion, an output's value, the parts
/// of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit {
        value: Literal,
        span: Span,
    },
    /// `attr:NAME`
    Attr {
        name: String,
        span: Span,
    },
    /// `env:NAME`
    Env {
        name: String,
        span: Span,
    },
    /// `var:NAME`
    Var {
        name: String,
        span: Span,
    },
    /// `"text ${expr} text"`
    Interp {
        parts: Vec<InterpPart>,
        span: Span,
    },
    Binary {
        op: ArithOp,
        left: Box<Expr>,
        right: Box<Expr>,
        span: Span,
    },
    /// `input | filter`
    Pipe {
        input: Box<Expr>,
        filter: FilterCall,
        span: Span,
    },
    /// `[1, 2s, "text"]`
    Array {
        items: Vec<Expr>,
        span: Span,
    },
    /// `uuid()`, `randomInt(1, 10)`: a generator function, its arity
    /// checked when parsed.
    Call {
        function: Function,
        args: Vec<Expr>,
        span: Span,
    },
}

impl Expr {
    pub fn span(&self) -> &Span {
        match self {
            Expr::Lit { span, .. }
            | Expr::Attr { span, .. }
            | Expr::Env { span, .. }
            | Expr::Var { span, .. }
            | Expr::Interp { span, .. }
            | Expr::Binary { span, .. }
            | Expr::Pipe { span, .. }
            | Expr::Array { span, .. }
            | Expr::Call { span, .. } => span,
        }
    }

    /// Calls `f` on this expression and every sub-expression.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Interp { parts, .. } => {
                for p in parts {
                    if let InterpPart::Expr(e) = p {
                        e.walk(f);
                    }
                }
            }
            Expr::Binary { left, right, .. } => {
                left.walk(f);
                right.walk(f);
            }
            Expr::Pipe { input, .. } => input.walk(f),
            Expr::Array { items, .. } | Expr::Call { args: items, .. } => {
                for e in items {
                    e.walk(f);
                }
            }
            _ => {}
        }
    }
}

/// A piece of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
pub enum InterpPart {
    Text(String),
    Expr(Expr),
}

/// `| name arg`
#[derive(Debug, Clone, PartialEq)]
pub struct FilterCall {
    pub name: String,
    pub name_span: Span,
    pub arg: Option<FilterArg>,
    pub arg_span: Option<Span>,
}

/// The argument of a filter: `'$.x'`, `2`.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterArg {
    Str(String),
    Int(i64),
}

/// `left op right`
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionAst {
    pub left: Expr,
    pub op: CmpOp,
    pub op_span: Span,
    pub right: Expr,
}

/// A union of selector paths. No path means "every span".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SelectorAst {
    pub paths: Vec<Path>,
}

/// Steps joined by descendant, child or sibling relations.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub steps: Vec<Step>,
}

/// How a step relates to the previous step of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combinator {
    /// `a b`: b has an ancestor matching a (also used for a path's first step).
    Descendant,
    /// `a > b`: b's parent matches a.
    Child,
    /// `a ~ b`: b shares its parent with a span matching a.
    Sibling,
}

/// `span[filters]:pseudo`
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub combinator: Combinator,
    pub filters: Vec<SpanFilter>,
    pub pseudo: Option<Pseudo>,
    pub span: Span,
}

/// `attribute op value` inside `[...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFilter {
    pub attr: String,
    pub attr_span: Span,
    pub op: CmpOp,
    pub op_span: Span,
    pub value: Expr,
}

/// `:first`, `:last`, `:nth_child(n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pseudo {
    First,
    Last,
    /// 1-based.
    NthChild(usize),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write_quoted(f, s),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Duration(d) => write!(f, "{}", crate::model::format_duration(*d)),
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '$' => f.write_str("\\$")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[Expr]) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Lit { value, .. } => write!(f, "{value}"),
            Expr::Attr { name, .. } => write!(f, "attr:{name}"),
            Expr::Env { name, .. } => write!(f, "env:{name}"),
            Expr::Var { name, .. } => write!(f, "var:{name}"),
            Expr::Interp { parts, .. } => {
                f.write_str("\"")?;
                for p in parts {
                    match p {
                        InterpPart::Text(t) => {
                            let quoted = format!("{}", Literal::Str(t.clone()));
                            f.write_str(&quoted[1..quoted.len() - 1])?;
                        }
                        InterpPart::Expr(e) => write!(f, "${{{e}}}")?,
                    }
                }
                f.write_str("\"")
            }
            Expr::Binary {
                op, left, right, ..
            } => write!(f, "({left} {} {right})", op.as_str()),
            Expr::Array { items, .. } => {
                f.write_str("[")?;
                write_list(f, items)?;
                f.write_str("]")
            }
            Expr::Call { function, args, .. } => {
                write!(f, "{}(", function.name())?;
                write_list(f, args)?;
                f.write_str(")")
            }
            Expr::Pipe { input, filter, .. } => {
                write!(f, "{input} | {}", filter.name)?;
                match &filter.arg {
                    Some(FilterArg::Str(s)) => write!(f, " '{}'", s.replace('\'', "\\'")),
                    Some(FilterArg::Int(i)) => write!(f, " {i}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl fmt::Display for AssertionAst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.left, self.op.as_str(), self.right)
    }
}

impl fmt::Display for SelectorAst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.paths.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            for (j, s) in p.steps.iter().enumerate() {
                if j > 0 {
                    f.write_str(match s.combinator {
                        Combinator::Descendant => " ",
                        Combinator::Child => " > ",
                        Combinator::Sibling => " ~ ",
                    })?;
                }
                f.write_str("span")?;
                if !s.filters.is_empty() {
                    f.write_str("[")?;
                    for (k, flt) in s.filters.iter().enumerate() {
                        if k > 0 {
                            f.write_str(" ")?;
                        }
                        write!(f, "{} {} {}", flt.attr, flt.op.as_str(), flt.value)?;
                    }
                    f.write_str("]")?;
                }
                match s.pseudo {
                    Some(Pseudo::First) => f.write_str(":first")?,
                    Some(Pseudo::Last) => f.write_str(":last")?,
                    Some(Pseudo::NthChild(n)) => write!(f, ":nth_child({n})")?,
                    None => {}
                }
            }
        }
        Ok(())
    }
}
