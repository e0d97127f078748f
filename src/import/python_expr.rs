//! Python boolean expressions (Kernel Tuner restrictions) translated into the rhai constraint
//! language of `task.toml` ([`crate::task::expr`]).
//!
//! The subset: integer literals (and float literals with an integral value), names (knobs,
//! `True`, `False`), parentheses, unary `-` `+` `not`, `**`, `*` `/` `//` `%`, `+` `-`,
//! comparisons `== != < <= > >=` (chained: `a <= b < c` is `a <= b and b < c`), `in` and
//! `not in` with a list or tuple literal, `and`, `or`, and calls to `min`, `max`, `abs`.
//! Anything else is refused with the token that is not understood.
//!
//! The translation keeps Python's meaning for the integers involved: `//` and `%` floor toward
//! negative infinity (rhai's `/` and `%` truncate, so the `floordiv`/`pymod` helpers are used
//! unless both operands are known to be non-negative), `/` is true division (done in floats,
//! as Python does), `int ** negative` is a float, booleans count as 0 and 1 in arithmetic, and
//! the operands of `and`/`or`/`not` are taken for their truth. Python's integers do not
//! overflow; rhai's 64-bit ones report an error, which makes the config invalid.

use std::collections::BTreeMap;
use std::fmt;

/// A restriction that cannot be translated: what was not understood, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PyExprError {
    /// 1-based character column of the token.
    pub column: usize,
    /// The token's text (empty at the end of the expression).
    pub token: String,
    pub message: String,
}

impl fmt::Display for PyExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.token.is_empty() {
            write!(f, "at the end (column {}): {}", self.column, self.message)
        } else if self.column == 0 {
            write!(f, "`{}`: {}", self.token, self.message)
        } else {
            write!(
                f,
                "`{}` at column {}: {}",
                self.token, self.column, self.message
            )
        }
    }
}

/// What the translator knows about a name it may meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameInfo {
    /// Every value the variable takes is >= 0 (lets `//` and `%` use rhai's own operators).
    pub non_negative: bool,
}

/// A translated restriction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The rhai expression, true where the Python one is truthy.
    pub rhai: String,
    /// The variables it mentions, each once, in order of first appearance.
    pub names: Vec<String>,
}

/// Translates the Python expression `text`; every name must be a key of `names`.
pub fn translate(
    text: &str,
    names: &BTreeMap<String, NameInfo>,
) -> Result<Translation, PyExprError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        end_column: text.chars().count() + 1,
    };
    let node = parser.or_test()?;
    parser.expect_end()?;
    let mut emitter = Emitter {
        names,
        used: Vec::new(),
    };
    let out = emitter.emit(&node)?;
    let rhai = emitter.truth(out).code;
    Ok(Translation {
        rhai,
        names: emitter.used,
    })
}

// ---- tokens ------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Name(String),
    Op(&'static str),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    text: String,
    column: usize,
}

const OPERATORS: [&str; 28] = [
    "**", "//", "<=", ">=", "==", "!=", "<<", ">>", "->", ":=", "<", ">", "+", "-", "*", "/", "%",
    "(", ")", "[", "]", ",", "&", "|", "^", "~", "@", "=",
];

fn tokenize(text: &str) -> Result<Vec<Token>, PyExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |column: usize, token: String, message: &str| PyExprError {
        column,
        token,
        message: message.to_string(),
    };
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() || c == '\\' {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == '.'
                    || ((chars[i] == '+' || chars[i] == '-')
                        && matches!(chars[i - 1], 'e' | 'E')
                        && !chars[start..i].iter().any(|c| matches!(c, 'x' | 'X'))))
            {
                i += 1;
            }
            let raw: String = chars[start..i].iter().collect();
            let tok = parse_number(&raw).map_err(|m| err(column, raw.clone(), m))?;
            out.push(Token {
                tok,
                text: raw,
                column,
            });
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            out.push(Token {
                tok: Tok::Name(name.clone()),
                text: name,
                column,
            });
            continue;
        }
        if c == '"' || c == '\'' {
            return Err(err(column, c.to_string(), "strings are not supported"));
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match OPERATORS.iter().find(|op| rest.starts_with(**op)) {
            Some(op) => {
                out.push(Token {
                    tok: Tok::Op(op),
                    text: op.to_string(),
                    column,
                });
                i += op.chars().count();
            }
            None => return Err(err(column, c.to_string(), "unexpected character")),
        }
    }
    Ok(out)
}

