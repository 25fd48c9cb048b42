//! Recursive-descent parser that evaluates as it parses (so left-associative
//! chains are loops, not recursion) and builds the normalised expression text.
//!
//! Grammar (lowest to highest precedence):
//! ```text
//! input    := expr [ ("to" | "in" | "as" | "->") unit_expr ] EOF
//! expr     := term (("+" | "-") term)*
//! term     := implicit (("*" | "/" | "%") implicit)*
//! implicit := unary (NAME-started power)*          // "3 km", "2 m^2", "2 pi"
//! unary    := ("-" | "+") unary | power
//! power    := postfix ("^" unary | "²" | "³")?     // right-associative
//! postfix  := primary "!"*
//! primary  := NUMBER | NAME | NAME "(" args ")" | "(" expr ")"
//! ```
//! Every recursive step (parenthesis, unary sign, exponent, function call,
//! parenthesised unit) goes through [`Parser::enter`], which enforces
//! `Limits::max_depth`, so the native stack depth is bounded.

use crate::lexer::{Tok, Token};
use crate::num::{ten_pow, Num};
use crate::units::{self, Dim, Scale, TEMP};
use crate::value::{self, Disp, Value};
use crate::{CalcError, Limits};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::Zero;
use std::str::FromStr;

/// Built-in functions (called as `name(args)`).
pub(crate) const FUNCTIONS: &[&str] = &[
    "sqrt", "cbrt", "root", "abs", "ln", "log10", "log2", "log", "exp", "sin", "cos", "tan",
    "asin", "acos", "atan", "floor", "ceil", "round", "min", "max",
];

type R<T> = Result<T, CalcError>;

/// A parsed-and-evaluated piece: its value and its normalised text.
pub(crate) struct Piece {
    pub v: Value,
    pub s: String,
}

/// A conversion target.
enum Target {
    Unit(Disp, Dim),
    Scale(Scale),
}

