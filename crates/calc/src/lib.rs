//! # capsule-calc
//!
//! Exact arithmetic with physical units for Capsule's "calc" task bot.
//!
//! **What this crate owns:** turning one line of user text ("what is 0.1 + 0.2?",
//! "100 km/h to m/s", "2^200") into an [`Answer`]: exact rational value where
//! one exists, a decimal rendering, the unit and dimension, and a one-line text.
//! Numbers are exact rationals over arbitrary-size integers; anything irrational
//! (sqrt(2), pi, sin(1)) is carried as an f64 approximation and flagged.
//!
//! **What it must never do:** any I/O; panic on any input (every conversion is
//! checked, text is only ever walked by `char_indices`); unbounded work. Input
//! length, nesting depth (hence parser recursion) and the size of every integer
//! are bounded by [`Limits`], and big powers / literals are refused *before*
//! they are computed.
//!
//! **Why it is hand-written:** `evalexpr` ≥ 12 is AGPL, and `numbat` is a whole
//! language with its own runtime, far more than a bot needs. A small parser and
//! a short, checked unit table (see `units.rs`, with exact SI factors) are easy
//! to audit.
//!
//! ## Notes for callers
//! * Juxtaposition binds tighter than `*` and `/`: `60 km / 2 h` is 30 km/h,
//!   and so `1/2 km` is `1/(2 km)`; write `(1/2) km` or `0.5 km`.
//! * `in` is the inch unless a unit follows it (`5 km in mi`); `5 in in cm`
//!   works; `inch`/`inches` are always unambiguous. `to`, `as`, `->` also convert.
//! * °C / °F are affine: only a bare reading can be converted
//!   (`100 °C to °F`, `300 K to °C`); arithmetic on them is refused.
//! * Operators may be spelled: `plus`, `minus`, `times`, `multiplied by`,
//!   `divided by`, `to the power of`, `raised to`, `squared`, `cubed`, `mod`.
#![forbid(unsafe_code)]

mod lexer;
mod num;
mod parser;
mod units;
mod value;

use num::{float_text, rational_decimal, rational_text, Num};
use num_rational::BigRational;
use num_traits::One;
use serde::Serialize;
use std::fmt;
use value::{Disp, Value};

/// Resource limits for one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum input length in bytes (default 2048).
    pub max_len: usize,
    /// Maximum nesting depth: parentheses, unary signs, calls, exponents (default 64).
    pub max_depth: usize,
    /// Maximum bits of any numerator or denominator (default 8192).
    pub max_bits: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_len: 2048,
            max_depth: 64,
            max_bits: 8192,
        }
    }
}

/// The result of a successful evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The expression as understood, normalised ("0.1 + 0.2"), without any wrapper words.
    pub expression: String,
    /// Exact value when rational ("3/10", "5/2 km"); `None` when irrational.
    pub exact: Option<String>,
    /// Decimal rendering, up to 30 significant digits.
    pub decimal: String,
    /// True when `decimal` is not exactly the value.
    pub approximate: bool,
    /// The result's unit ("m", "km/h", "N"); `None` when dimensionless.
    pub unit: Option<String>,
    /// The dimension ("length/time", "mass·length/time²", "dimensionless").
    pub dimension: String,
    /// One-line human answer ("0.1 + 0.2 = 3/10 = 0.3").
    pub text: String,
}

/// An error, with the byte offset in the ORIGINAL input it refers to.
#[derive(Debug, Clone, PartialEq)]
pub struct CalcError {
    pub position: usize,
    pub reason: String,
}

impl CalcError {
    pub(crate) fn new(position: usize, reason: impl Into<String>) -> Self {
        CalcError {
            position,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for CalcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.reason)
    }
}

impl std::error::Error for CalcError {}

/// Evaluate one line of user input.
pub fn evaluate(input: &str, limits: &Limits) -> Result<Answer, CalcError> {
    if input.len() > limits.max_len {
        return Err(CalcError::new(
            limits.max_len,
            format!("input is longer than {} bytes", limits.max_len),
        ));
    }
    let (offset, body) = strip_wrapper(input);
    if body.is_empty() {
        return Err(CalcError::new(offset, "empty expression"));
    }
    let tokens = lexer::lex(body, offset)?;
    let mut parser = parser::Parser::new(tokens, limits, offset + body.len());
    let piece = parser.input()?;
    Ok(finish(piece.s, piece.v))
}

/// Leading phrases stripped (case-insensitive), longest first.
const PREFIXES: &[&str] = &[
    "how much is",
    "what is",
    "what's",
    "whats",
    "calculate",
    "compute",
    "evaluate",
    "convert",
    "solve",
];

/// Strip a natural-language wrapper; returns (byte offset of the body, body).
fn strip_wrapper(input: &str) -> (usize, &str) {
    let trimmed = input.trim_start();
    let mut start = input.len() - trimmed.len();
    for p in PREFIXES {
        let head = trimmed.get(..p.len());
        let rest = trimmed.get(p.len()..).unwrap_or("");
        let boundary = !rest
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if head.is_some_and(|h| h.eq_ignore_ascii_case(p)) && boundary {
            start += p.len();
            break;
        }
    }
    let rest = input.get(start..).unwrap_or("");
    let lead = rest.len() - rest.trim_start().len();
    start += lead;
    let mut body = rest.trim_start();
    loop {
        let t = body.trim_end();
        match t.strip_suffix(['?', '.', '=']) {
            Some(s) => body = s,
            None => {
                body = t;
                break;
            }
        }
    }
    (start, body)
}

/// Build the answer from the final value.
fn finish(expression: String, v: Value) -> Answer {
    let (num, unit, dimension) = if let Some(s) = v.temp {
        (
            v.num,
            Some(s.symbol().to_string()),
            "temperature".to_string(),
        )
    } else if v.dim.is_none() {
        (v.num, None, "dimensionless".to_string())
    } else {
        let disp = display_unit(&v);
        let num = match v.num {
            Num::Exact(r) => Num::Exact(r / &disp.factor),
            Num::Approx(f) => Num::Approx(f / num::rational_to_f64(&disp.factor)),
        };
        (num, Some(disp.text()), v.dim.name())
    };
    let suffix = unit.as_ref().map(|u| format!(" {u}")).unwrap_or_default();
    let (exact, decimal, approximate) = match &num {
        Num::Exact(r) => {
            let (d, approx) = rational_decimal(r);
            (Some(format!("{}{suffix}", rational_text(r))), d, approx)
        }
        Num::Approx(f) => (None, float_text(*f), true),
    };
    let text = match &exact {
        Some(x) if *x == format!("{decimal}{suffix}") => format!("{expression} = {x}"),
        Some(x) if approximate => format!("{expression} = {x} ≈ {decimal}{suffix}"),
        Some(x) => format!("{expression} = {x} = {decimal}{suffix}"),
        None => format!("{expression} ≈ {decimal}{suffix}"),
    };
    Answer {
        expression,
        exact,
        decimal,
        approximate,
        unit,
        dimension,
        text,
    }
}

/// The unit to show: the carried one, renamed to N/J/W/Pa/V when it is an
/// implicit pure-SI compound of exactly that dimension; SI base otherwise.
fn display_unit(v: &Value) -> Disp {
    let disp = v.unit.clone().unwrap_or_else(|| Disp::si(&v.dim));
    if disp.is_compound() && !disp.explicit && disp.factor.is_one() {
        if let Some(name) = units::named_derived(&v.dim) {
            return Disp::atom(name, BigRational::one(), false);
        }
    }
    disp
}

#[cfg(test)]
mod tests;