fn parse_number(raw: &str) -> Result<Tok, &'static str> {
    let clean = raw.replace('_', "");
    let lower = clean.to_ascii_lowercase();
    let radix = [("0x", 16), ("0o", 8), ("0b", 2)]
        .into_iter()
        .find(|(p, _)| lower.starts_with(p));
    if let Some((prefix, radix)) = radix {
        return i64::from_str_radix(&lower[prefix.len()..], radix)
            .map(Tok::Int)
            .map_err(|_| "not a valid integer literal (or too large for 64 bits)");
    }
    if lower.contains(['.', 'e']) {
        let v: f64 = lower.parse().map_err(|_| "not a valid number")?;
        return if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
            Ok(Tok::Float(v))
        } else {
            Err("a float literal that is not a whole number is not supported (constraints are over integers)")
        };
    }
    if lower.len() > 1 && lower.starts_with('0') && lower.bytes().any(|b| b != b'0') {
        return Err("leading zeros are not allowed in Python integers");
    }
    lower
        .parse()
        .map(Tok::Int)
        .map_err(|_| "not a valid integer literal (or too large for 64 bits)")
}

// ---- syntax ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Pow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

impl CmpOp {
    fn rhai(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In | CmpOp::NotIn => unreachable!("membership is expanded"),
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    Int(i64),
    Float(f64),
    Bool(bool),
    Name(String, usize),
    Neg(Box<Node>),
    Pos(Box<Node>),
    Not(Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>),
    Cmp(Box<Node>, Vec<(CmpOp, Node, usize)>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Call(String, Vec<Node>, usize),
    /// A list or tuple literal (only after `in`, or as the one argument of min/max).
    Seq(Vec<Node>, usize),
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end_column: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_op(&self) -> Option<&'static str> {
        match self.peek()?.tok {
            Tok::Op(op) => Some(op),
            _ => None,
        }
    }

    fn peek_keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Name(n), .. }) if n == word)
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end_column, |t| t.column)
    }

    fn error(&self, message: impl Into<String>) -> PyExprError {
        PyExprError {
            column: self.column(),
            token: self.peek().map(|t| t.text.clone()).unwrap_or_default(),
            message: message.into(),
        }
    }

    /// An error for the token where an operand or operator was expected.
    fn unexpected(&self) -> PyExprError {
        let Some(t) = self.peek() else {
            return self.error("the expression ends too early");
        };
        let message = match &t.tok {
            Tok::Op(op @ ("&" | "|" | "^" | "~" | "<<" | ">>" | "@")) => {
                format!("the operator `{op}` is not supported")
            }
            Tok::Op("=") => "assignment is not an expression (use `==` to compare)".into(),
            Tok::Op(_) => "unexpected here".into(),
            Tok::Name(n) if n == "if" || n == "else" => {
                "conditional expressions (`a if c else b`) are not supported".into()
            }
            Tok::Name(n) if n == "is" => "`is` is not supported (use `==`)".into(),
            Tok::Name(n) if n == "lambda" => "`lambda` is not supported".into(),
            Tok::Name(_) | Tok::Int(_) | Tok::Float(_) => {
                "unexpected here (an operator was expected)".into()
            }
        };
        self.error(message)
    }

    fn expect_op(&mut self, op: &str) -> Result<(), PyExprError> {
        if self.peek_op() == Some(op) {
            self.pos += 1;
            Ok(())
        } else {
            Err(match self.peek() {
                None => self.error(format!("`{op}` expected")),
                Some(_) => {
                    let e = self.unexpected();
                    PyExprError {
                        message: format!("`{op}` expected; {}", e.message),
                        ..e
                    }
                }
            })
        }
    }

    fn expect_end(&self) -> Result<(), PyExprError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.unexpected()),
        }
    }

    fn or_test(&mut self) -> Result<Node, PyExprError> {
        let mut items = vec![self.and_test()?];
        while self.peek_keyword("or") {
            self.pos += 1;
            items.push(self.and_test()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::Or(items)
        })
    }

    fn and_test(&mut self) -> Result<Node, PyExprError> {
        let mut items = vec![self.not_test()?];
        while self.peek_keyword("and") {
            self.pos += 1;
            items.push(self.not_test()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::And(items)
        })
    }

    fn not_test(&mut self) -> Result<Node, PyExprError> {
        if self.peek_keyword("not") {
            self.pos += 1;
            return Ok(Node::Not(Box::new(self.not_test()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Node, PyExprError> {
        let first = self.arith()?;
        let mut rest = Vec::new();
        loop {
            let column = self.column();
            let op = match self.peek_op() {
                Some("==") => CmpOp::Eq,
                Some("!=") => CmpOp::Ne,
                Some("<") => CmpOp::Lt,
                Some("<=") => CmpOp::Le,
                Some(">") => CmpOp::Gt,
                Some(">=") => CmpOp::Ge,
                _ if self.peek_keyword("in") => CmpOp::In,
                _ if self.peek_keyword("not") => {
                    let next_is_in = matches!(
                        self.tokens.get(self.pos + 1),
                        Some(Token { tok: Tok::Name(n), .. }) if n == "in"
                    );
                    if !next_is_in {
                        return Err(self.error("`not` here must be followed by `in`"));
                    }
                    self.pos += 1;
                    CmpOp::NotIn
                }
                _ if self.peek_keyword("is") => return Err(self.unexpected()),
                _ => break,
            };
            self.pos += 1;
            rest.push((op, self.arith()?, column));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Node::Cmp(Box::new(first), rest)
        })
    }

    fn arith(&mut self) -> Result<Node, PyExprError> {
        let mut left = self.term()?;
        loop {
            let op = match self.peek_op() {
                Some("+") => BinOp::Add,
                Some("-") => BinOp::Sub,
                _ => return Ok(left),
            };
            self.pos += 1;
            left = Node::Bin(op, Box::new(left), Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Node, PyExprError> {
        let mut left = self.factor()?;
        loop {
            let op = match self.peek_op() {
                Some("*") => BinOp::Mul,
                Some("/") => BinOp::Div,
                Some("//") => BinOp::FloorDiv,
                Some("%") => BinOp::Mod,
                _ => return Ok(left),
            };
            self.pos += 1;
            left = Node::Bin(op, Box::new(left), Box::new(self.factor()?));
        }
    }

    fn factor(&mut self) -> Result<Node, PyExprError> {
        match self.peek_op() {
            Some("-") => {
                self.pos += 1;
                Ok(Node::Neg(Box::new(self.factor()?)))
            }
            Some("+") => {
                self.pos += 1;
                Ok(Node::Pos(Box::new(self.factor()?)))
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Node, PyExprError> {
        let base = self.atom()?;
        if self.peek_op() == Some("**") {
            self.pos += 1;
            // Right-associative, and the exponent may carry a sign: 2 ** -1.
            let exp = self.factor()?;
            return Ok(Node::Bin(BinOp::Pow, Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Node, PyExprError> {
        let Some(t) = self.peek().cloned() else {
            return Err(self.unexpected());
        };
        match t.tok {
            Tok::Int(v) => {
                self.pos += 1;
                Ok(Node::Int(v))
            }
            Tok::Float(v) => {
                self.pos += 1;
                Ok(Node::Float(v))
            }
            Tok::Name(name) => {
                const KEYWORDS: [&str; 12] = [
                    "and", "or", "not", "in", "is", "if", "else", "lambda", "for", "None", "await",
                    "yield",
                ];
                if KEYWORDS.contains(&name.as_str()) {
                    let message = match name.as_str() {
                        "None" => "`None` is not supported".to_string(),
                        "for" => "comprehensions are not supported".to_string(),
                        _ => format!("`{name}` cannot start an operand"),
                    };
                    return Err(self.error(message));
                }
                self.pos += 1;
                match name.as_str() {
                    "True" => return Ok(Node::Bool(true)),
                    "False" => return Ok(Node::Bool(false)),
                    _ => {}
                }
                if self.peek_op() == Some("(") {
                    self.pos += 1;
                    let args = self.sequence(")")?;
                    return Ok(Node::Call(name, args, t.column));
                }
                match self.peek_op() {
                    Some("[") => Err(self.error("subscripts are not supported")),
                    _ if matches!(self.peek(), Some(Token { text, .. }) if text == ".") => {
                        Err(self.error("attributes are not supported"))
                    }
                    _ => Ok(Node::Name(name, t.column)),
                }
            }
            Tok::Op("(") => {
                self.pos += 1;
                let first = self.or_test()?;
                if self.peek_op() == Some(",") {
                    self.pos += 1;
                    let mut items = vec![first];
                    items.extend(self.sequence(")")?);
                    return Ok(Node::Seq(items, t.column));
                }
                self.expect_op(")")?;
                Ok(first)
            }
            Tok::Op("[") => {
                self.pos += 1;
                let items = self.sequence("]")?;
                Ok(Node::Seq(items, t.column))
            }
            Tok::Op(_) => Err(self.unexpected()),
        }
    }

    /// Comma-separated expressions up to `close` (consumed); a trailing comma is allowed.
    fn sequence(&mut self, close: &str) -> Result<Vec<Node>, PyExprError> {
        let mut items = Vec::new();
        loop {
            if self.peek_op() == Some(close) {
                self.pos += 1;
                return Ok(items);
            }
            items.push(self.or_test()?);
            if self.peek_op() == Some(",") {
                self.pos += 1;
            } else {
                self.expect_op(close)?;
                return Ok(items);
            }
        }
    }
}

// ---- emission ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Int,
    Float,
    Bool,
    /// The result of `and`/`or` over operands that are not all booleans: Python returns an
    /// operand, so only its truth is kept, and it may only be used as a condition.
    Truth,
}

/// Binding strength of the emitted rhai text, to parenthesize only where needed.
const OR: u8 = 1;
const AND: u8 = 2;
const CMP: u8 = 3;
const ADD: u8 = 4;
const MUL: u8 = 5;
const POW: u8 = 6;
const UNARY: u8 = 7;
const ATOM: u8 = 8;

#[derive(Clone, Debug)]
struct Out {
    code: String,
    ty: Ty,
    level: u8,
    non_negative: bool,
    /// The value, when this is an integer literal.
    literal: Option<i64>,
}

impl Out {
    fn new(code: String, ty: Ty, level: u8, non_negative: bool) -> Out {
        Out {
            code,
            ty,
            level,
            non_negative,
            literal: None,
        }
    }

    /// The code, parenthesized unless it binds at least as tightly as `level`.
    fn at(&self, level: u8) -> String {
        if self.level >= level {
            self.code.clone()
        } else {
            format!("({})", self.code)
        }
    }
}

struct Emitter<'a> {
    names: &'a BTreeMap<String, NameInfo>,
    used: Vec<String>,
}

fn err_at(column: usize, token: &str, message: impl Into<String>) -> PyExprError {
    PyExprError {
        column,
        token: token.to_string(),
        message: message.into(),
    }
}

impl Emitter<'_> {
    fn emit(&mut self, node: &Node) -> Result<Out, PyExprError> {
        match node {
            Node::Int(v) => {
                let mut out = Out::new(v.to_string(), Ty::Int, ATOM, *v >= 0);
                out.literal = Some(*v);
                Ok(out)
            }
            Node::Float(v) => Ok(Out::new(float_literal(*v), Ty::Float, ATOM, *v >= 0.0)),
            Node::Bool(b) => Ok(Out::new(b.to_string(), Ty::Bool, ATOM, true)),
            Node::Name(name, column) => {
                let info = self.names.get(name).ok_or_else(|| {
                    let known = self.names.keys().cloned().collect::<Vec<_>>().join(", ");
                    err_at(
                        *column,
                        name,
                        format!("unknown name; the tunable parameters are {known}"),
                    )
                })?;
                if !self.used.contains(name) {
                    self.used.push(name.clone());
                }
                Ok(Out::new(name.clone(), Ty::Int, ATOM, info.non_negative))
            }
            Node::Pos(x) => {
                let x = self.number(x, "+")?;
                Ok(x)
            }
            Node::Neg(x) => {
                let x = self.number(x, "-")?;
                if let Some(v) = x.literal {
                    if let Some(n) = v.checked_neg() {
                        let mut out = Out::new(format!("{n}"), Ty::Int, UNARY, n >= 0);
                        out.literal = Some(n);
                        return Ok(out);
                    }
                }
                Ok(Out::new(format!("-{}", x.at(ATOM)), x.ty, UNARY, false))
            }
            Node::Not(x) => {
                let x = self.emit(x)?;
                let t = self.truth(x);
                Ok(Out::new(format!("!{}", t.at(ATOM)), Ty::Bool, UNARY, true))
            }
            Node::And(items) | Node::Or(items) => {
                let is_and = matches!(node, Node::And(_));
                let mut parts = Vec::new();
                let mut all_bool = true;
                for item in items {
                    let x = self.emit(item)?;
                    all_bool &= x.ty == Ty::Bool;
                    parts.push(self.truth(x).at(CMP));
                }
                let (sep, level) = if is_and { (" && ", AND) } else { (" || ", OR) };
                let ty = if all_bool { Ty::Bool } else { Ty::Truth };
                Ok(Out::new(parts.join(sep), ty, level, true))
            }
            Node::Bin(op, l, r) => self.binary(*op, l, r),
            Node::Cmp(first, rest) => {
                let mut parts = Vec::new();
                let mut left = self.emit(first)?;
                for (op, right_node, column) in rest {
                    match op {
                        CmpOp::In | CmpOp::NotIn => {
                            let Node::Seq(items, _) = right_node else {
                                return Err(err_at(
                                    *column,
                                    if *op == CmpOp::In { "in" } else { "not in" },
                                    "membership is only supported in a list or tuple literal, e.g. `x in [1, 2, 4]`",
                                ));
                            };
                            let (sep, empty) = if *op == CmpOp::In {
                                (" || ", "false")
                            } else {
                                (" && ", "true")
                            };
                            let cmp = if *op == CmpOp::In {
                                CmpOp::Eq
                            } else {
                                CmpOp::Ne
                            };
                            let mut alts = Vec::new();
                            for item in items {
                                let item = self.emit(item)?;
                                alts.push(self.compare(left.clone(), cmp, item, *column)?);
                            }
                            parts.push(if alts.is_empty() {
                                empty.to_string()
                            } else if alts.len() == 1 {
                                alts.pop().expect("one")
                            } else {
                                format!("({})", alts.join(sep))
                            });
                            // Only a chain's last operand may be a literal list.
                            left = Out::new("[]".into(), Ty::Truth, ATOM, true);
                        }
                        _ => {
                            let right = self.emit(right_node)?;
                            parts.push(self.compare(left, *op, right.clone(), *column)?);
                            left = right;
                        }
                    }
                }
                let level = if parts.len() == 1 { CMP } else { AND };
                Ok(Out::new(parts.join(" && "), Ty::Bool, level, true))
            }
            Node::Call(name, args, column) => self.call(name, args, *column),
            Node::Seq(_, column) => Err(err_at(
                *column,
                "[",
                "a list or tuple is only supported after `in`/`not in` or as the argument of min/max",
            )),
        }
    }

    /// An operand of arithmetic or comparison: a number (booleans count as 0 and 1).
    fn number(&mut self, node: &Node, op: &str) -> Result<Out, PyExprError> {
        let x = self.emit(node)?;
        self.to_number(x, op)
    }

    fn to_number(&self, x: Out, op: &str) -> Result<Out, PyExprError> {
        match x.ty {
            Ty::Int | Ty::Float => Ok(x),
            Ty::Bool => Ok(Out::new(
                format!("(if {} {{ 1 }} else {{ 0 }})", x.code),
                Ty::Int,
                ATOM,
                true,
            )),
            Ty::Truth => Err(err_at(
                0,
                op,
                format!(
                    "`{}` combines values that are not all booleans with and/or; its value (not only its truth) would be needed here, which is not supported",
                    x.code
                ),
            )),
        }
    }

    fn to_float(&self, x: &Out) -> Out {
        match (x.ty, x.literal) {
            (Ty::Float, _) => x.clone(),
            (_, Some(v)) if v.unsigned_abs() < (1 << 53) => Out::new(
                float_literal(v as f64),
                Ty::Float,
                if v < 0 { UNARY } else { ATOM },
                v >= 0,
            ),
            _ => Out::new(
                format!("{}.to_float()", x.at(ATOM)),
                Ty::Float,
                ATOM,
                x.non_negative,
            ),
        }
    }

    /// True where the value is truthy.
    fn truth(&self, x: Out) -> Out {
        match x.ty {
            Ty::Bool | Ty::Truth => x,
            Ty::Int => Out::new(format!("{} != 0", x.at(ADD)), Ty::Bool, CMP, true),
            Ty::Float => Out::new(format!("{} != 0.0", x.at(ADD)), Ty::Bool, CMP, true),
        }
    }

    fn compare(&self, l: Out, op: CmpOp, r: Out, column: usize) -> Result<String, PyExprError> {
        let sym = op.rhai();
        let wrap = |e: PyExprError| PyExprError {
            column,
            token: sym.to_string(),
            ..e
        };
        let (l, r) = if l.ty == Ty::Bool && r.ty == Ty::Bool && matches!(op, CmpOp::Eq | CmpOp::Ne)
        {
            (l, r)
        } else {
            let l = self.to_number(l, sym).map_err(wrap)?;
            let r = self.to_number(r, sym).map_err(wrap)?;
            if l.ty == Ty::Float || r.ty == Ty::Float {
                (self.to_float(&l), self.to_float(&r))
            } else {
                (l, r)
            }
        };
        Ok(format!("{} {sym} {}", l.at(ADD), r.at(ADD)))
    }

    fn binary(&mut self, op: BinOp, l: &Node, r: &Node) -> Result<Out, PyExprError> {
        let sym = match op {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
            BinOp::Pow => "**",
        };
        let l = self.number(l, sym)?;
        let r = self.number(r, sym)?;
        let float = l.ty == Ty::Float || r.ty == Ty::Float;
        let both_nn = l.non_negative && r.non_negative;
        let infix = |l: &Out, r: &Out, s: &str, level: u8, ty: Ty, nn: bool| {
            Out::new(
                format!("{} {s} {}", l.at(level), r.at(level + 1)),
                ty,
                level,
                nn,
            )
        };
        let call = |f: &str, l: &Out, r: &Out, ty: Ty, nn: bool| {
            Out::new(format!("{f}({}, {})", l.code, r.code), ty, ATOM, nn)
        };
        Ok(match op {
            BinOp::Add | BinOp::Sub | BinOp::Mul => {
                let level = if op == BinOp::Mul { MUL } else { ADD };
                let nn = op != BinOp::Sub && both_nn;
                if float {
                    infix(
                        &self.to_float(&l),
                        &self.to_float(&r),
                        sym,
                        level,
                        Ty::Float,
                        nn,
                    )
                } else {
                    infix(&l, &r, sym, level, Ty::Int, nn)
                }
            }
            BinOp::Div => infix(
                &self.to_float(&l),
                &self.to_float(&r),
                "/",
                MUL,
                Ty::Float,
                both_nn,
            ),
            BinOp::FloorDiv | BinOp::Mod => {
                let (native, helper) = if op == BinOp::Mod {
                    ("%", "pymod")
                } else {
                    ("/", "floordiv")
                };
                // A floored remainder takes the divisor's sign.
                let nn = if op == BinOp::Mod {
                    r.non_negative
                } else {
                    both_nn
                };
                if float {
                    call(
                        helper,
                        &self.to_float(&l),
                        &self.to_float(&r),
                        Ty::Float,
                        nn,
                    )
                } else if both_nn {
                    infix(&l, &r, native, MUL, Ty::Int, nn)
                } else {
                    call(helper, &l, &r, Ty::Int, nn)
                }
            }
            BinOp::Pow => {
                // Python: int ** negative int is a float; rhai refuses a negative exponent.
                let (l, r, ty) = if !float && r.non_negative {
                    (l, r, Ty::Int)
                } else {
                    (self.to_float(&l), self.to_float(&r), Ty::Float)
                };
                let nn = ty == Ty::Int && l.non_negative;
                Out::new(format!("{} ** {}", l.at(ATOM), r.at(ATOM)), ty, POW, nn)
            }
        })
    }

    fn call(&mut self, name: &str, args: &[Node], column: usize) -> Result<Out, PyExprError> {
        match name {
            "min" | "max" => {
                let items: &[Node] = match args {
                    [Node::Seq(items, _)] => items,
                    _ => args,
                };
                if items.len() < 2 {
                    return Err(err_at(
                        column,
                        name,
                        format!("{name}() is supported with two or more arguments"),
                    ));
                }
                let mut outs = Vec::new();
                for a in items {
                    outs.push(self.number(a, name)?);
                }
                let float = outs.iter().any(|o| o.ty == Ty::Float);
                let nn = if name == "min" {
                    outs.iter().all(|o| o.non_negative)
                } else {
                    outs.iter().any(|o| o.non_negative)
                };
                let outs: Vec<Out> = if float {
                    outs.iter().map(|o| self.to_float(o)).collect()
                } else {
                    outs
                };
                let ty = if float { Ty::Float } else { Ty::Int };
                let mut code = outs[0].code.clone();
                for o in &outs[1..] {
                    code = format!("{name}({code}, {})", o.code);
                }
                Ok(Out::new(code, ty, ATOM, nn))
            }
            "abs" => {
                let [a] = args else {
                    return Err(err_at(column, name, "abs() takes one argument"));
                };
                let a = self.number(a, name)?;
                Ok(Out::new(format!("abs({})", a.code), a.ty, ATOM, true))
            }
            _ => Err(err_at(
                column,
                name,
                "unsupported function (only min, max and abs are)",
            )),
        }
    }
}

/// A whole-number float as rhai reads it (`4.0`).
fn float_literal(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::expr::Expr;

    /// Knobs a, b, c may be negative; x, y, block_size_x, block_size_y, use_padding may not.
    fn names() -> BTreeMap<String, NameInfo> {
        let mut m = BTreeMap::new();
        for n in ["a", "b", "c"] {
            m.insert(
                n.into(),
                NameInfo {
                    non_negative: false,
                },
            );
        }
        for n in ["x", "y", "block_size_x", "block_size_y", "use_padding"] {
            m.insert(n.into(), NameInfo { non_negative: true });
        }
        m
    }

    fn rhai(text: &str) -> String {
        translate(text, &names())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .rhai
    }

    /// Evaluates the translation of `text` with the variables given (others 0).
    fn eval(text: &str, vars: &[(&str, i64)]) -> bool {
        let code = rhai(text);
        let names = names();
        let expr = Expr::compile(&code, names.keys().map(String::as_str))
            .unwrap_or_else(|e| panic!("{text} -> {code}: {e}"));
        let all: Vec<(&str, i64)> = names
            .keys()
            .map(|n| {
                let v = vars.iter().find(|(k, _)| k == n).map_or(0, |(_, v)| *v);
                (n.as_str(), v)
            })
            .collect();
        expr.eval_bool(all)
            .unwrap_or_else(|e| panic!("{text} -> {code}: {e}"))
    }

    fn error(text: &str) -> PyExprError {
        translate(text, &names()).expect_err(text)
    }

    #[test]
    fn readable_where_python_and_rhai_agree() {
        assert_eq!(
            rhai("use_padding==0 or block_size_x % 32 != 0"),
            "use_padding == 0 || block_size_x % 32 != 0"
        );
        assert_eq!(
            rhai("32 <= block_size_x * block_size_y <= 1024"),
            "32 <= block_size_x * block_size_y && block_size_x * block_size_y <= 1024"
        );
        assert_eq!(rhai("x // 2 > y"), "x / 2 > y");
        assert_eq!(rhai("a // 2 > y"), "floordiv(a, 2) > y");
        assert_eq!(rhai("x"), "x != 0");
    }

    #[test]
    fn boolean_operators_and_chains() {
        let t = "use_padding==0 or block_size_x % 32 != 0";
        assert!(eval(t, &[("use_padding", 0), ("block_size_x", 64)]));
        assert!(eval(t, &[("use_padding", 1), ("block_size_x", 48)]));
        assert!(!eval(t, &[("use_padding", 1), ("block_size_x", 64)]));

        let t = "32 <= block_size_x * block_size_y <= 1024";
        assert!(eval(t, &[("block_size_x", 1), ("block_size_y", 32)]));
        assert!(eval(t, &[("block_size_x", 32), ("block_size_y", 32)]));
        assert!(!eval(t, &[("block_size_x", 2), ("block_size_y", 8)]));
        assert!(!eval(t, &[("block_size_x", 64), ("block_size_y", 32)]));

        let t = "a < b < c";
        assert!(eval(t, &[("a", 1), ("b", 2), ("c", 3)]));
        assert!(!eval(t, &[("a", 1), ("b", 3), ("c", 3)]));
        assert!(!eval(t, &[("a", 4), ("b", 3), ("c", 5)]));

        let t = "not (a > 1 and b > 1)";
        assert!(eval(t, &[("a", 2), ("b", 1)]));
        assert!(!eval(t, &[("a", 2), ("b", 2)]));

        // `and`/`or` over integers: only their truth matters.
        assert!(!eval("a and b", &[("a", 0), ("b", 5)]));
        assert!(eval("a and b", &[("a", -3), ("b", 5)]));
        assert!(eval("a or b", &[("a", 0), ("b", 5)]));
        assert!(eval("not a", &[("a", 0)]));
        // Booleans are 0 and 1 in arithmetic.
        assert!(eval("True + True == 2", &[]));
        assert!(eval("(a > 0) + (b > 0) >= 1", &[("a", 0), ("b", 1)]));
        assert!(!eval("(a > 0) + (b > 0) >= 1", &[("a", 0), ("b", 0)]));
        assert!(eval("(a > 0) == (b > 0)", &[("a", -1), ("b", -2)]));
        assert!(eval("False or not False", &[]));
    }

    #[test]
    fn floor_division_modulo_and_true_division() {
        // Python: -7 // 2 == -4, -7 % 2 == 1, -7 % -2 == -1, 7 // -2 == -4.
        assert!(eval("a // b == -4", &[("a", -7), ("b", 2)]));
        assert!(eval("a % b == 1", &[("a", -7), ("b", 2)]));
        assert!(!eval("a % b == 1", &[("a", -7), ("b", -2)]));
        assert!(eval("a % b == -1", &[("a", -7), ("b", -2)]));
        assert!(eval("a // b == -4", &[("a", 7), ("b", -2)]));
        assert!(eval("-7 // 2 == -4 and -7 % 2 == 1", &[]));
        // `/` is true division: 7 / 2 == 3.5 > 3, 6 / 2 == 3.0 is not > 3.
        assert!(eval("a / b > 3", &[("a", 7), ("b", 2)]));
        assert!(!eval("a / b > 3", &[("a", 6), ("b", 2)]));
        assert!(!eval("a / b > -3", &[("a", -7), ("b", 2)]));
        assert!(eval("x / y * 2 == 5 and x / y != 2", &[("x", 5), ("y", 2)]));
        // KWG % ((MDIMC * NDIMC) / MDIMA) == 0: a float modulo, as in Python.
        assert!(eval("x % (y / 2) == 0", &[("x", 32), ("y", 16)]));
        assert!(!eval("x % (y / 2) == 0", &[("x", 36), ("y", 16)]));
        assert!(eval("a % (b / 2) == 1", &[("a", -7), ("b", 4)]));
        // Precedence: 10 - 7 // 3 * 2 == 6.
        assert!(eval("10 - x // 3 * 2 == 6", &[("x", 7)]));
    }

    #[test]
    fn powers_unary_minus_membership_and_calls() {
        assert!(eval("a ** 2 + b ** 2 <= 50", &[("a", -5), ("b", 5)]));
        assert!(!eval("a ** 2 + b ** 2 <= 50", &[("a", 6), ("b", 5)]));
        assert!(eval("-2 ** 2 == -4", &[]));
        assert!(eval("2 ** 3 ** 2 == 512", &[]));
        assert!(eval("2 ** -1 * 4 == 2", &[]));
        assert!(eval("x ** a * 4 == 1", &[("x", 2), ("a", -2)]));
        assert!(eval("- -a == a and +a == a", &[("a", -3)]));

        let t = "x in [1, 2, 4]";
        assert!(eval(t, &[("x", 4)]));
        assert!(!eval(t, &[("x", 3)]));
        assert!(eval("x not in (3, 5)", &[("x", 4)]));
        assert!(!eval("x not in (3, 5)", &[("x", 5)]));
        assert!(!eval("x in []", &[("x", 0)]));
        assert!(eval("x in [y, y + 1] and y < 3", &[("x", 3), ("y", 2)]));

        assert!(eval("min(a, b, 3) >= 2", &[("a", 4), ("b", 2)]));
        assert!(!eval("min(a, b, 3) >= 2", &[("a", 4), ("b", 1)]));
        assert!(eval("max([a, b]) < 10", &[("a", 4), ("b", 9)]));
        assert!(eval("abs(a) <= 3", &[("a", -3)]));
        assert!(!eval("abs(a) <= 3", &[("a", -4)]));
        assert!(eval("max(a, 2.0) == 2", &[("a", 1)]));
    }

    #[test]
    fn refusals_name_the_token() {
        let e = error("x & y");
        assert_eq!((e.token.as_str(), e.column), ("&", 3));
        assert!(e.message.contains("not supported"), "{e}");
        assert_eq!(error("foo(x) > 1").token, "foo");
        let e = error("z > 1");
        assert_eq!(e.token, "z");
        assert!(e.message.contains("unknown name"), "{e}");
        assert_eq!(error("1.5 * x > 1").token, "1.5");
        assert_eq!(error("x if y else 1").token, "if");
        assert_eq!(error("x == 'a'").token, "'");
        assert_eq!(error("x is 1").token, "is");
        assert_eq!(error("x > ").token, "");
        assert!(error("x in y").message.contains("list"));
        assert!(error("(x or y) == 1").message.contains("not all booleans"));
        assert!(error("(x > 1").to_string().contains("`)` expected"));
        assert_eq!(error("[x, y] == 1").token, "[");
    }

    #[test]
    fn reports_the_names_used() {
        let t = translate("b > a and a < 3", &names()).unwrap();
        assert_eq!(t.names, ["b", "a"]);
    }
}