pub(crate) struct Parser<'a> {
    toks: Vec<Token>,
    i: usize,
    depth: usize,
    limits: &'a Limits,
    /// Position reported for "unexpected end of input".
    end_pos: usize,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(toks: Vec<Token>, limits: &'a Limits, end_pos: usize) -> Self {
        Parser {
            toks,
            i: 0,
            depth: 0,
            limits,
            end_pos,
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.peek_at(self.i)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(k).map(|t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(self.end_pos, |t| t.pos)
    }

    fn bump(&mut self) {
        self.i += 1;
    }

    /// Enter one nesting level; error once `max_depth` is crossed.
    fn enter(&mut self, pos: usize) -> R<()> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(CalcError::new(
                pos,
                format!(
                    "expression nested deeper than {} levels",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn expect_rparen(&mut self) -> R<()> {
        if self.peek() == Some(&Tok::RParen) {
            self.bump();
            Ok(())
        } else {
            Err(CalcError::new(self.pos(), "expected \")\""))
        }
    }

    fn is_name_at(&self, k: usize) -> bool {
        matches!(self.peek_at(k), Some(Tok::Name(_)))
    }

    /// Is token `k` a conversion keyword? `to`, `as`, `->` always are.
    /// `in` is the keyword when a unit follows it, except in `5 in in cm`
    /// (where the first `in` is followed by `in` and then another unit,
    /// so it is the inch). Otherwise `in` is the inch.
    fn is_conversion_at(&self, k: usize) -> bool {
        match self.peek_at(k) {
            Some(Tok::Arrow) => true,
            Some(Tok::Name(n)) if n == "to" || n == "as" => true,
            Some(Tok::Name(n)) if n == "in" => {
                let unit_follows = matches!(self.peek_at(k + 1), Some(Tok::Name(m)) if m != "to" && m != "as")
                    || self.peek_at(k + 1) == Some(&Tok::LParen);
                let inch_then_keyword = matches!(self.peek_at(k + 1), Some(Tok::Name(m)) if m == "in")
                    && (self.is_name_at(k + 2) || self.peek_at(k + 2) == Some(&Tok::LParen));
                unit_follows && !inch_then_keyword
            }
            _ => false,
        }
    }

    /// Whole input: expression, optional conversion, end.
    pub(crate) fn input(&mut self) -> R<Piece> {
        let mut p = self.expr()?;
        if self.is_conversion_at(self.i) {
            let kw = match self.peek() {
                Some(Tok::Name(n)) => n.clone(),
                _ => "->".to_string(),
            };
            self.bump();
            let tpos = self.pos();
            let (target, text) = self.unit_expr_top()?;
            p.v = convert(p.v, target, tpos)?;
            p.s = format!("{} {kw} {text}", p.s);
        }
        match self.toks.get(self.i) {
            None => Ok(p),
            Some(t) => Err(CalcError::new(
                t.pos,
                format!("unexpected {}: expected an operator", describe(&t.tok)),
            )),
        }
    }

    fn expr(&mut self) -> R<Piece> {
        let mut l = self.term()?;
        loop {
            let sub = match self.peek() {
                Some(Tok::Plus) => false,
                Some(Tok::Minus) => true,
                _ => return Ok(l),
            };
            let pos = self.pos();
            self.bump();
            let r = self.term()?;
            l.v = value::add(l.v, r.v, sub, pos, self.limits)?;
            l.s = format!("{} {} {}", l.s, if sub { "-" } else { "+" }, r.s);
        }
    }

    fn term(&mut self) -> R<Piece> {
        let mut l = self.implicit()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Star) => "*",
                Some(Tok::Slash) => "/",
                Some(Tok::Percent) => "%",
                _ => return Ok(l),
            };
            let pos = self.pos();
            self.bump();
            let r = self.implicit()?;
            l.v = match op {
                "*" => value::mul(l.v, r.v, pos, self.limits)?,
                "/" => value::div(l.v, r.v, pos, self.limits)?,
                _ => value::modulo(l.v, r.v, pos, self.limits)?,
            };
            l.s = format!("{} {op} {}", l.s, r.s);
        }
    }

    /// Juxtaposition: a name right after an operand multiplies it ("3 km").
    fn implicit(&mut self) -> R<Piece> {
        let mut l = self.unary()?;
        while self.is_name_at(self.i) && !self.is_conversion_at(self.i) {
            let pos = self.pos();
            let r = self.power()?;
            l.v = juxtapose(l.v, r.v, pos, self.limits)?;
            l.s = format!("{} {}", l.s, r.s);
        }
        Ok(l)
    }

    fn unary(&mut self) -> R<Piece> {
        let neg = match self.peek() {
            Some(Tok::Minus) => true,
            Some(Tok::Plus) => false,
            _ => return self.power(),
        };
        let pos = self.pos();
        self.bump();
        self.enter(pos)?;
        let inner = self.unary()?;
        self.leave();
        Ok(if neg {
            Piece {
                v: value::neg(inner.v),
                s: format!("-{}", inner.s),
            }
        } else {
            inner
        })
    }

    fn power(&mut self) -> R<Piece> {
        let mut base = self.postfix()?;
        match self.peek() {
            Some(Tok::Sup(n)) => {
                let (pos, n) = (self.pos(), *n);
                self.bump();
                let e = Value::plain(Num::int(i64::from(n)));
                base.v = value::pow(base.v, e, pos, self.limits)?;
                base.s = format!("{}^{n}", base.s);
            }
            Some(Tok::Caret) => {
                let pos = self.pos();
                self.bump();
                self.enter(pos)?;
                let e = self.unary()?;
                self.leave();
                base.v = value::pow(base.v, e.v, pos, self.limits)?;
                base.s = format!("{}^{}", base.s, e.s);
            }
            _ => {}
        }
        Ok(base)
    }

    fn postfix(&mut self) -> R<Piece> {
        let mut p = self.primary()?;
        while self.peek() == Some(&Tok::Bang) {
            let pos = self.pos();
            self.bump();
            p.v = value::factorial(p.v, pos, self.limits)?;
            p.s.push('!');
        }
        Ok(p)
    }

    fn primary(&mut self) -> R<Piece> {
        let pos = self.pos();
        let tok = match self.peek() {
            Some(t) => t.clone(),
            None => return Err(CalcError::new(pos, "unexpected end of expression")),
        };
        match tok {
            Tok::Num(text) => {
                self.bump();
                let r = parse_number(&text, pos, self.limits)?;
                Ok(Piece {
                    v: Value::exact(r),
                    s: text,
                })
            }
            Tok::LParen => {
                self.bump();
                self.enter(pos)?;
                let inner = self.expr()?;
                self.expect_rparen()?;
                self.leave();
                Ok(Piece {
                    v: inner.v,
                    s: format!("({})", inner.s),
                })
            }
            Tok::Name(name) => self.name(name, pos),
            other => Err(CalcError::new(
                pos,
                format!("unexpected {}", describe(&other)),
            )),
        }
    }

    /// A name: function call, constant, temperature scale or unit.
    fn name(&mut self, name: String, pos: usize) -> R<Piece> {
        self.bump();
        let is_fn = FUNCTIONS.contains(&name.as_str());
        if is_fn && self.peek() == Some(&Tok::LParen) {
            return self.call(name, pos);
        }
        let v = match name.as_str() {
            "pi" | "π" => Value::plain(Num::Approx(std::f64::consts::PI)),
            "e" => Value::plain(Num::Approx(std::f64::consts::E)),
            n => {
                if let Some(s) = Scale::lookup(n) {
                    Value::scale(s)
                } else if let Some(u) = units::lookup(n) {
                    Value::from_unit(&u)
                } else if is_fn {
                    return Err(CalcError::new(
                        pos,
                        format!("function \"{n}\" needs its arguments in parentheses"),
                    ));
                } else {
                    return Err(CalcError::new(pos, format!("unknown name \"{n}\"")));
                }
            }
        };
        Ok(Piece { v, s: name })
    }

    fn call(&mut self, name: String, pos: usize) -> R<Piece> {
        self.bump(); // "("
        self.enter(pos)?;
        let mut args = Vec::new();
        let mut texts = Vec::new();
        if self.peek() != Some(&Tok::RParen) {
            loop {
                let a = self.expr()?;
                args.push(a.v);
                texts.push(a.s);
                if self.peek() == Some(&Tok::Comma) {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        self.expect_rparen()?;
        self.leave();
        let v = value::call(&name, args, pos, self.limits)?;
        Ok(Piece {
            v,
            s: format!("{name}({})", texts.join(", ")),
        })
    }

    /// Conversion target: a temperature scale, or a unit expression.
    fn unit_expr_top(&mut self) -> R<(Target, String)> {
        if let Some(Tok::Name(n)) = self.peek() {
            if let Some(s) = Scale::lookup(n) {
                self.bump();
                return Ok((Target::Scale(s), s.symbol().to_string()));
            }
        }
        let (disp, dim, text) = self.unit_expr()?;
        Ok((Target::Unit(disp, dim), text))
    }

    /// unit_expr := unit_factor (("*" | "/" | juxtaposition) unit_factor)*
    /// Returns the display unit, its dimension and its text as written.
    fn unit_expr(&mut self) -> R<(Disp, Dim, String)> {
        let (mut disp, mut dim, mut text) = self.unit_factor()?;
        loop {
            let pos = self.pos();
            let (divide, sep) = match self.peek() {
                Some(Tok::Star) => (false, "*"),
                Some(Tok::Slash) => (true, "/"),
                Some(Tok::Name(_)) => (false, " "),
                _ => return Ok((disp, dim, text)),
            };
            if sep != " " {
                self.bump();
            }
            let (d2, dim2, t2) = self.unit_factor()?;
            let nd = if divide {
                dim.div(&dim2)
            } else {
                dim.mul(&dim2)
            };
            dim = nd.ok_or_else(|| CalcError::new(pos, "unit exponent too large"))?;
            disp = disp.combine(&d2, divide);
            text = format!("{text}{sep}{t2}");
        }
    }

    /// unit_factor := (NAME | "(" unit_expr ")") [("^" ["-"] INTEGER) | "²" | "³"]
    fn unit_factor(&mut self) -> R<(Disp, Dim, String)> {
        let pos = self.pos();
        let (disp, dim, text) = match self.peek().cloned() {
            Some(Tok::Name(n)) => {
                self.bump();
                let u = units::lookup(&n).ok_or_else(|| {
                    let why = if Scale::lookup(&n).is_some() {
                        format!("{n} can only be a conversion target on its own")
                    } else {
                        format!("unknown unit \"{n}\"")
                    };
                    CalcError::new(pos, why)
                })?;
                (Disp::atom(u.symbol, u.factor, true), u.dim, n)
            }
            Some(Tok::LParen) => {
                self.bump();
                self.enter(pos)?;
                let (d, dim, t) = self.unit_expr()?;
                self.expect_rparen()?;
                self.leave();
                (d, dim, format!("({t})"))
            }
            _ => return Err(CalcError::new(pos, "expected a unit")),
        };
        match self.unit_exponent()? {
            None => Ok((disp, dim, text)),
            Some((e, epos)) => {
                let dim = dim
                    .pow(e, 1)
                    .ok_or_else(|| CalcError::new(epos, "unit exponent too large"))?;
                let n = i32::try_from(e)
                    .map_err(|_| CalcError::new(epos, "unit exponent too large"))?;
                Ok((disp.powi(n), dim, format!("{text}^{e}")))
            }
        }
    }

    /// Optional integer exponent after a unit: `^2`, `^-1`, `²`.
    fn unit_exponent(&mut self) -> R<Option<(i64, usize)>> {
        let pos = self.pos();
        match self.peek() {
            Some(Tok::Sup(n)) => {
                let n = i64::from(*n);
                self.bump();
                Ok(Some((n, pos)))
            }
            Some(Tok::Caret) => {
                self.bump();
                let neg = self.peek() == Some(&Tok::Minus);
                if neg {
                    self.bump();
                }
                let e = match self.peek() {
                    Some(Tok::Num(t)) => t.parse::<i64>().ok().filter(|e| e.abs() <= 100),
                    _ => None,
                }
                .ok_or_else(|| {
                    CalcError::new(self.pos(), "expected a small integer unit exponent")
                })?;
                self.bump();
                Ok(Some((if neg { -e } else { e }, pos)))
            }
            _ => Ok(None),
        }
    }
}

/// Short description of a token for error messages.
fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("number {n}"),
        Tok::Name(n) => format!("name \"{n}\""),
        Tok::Plus => "\"+\"".into(),
        Tok::Minus => "\"-\"".into(),
        Tok::Star => "\"*\"".into(),
        Tok::Slash => "\"/\"".into(),
        Tok::Percent => "\"%\"".into(),
        Tok::Caret => "\"^\"".into(),
        Tok::Bang => "\"!\"".into(),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::Arrow => "\"->\"".into(),
        Tok::Sup(n) => format!("superscript {n}"),
    }
}

/// "3 km": multiply, except that `<number> °C` makes an affine temperature reading.
fn juxtapose(l: Value, r: Value, pos: usize, limits: &Limits) -> R<Value> {
    if let (Some(s), None) = (r.temp, l.temp) {
        if l.dim.is_none() && r.num == Num::int(1) {
            return Ok(Value { temp: Some(s), ..l });
        }
    }
    value::mul(l, r, pos, limits)
}

/// Parse a cleaned numeric literal ("12", "0.1", "1.5e-3") exactly,
/// refusing literals whose value would exceed the bit limit.
fn parse_number(text: &str, pos: usize, limits: &Limits) -> R<BigRational> {
    let (mant, exp) = match text.split_once('e') {
        Some((m, e)) => (m, e),
        None => (text, "0"),
    };
    let (int_part, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let digits = format!("{int_part}{frac}");
    let m = if digits.is_empty() {
        BigInt::zero()
    } else {
        BigInt::from_str(&digits).map_err(|_| CalcError::new(pos, "malformed number"))?
    };
    let too_big = || CalcError::new(pos, "number is too large or too precise for the bit limit");
    let e: i64 = exp.parse().map_err(|_| too_big())?;
    let frac_len = i64::try_from(frac.len()).map_err(|_| too_big())?;
    let shift = e.checked_sub(frac_len).ok_or_else(too_big)?;
    if m.is_zero() {
        return Ok(BigRational::zero());
    }
    // 10^k needs about 3.33*k bits: refuse before computing it.
    let est = shift.unsigned_abs().saturating_mul(10) / 3;
    if est.saturating_add(m.bits()) > limits.max_bits.saturating_add(64) {
        return Err(too_big());
    }
    let p = ten_pow(u32::try_from(shift.unsigned_abs()).map_err(|_| too_big())?);
    let r = if shift >= 0 {
        BigRational::from_integer(m * p)
    } else {
        BigRational::new(m, p)
    };
    match value::check(Num::Exact(r), pos, limits)? {
        Num::Exact(r) => Ok(r),
        Num::Approx(_) => Err(too_big()),
    }
}

/// 273.15 K, the offset of the Celsius scale.
fn celsius_offset() -> BigRational {
    BigRational::new(BigInt::from(5463), BigInt::from(20))
}

/// Reading on `s` → kelvin (exact).
fn to_kelvin(x: Num, s: Scale) -> Num {
    let nine_fifths = BigRational::new(BigInt::from(9), BigInt::from(5));
    let c = match (s, x) {
        (Scale::Celsius, x) => x,
        (Scale::Fahrenheit, Num::Exact(f)) => {
            Num::Exact((f - BigRational::from_integer(32.into())) / nine_fifths)
        }
        (Scale::Fahrenheit, Num::Approx(f)) => Num::Approx((f - 32.0) * 5.0 / 9.0),
    };
    match c {
        Num::Exact(c) => Num::Exact(c + celsius_offset()),
        Num::Approx(c) => Num::Approx(c + 273.15),
    }
}

/// Kelvin → reading on `s` (exact).
fn from_kelvin(k: Num, s: Scale) -> Num {
    let c = match k {
        Num::Exact(k) => Num::Exact(k - celsius_offset()),
        Num::Approx(k) => Num::Approx(k - 273.15),
    };
    match (s, c) {
        (Scale::Celsius, c) => c,
        (Scale::Fahrenheit, Num::Exact(c)) => Num::Exact(
            c * BigRational::new(9.into(), 5.into()) + BigRational::from_integer(32.into()),
        ),
        (Scale::Fahrenheit, Num::Approx(c)) => Num::Approx(c * 9.0 / 5.0 + 32.0),
    }
}

/// Apply a conversion target; `tpos` is the target's position.
fn convert(v: Value, target: Target, tpos: usize) -> R<Value> {
    let incompatible = |to: &str, to_dim: &Dim, from: &Value| {
        let from_name = if from.temp.is_some() {
            "temperature (affine scale)".to_string()
        } else {
            from.dim.name()
        };
        CalcError::new(
            tpos,
            format!("cannot convert {from_name} to {to} ({})", to_dim.name()),
        )
    };
    // Reading in kelvin for anything temperature-like.
    let kelvin = match v.temp {
        Some(s) => Some(to_kelvin(v.num.clone(), s)),
        None if v.dim == TEMP => Some(v.num.clone()),
        None => None,
    };
    match target {
        Target::Scale(s) => {
            let k = kelvin.ok_or_else(|| incompatible(s.symbol(), &TEMP, &v))?;
            Ok(Value {
                num: from_kelvin(k, s),
                dim: units::NONE,
                unit: None,
                temp: Some(s),
            })
        }
        Target::Unit(disp, dim) => {
            if dim != v.dim && !(dim == TEMP && kelvin.is_some()) {
                return Err(incompatible(&disp.text(), &dim, &v));
            }
            let num = kelvin.unwrap_or(v.num);
            let unit = (!dim.is_none()).then_some(disp);
            Ok(Value {
                num,
                dim,
                unit,
                temp: None,
            })
        }
    }
}
