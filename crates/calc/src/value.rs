//! Values (a magnitude in SI base units, a dimension, the unit to display it
//! in) and the checked operations on them. Every operation that can grow an
//! integer checks the bit limit; every f64 result is checked to be finite.

use crate::num::{bits, exact_root, rational_to_f64, Num};
use crate::units::{Dim, Scale, Unit, NONE};
use crate::{CalcError, Limits};
use num_bigint::BigInt;
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// How a quantity is to be displayed: the exact SI factor of one display
/// unit, and the unit as a product of symbols with integer exponents
/// (so `km/h * h` simplifies to `km`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Disp {
    pub factor: BigRational,
    pub atoms: Vec<(String, i32)>,
    /// Set for an explicit conversion target (never renamed to N/J/W...).
    pub explicit: bool,
}

impl Disp {
    /// A single named unit.
    pub(crate) fn atom(symbol: &str, factor: BigRational, explicit: bool) -> Disp {
        Disp {
            factor,
            atoms: vec![(symbol.to_string(), 1)],
            explicit,
        }
    }

    /// Pure SI base-unit display for a dimension.
    pub(crate) fn si(dim: &Dim) -> Disp {
        Disp {
            factor: BigRational::one(),
            atoms: dim
                .si_atoms()
                .into_iter()
                .map(|(s, e)| (s.to_string(), e))
                .collect(),
            explicit: false,
        }
    }

    /// Product (or quotient when `inverse`) of two display units.
    pub(crate) fn combine(&self, o: &Disp, inverse: bool) -> Disp {
        let mut atoms = self.atoms.clone();
        for (sym, e) in &o.atoms {
            let e = if inverse { -e } else { *e };
            match atoms.iter_mut().find(|(s, _)| s == sym) {
                Some(slot) => slot.1 = slot.1.saturating_add(e),
                None => atoms.push((sym.clone(), e)),
            }
        }
        atoms.retain(|(_, e)| *e != 0);
        let factor = if inverse {
            &self.factor / &o.factor
        } else {
            &self.factor * &o.factor
        };
        Disp {
            factor,
            atoms,
            explicit: self.explicit && o.explicit,
        }
    }

    /// Integer power (|n| is bounded by the dimension-exponent limit).
    pub(crate) fn powi(&self, n: i32) -> Disp {
        let f = num_traits::pow(self.factor.clone(), n.unsigned_abs() as usize);
        Disp {
            factor: if n < 0 { f.recip() } else { f },
            atoms: self
                .atoms
                .iter()
                .map(|(s, e)| (s.clone(), e.saturating_mul(n)))
                .filter(|(_, e)| *e != 0)
                .collect(),
            explicit: self.explicit,
        }
    }

    pub(crate) fn is_compound(&self) -> bool {
        self.atoms.len() > 1 || self.atoms.iter().any(|(_, e)| *e != 1)
    }

    /// Text such as "km/h", "kg*m/s^2", "h^-1".
    pub(crate) fn text(&self) -> String {
        crate::units::fraction_text(&self.atoms)
    }
}

/// A computed value. `num` is in SI base units, except for affine
/// temperatures (`temp` set), where it is the reading on that scale.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Value {
    pub num: Num,
    pub dim: Dim,
    pub unit: Option<Disp>,
    pub temp: Option<Scale>,
}

type R<T> = Result<T, CalcError>;

fn err<T>(pos: usize, reason: impl Into<String>) -> R<T> {
    Err(CalcError::new(pos, reason))
}

impl Value {
    pub(crate) fn plain(num: Num) -> Value {
        Value {
            num,
            dim: NONE,
            unit: None,
            temp: None,
        }
    }

    pub(crate) fn exact(r: BigRational) -> Value {
        Value::plain(Num::Exact(r))
    }

    pub(crate) fn from_unit(u: &Unit) -> Value {
        Value {
            num: Num::Exact(u.factor.clone()),
            dim: u.dim,
            unit: Some(Disp::atom(u.symbol, u.factor.clone(), false)),
            temp: None,
        }
    }

    pub(crate) fn scale(s: Scale) -> Value {
        Value {
            num: Num::int(1),
            dim: NONE,
            unit: None,
            temp: Some(s),
        }
    }

    /// Refuse arithmetic on affine temperatures.
    pub(crate) fn no_temp(&self, pos: usize) -> R<()> {
        match self.temp {
            Some(s) => err(
                pos,
                format!(
                    "{} is an affine temperature scale: only a bare conversion such as \"100 °C to °F\" is supported (use K for arithmetic)",
                    s.symbol()
                ),
            ),
            None => Ok(()),
        }
    }

    fn need_dimensionless(&self, pos: usize, what: &str) -> R<()> {
        self.no_temp(pos)?;
        if self.dim.is_none() {
            Ok(())
        } else {
            err(
                pos,
                format!(
                    "{what} needs a dimensionless argument, got {}",
                    self.dim.name()
                ),
            )
        }
    }
}

/// Check an exact result against the bit limit, an approximate one for finiteness.
pub(crate) fn check(num: Num, pos: usize, limits: &Limits) -> R<Num> {
    match &num {
        Num::Exact(r) if bits(r) > limits.max_bits => err(
            pos,
            format!(
                "result would exceed the limit of {} bits per integer",
                limits.max_bits
            ),
        ),
        Num::Approx(f) if !f.is_finite() => err(pos, "result is not a finite number"),
        _ => Ok(num),
    }
}

/// Apply an exact op, or its f64 counterpart when either side is approximate.
fn combine(
    a: &Num,
    b: &Num,
    exact: impl Fn(&BigRational, &BigRational) -> BigRational,
    approx: impl Fn(f64, f64) -> f64,
) -> Num {
    match (a, b) {
        (Num::Exact(x), Num::Exact(y)) => Num::Exact(exact(x, y)),
        _ => Num::Approx(approx(a.to_f64(), b.to_f64())),
    }
}

fn dim_or_err(d: Option<Dim>, pos: usize) -> R<Dim> {
    d.ok_or_else(|| CalcError::new(pos, "unit exponent too large"))
}

/// Drop the display unit when the dimension cancelled out.
fn tidy(mut v: Value) -> Value {
    if v.dim.is_none() {
        v.unit = None;
    }
    v
}

/// `a + b` or `a - b`.
pub(crate) fn add(a: Value, b: Value, sub: bool, pos: usize, limits: &Limits) -> R<Value> {
    a.no_temp(pos)?;
    b.no_temp(pos)?;
    if a.dim != b.dim {
        let verb = if sub { "subtract" } else { "add" };
        return err(
            pos,
            format!("cannot {verb} {} and {}", a.dim.name(), b.dim.name()),
        );
    }
    let num = if sub {
        combine(&a.num, &b.num, |x, y| x - y, |x, y| x - y)
    } else {
        combine(&a.num, &b.num, |x, y| x + y, |x, y| x + y)
    };
    Ok(tidy(Value {
        num: check(num, pos, limits)?,
        dim: a.dim,
        unit: a.unit.or(b.unit),
        temp: None,
    }))
}

/// `a * b`.
pub(crate) fn mul(a: Value, b: Value, pos: usize, limits: &Limits) -> R<Value> {
    a.no_temp(pos)?;
    b.no_temp(pos)?;
    let dim = dim_or_err(a.dim.mul(&b.dim), pos)?;
    let num = combine(&a.num, &b.num, |x, y| x * y, |x, y| x * y);
    let unit = match (a.unit, b.unit) {
        (Some(x), Some(y)) => Some(x.combine(&y, false)),
        (x, y) => x.or(y),
    };
    Ok(tidy(Value {
        num: check(num, pos, limits)?,
        dim,
        unit,
        temp: None,
    }))
}

/// `a / b`; division by an exact or approximate zero is an error at `pos`.
pub(crate) fn div(a: Value, b: Value, pos: usize, limits: &Limits) -> R<Value> {
    a.no_temp(pos)?;
    b.no_temp(pos)?;
    if b.num.is_zero() {
        return err(pos, "division by zero");
    }
    let dim = dim_or_err(a.dim.div(&b.dim), pos)?;
    let num = combine(&a.num, &b.num, |x, y| x / y, |x, y| x / y);
    let unit = match (a.unit, b.unit) {
        (Some(x), Some(y)) => Some(x.combine(&y, true)),
        (None, Some(y)) => Some(y.powi(-1)),
        (x, None) => x,
    };
    Ok(tidy(Value {
        num: check(num, pos, limits)?,
        dim,
        unit,
        temp: None,
    }))
}

/// `a % b` (floored modulo) on dimensionless numbers.
pub(crate) fn modulo(a: Value, b: Value, pos: usize, limits: &Limits) -> R<Value> {
    a.need_dimensionless(pos, "%")?;
    b.need_dimensionless(pos, "%")?;
    if b.num.is_zero() {
        return err(pos, "modulo by zero");
    }
    let num = combine(
        &a.num,
        &b.num,
        |x, y| x - y * (x / y).floor(),
        |x, y| x - y * (x / y).floor(),
    );
    Ok(Value::plain(check(num, pos, limits)?))
}

/// Unary minus.
pub(crate) fn neg(mut v: Value) -> Value {
    v.num = match v.num {
        Num::Exact(r) => Num::Exact(-r),
        Num::Approx(f) => Num::Approx(-f),
    };
    v
}

/// Exact integer power with the bit budget checked BEFORE computing.
fn exact_int_pow(base: &BigRational, n: &BigInt, pos: usize, limits: &Limits) -> R<BigRational> {
    if base.is_zero() {
        if n.is_negative() {
            return err(pos, "division by zero (0 to a negative power)");
        }
        return Ok(if n.is_zero() {
            BigRational::one()
        } else {
            BigRational::zero()
        });
    }
    if base.abs().is_one() {
        let neg = base.is_negative() && n.is_odd();
        return Ok(if neg {
            -BigRational::one()
        } else {
            BigRational::one()
        });
    }
    let too_big = || {
        CalcError::new(
            pos,
            format!(
                "exponent {n} is too large: the result would exceed the limit of {} bits",
                limits.max_bits
            ),
        )
    };
    let mag = n.abs().to_u64().ok_or_else(too_big)?;
    let estimate = bits(base).saturating_sub(1).max(1).saturating_mul(mag);
    if estimate > limits.max_bits {
        return Err(too_big());
    }
    let k = usize::try_from(mag).map_err(|_| too_big())?;
    let p = num_traits::pow(base.clone(), k);
    let p = if n.is_negative() { p.recip() } else { p };
    match check(Num::Exact(p), pos, limits)? {
        Num::Exact(r) => Ok(r),
        Num::Approx(_) => Err(too_big()),
    }
}

/// `base ^ exp`. Integer exponents are exact; rational exponents are exact
/// when the root is; anything else is an f64 approximation.
pub(crate) fn pow(base: Value, exp: Value, pos: usize, limits: &Limits) -> R<Value> {
    base.no_temp(pos)?;
    exp.need_dimensionless(pos, "an exponent")?;
    match &exp.num {
        Num::Exact(e) if e.is_integer() => int_pow(base, e.numer(), pos, limits),
        Num::Exact(e) => ratio_pow(base, e, pos, limits),
        Num::Approx(f) => {
            if !base.dim.is_none() {
                return err(pos, "a quantity with a unit needs an exact exponent");
            }
            let b = base.num.to_f64();
            if b < 0.0 {
                return err(pos, "a negative base needs an exact exponent");
            }
            let num = check(Num::Approx(b.powf(*f)), pos, limits)?;
            Ok(Value::plain(num))
        }
    }
}

fn int_pow(base: Value, n: &BigInt, pos: usize, limits: &Limits) -> R<Value> {
    let (dim, unit) = if base.dim.is_none() {
        (NONE, None)
    } else {
        let small = n
            .to_i64()
            .ok_or_else(|| CalcError::new(pos, "unit exponent too large"))?;
        let dim = dim_or_err(base.dim.pow(small, 1), pos)?;
        // |small| <= MAX_DIM_EXP here: dim.pow above refused anything larger.
        let unit = base.unit.map(|u| u.powi(i32::try_from(small).unwrap_or(0)));
        (dim, unit)
    };
    let num = match &base.num {
        Num::Exact(b) => Num::Exact(exact_int_pow(b, n, pos, limits)?),
        Num::Approx(b) => {
            let e = n.to_i32().map_or(f64::INFINITY, f64::from);
            Num::Approx(b.powf(e))
        }
    };
    Ok(tidy(Value {
        num: check(num, pos, limits)?,
        dim,
        unit,
        temp: None,
    }))
}

fn ratio_pow(base: Value, e: &BigRational, pos: usize, limits: &Limits) -> R<Value> {
    let dim = if base.dim.is_none() {
        NONE
    } else {
        let p = e.numer().to_i64();
        let q = e.denom().to_i64();
        let d = p.zip(q).and_then(|(p, q)| base.dim.pow(p, q));
        d.ok_or_else(|| {
            CalcError::new(
                pos,
                format!(
                    "cannot raise {} to the power {e}: the unit exponents would not be integers",
                    base.dim.name()
                ),
            )
        })?
    };
    let unit = (!dim.is_none()).then(|| Disp::si(&dim));
    let q_small = e.denom().to_u32().filter(|&q| q <= 1_000_000);
    if base.num.is_negative() && e.denom().is_even() {
        return err(pos, "even root of a negative number");
    }
    let num = match (&base.num, q_small) {
        (Num::Exact(b), Some(q)) => match exact_root(b, q) {
            Some(root) => Num::Exact(exact_int_pow(&root, e.numer(), pos, limits)?),
            None => approx_ratio_pow(b, e),
        },
        (Num::Exact(b), None) => approx_ratio_pow(b, e),
        (Num::Approx(b), _) => approx_f64_pow(*b, e),
    };
    Ok(tidy(Value {
        num: check(num, pos, limits)?,
        dim,
        unit,
        temp: None,
    }))
}

/// Real `b^(p/q)` for an exact base, via logarithms when the base is outside
/// f64 range (so `root(2^8000, 999999)` still works).
fn approx_ratio_pow(b: &BigRational, e: &BigRational) -> Num {
    let x = rational_to_f64(b);
    if x.is_normal() {
        return approx_f64_pow(x, e);
    }
    let mag = (big_ln(&b.abs()) * rational_to_f64(e)).exp();
    let odd = e.numer().is_odd();
    Num::Approx(if b.is_negative() && odd { -mag } else { mag })
}

/// Real `b^(p/q)`, also for odd roots of negative numbers.
fn approx_f64_pow(b: f64, e: &BigRational) -> Num {
    let f = rational_to_f64(e);
    if b < 0.0 {
        // denominator is odd here: (-|b|)^(p/q) = (-1)^p |b|^(p/q)
        let mag = (-b).powf(f);
        Num::Approx(if e.numer().is_odd() { -mag } else { mag })
    } else {
        Num::Approx(b.powf(f))
    }
}

/// Postfix factorial, n ≤ 1000, with the bit limit checked as it grows.
pub(crate) fn factorial(v: Value, pos: usize, limits: &Limits) -> R<Value> {
    v.need_dimensionless(pos, "factorial")?;
    let n = match &v.num {
        Num::Exact(r) if r.is_integer() && !r.is_negative() => r.numer().to_u32(),
        _ => return err(pos, "factorial needs a non-negative integer"),
    };
    let n = n
        .filter(|&n| n <= 1000)
        .ok_or_else(|| CalcError::new(pos, "factorial is limited to n ≤ 1000"))?;
    let mut acc = BigInt::one();
    for k in 2..=n {
        acc *= k;
        if acc.bits() > limits.max_bits {
            return err(
                pos,
                format!(
                    "result would exceed the limit of {} bits per integer",
                    limits.max_bits
                ),
            );
        }
    }
    Ok(Value::exact(BigRational::from_integer(acc)))
}

/// Natural log of a positive rational, accurate even beyond f64 range.
fn big_ln(r: &BigRational) -> f64 {
    fn ln_int(b: &BigInt) -> f64 {
        let nbits = b.bits();
        if nbits < 1000 {
            return b.to_f64().map_or(f64::INFINITY, f64::ln);
        }
        let shift = nbits - 64;
        let top = (b >> shift).to_f64().map_or(f64::INFINITY, f64::ln);
        top + shift as f64 * std::f64::consts::LN_2
    }
    ln_int(r.numer()) - ln_int(r.denom())
}

fn ln_of(n: &Num) -> f64 {
    match n {
        Num::Exact(r) => big_ln(r),
        Num::Approx(f) => f.ln(),
    }
}

/// Exact logarithm when x is an integer power of base (log10(1000) = 3).
fn exact_log(x: &Num, base: &Num, limits: &Limits) -> Option<Num> {
    let (Num::Exact(xr), Num::Exact(br)) = (x, base) else {
        return None;
    };
    let f = big_ln(xr) / big_ln(br);
    let k = f.round();
    if !k.is_finite() || (f - k).abs() > 1e-9 || k.abs() > 100_000.0 {
        return None;
    }
    let kb = BigInt::from(k as i64);
    let p = exact_int_pow(br, &kb, 0, limits).ok()?;
    (p == *xr).then(|| Num::Exact(BigRational::from_integer(kb)))
}

/// Apply a built-in function. `pos` is the function name's position.
pub(crate) fn call(name: &str, args: Vec<Value>, pos: usize, limits: &Limits) -> R<Value> {
    for a in &args {
        a.no_temp(pos)?;
    }
    let arity_err = |want: &str| err(pos, format!("{name} takes {want}"));
    match name {
        "min" | "max" => {
            if args.is_empty() {
                return arity_err("at least one argument");
            }
            min_max(name == "max", args, pos)
        }
        "root" | "log" if args.len() == 2 => {
            let mut it = args.into_iter();
            match (it.next(), it.next()) {
                (Some(x), Some(y)) if name == "root" => root_n(x, y, pos, limits),
                (Some(x), Some(b)) => log_base(x, b, pos, limits),
                _ => arity_err("two arguments"),
            }
        }
        "root" => arity_err("two arguments: root(x, n)"),
        _ if args.len() != 1 => arity_err("exactly one argument"),
        _ => {
            let x = args
                .into_iter()
                .next()
                .ok_or_else(|| CalcError::new(pos, "missing argument"))?;
            unary_fn(name, x, pos, limits)
        }
    }
}

fn min_max(want_max: bool, args: Vec<Value>, pos: usize) -> R<Value> {
    let mut best: Option<Value> = None;
    for a in args {
        best = Some(match best {
            None => a,
            Some(b) => {
                if a.dim != b.dim {
                    return err(
                        pos,
                        format!("cannot compare {} and {}", b.dim.name(), a.dim.name()),
                    );
                }
                let a_bigger = match (&a.num, &b.num) {
                    (Num::Exact(x), Num::Exact(y)) => x > y,
                    _ => a.num.to_f64() > b.num.to_f64(),
                };
                if a_bigger == want_max {
                    a
                } else {
                    b
                }
            }
        });
    }
    best.ok_or_else(|| CalcError::new(pos, "missing argument"))
}

fn root_n(x: Value, n: Value, pos: usize, limits: &Limits) -> R<Value> {
    n.need_dimensionless(pos, "root degree")?;
    let deg = match &n.num {
        Num::Exact(r) if r.is_integer() && r.is_positive() => r.numer().to_u32(),
        _ => None,
    };
    match deg.filter(|&d| d <= 1_000_000) {
        Some(d) => nth_root(x, d, pos, limits),
        None => err(pos, "root degree must be a positive integer up to 1000000"),
    }
}

/// sqrt / cbrt / root: exact when rational, dimension exponents divided by n.
fn nth_root(x: Value, n: u32, pos: usize, limits: &Limits) -> R<Value> {
    if x.num.is_negative() && n.is_multiple_of(2) {
        return err(pos, "cannot take an even root of a negative number");
    }
    let e = BigRational::new(BigInt::one(), BigInt::from(n));
    let what = if n == 2 { "sqrt" } else { "root" };
    if !x.dim.is_none() && x.dim.pow(1, i64::from(n)).is_none() {
        return err(
            pos,
            format!(
                "{what} of {}: the unit exponents are not divisible by {n}",
                x.dim.name()
            ),
        );
    }
    ratio_pow(x, &e, pos, limits)
}

fn log_base(x: Value, b: Value, pos: usize, limits: &Limits) -> R<Value> {
    x.need_dimensionless(pos, "log")?;
    b.need_dimensionless(pos, "log")?;
    if b.num.is_negative() || b.num.is_zero() || b.num == Num::int(1) {
        return err(pos, "log base must be positive and not 1");
    }
    if x.num.is_negative() || x.num.is_zero() {
        return err(pos, "log is undefined for zero or negative numbers");
    }
    if let Some(k) = exact_log(&x.num, &b.num, limits) {
        return Ok(Value::plain(k));
    }
    let f = ln_of(&x.num) / ln_of(&b.num);
    Ok(Value::plain(check(Num::Approx(f), pos, limits)?))
}

/// floor / ceil / round applied in the value's display unit.
fn rounding(name: &str, x: Value, pos: usize, limits: &Limits) -> R<Value> {
    let factor = x
        .unit
        .as_ref()
        .map(|u| u.factor.clone())
        .unwrap_or_else(BigRational::one);
    let num = match &x.num {
        Num::Exact(r) => {
            let v = r / &factor;
            let v = match name {
                "floor" => v.floor(),
                "ceil" => v.ceil(),
                _ => v.round(),
            };
            Num::Exact(v * &factor)
        }
        Num::Approx(f) => {
            let fac = rational_to_f64(&factor);
            let v = f / fac;
            let v = match name {
                "floor" => v.floor(),
                "ceil" => v.ceil(),
                _ => v.round(),
            };
            Num::Approx(v * fac)
        }
    };
    Ok(Value {
        num: check(num, pos, limits)?,
        ..x
    })
}

fn unary_fn(name: &str, x: Value, pos: usize, limits: &Limits) -> R<Value> {
    match name {
        "abs" => {
            let num = match x.num {
                Num::Exact(r) => Num::Exact(r.abs()),
                Num::Approx(f) => Num::Approx(f.abs()),
            };
            return Ok(Value { num, ..x });
        }
        "floor" | "ceil" | "round" => return rounding(name, x, pos, limits),
        "sqrt" => return nth_root(x, 2, pos, limits),
        "cbrt" => return nth_root(x, 3, pos, limits),
        _ => {}
    }
    x.need_dimensionless(pos, name)?;
    if let Some(v) = exact_special(name, &x.num) {
        return Ok(Value::plain(Num::int(v)));
    }
    let f = x.num.to_f64();
    let positive = !(x.num.is_negative() || x.num.is_zero());
    let out = match name {
        "ln" | "log10" | "log2" | "log" if !positive => {
            return err(
                pos,
                format!("{name} is undefined for zero or negative numbers"),
            )
        }
        "ln" => ln_of(&x.num),
        "log10" | "log" | "log2" => {
            let b = if name == "log2" { 2 } else { 10 };
            if let Some(k) = exact_log(&x.num, &Num::int(b), limits) {
                return Ok(Value::plain(k));
            }
            ln_of(&x.num) / (b as f64).ln()
        }
        "exp" => f.exp(),
        "sin" => f.sin(),
        "cos" => f.cos(),
        "tan" => f.tan(),
        "asin" | "acos" if !(-1.0..=1.0).contains(&f) => {
            return err(pos, format!("{name} is only defined on [-1, 1]"))
        }
        "asin" => f.asin(),
        "acos" => f.acos(),
        "atan" => f.atan(),
        _ => return err(pos, format!("unknown function \"{name}\"")),
    };
    Ok(Value::plain(check(Num::Approx(out), pos, limits)?))
}

/// Exact values at the trivial points: sin(0)=0, cos(0)=1, exp(0)=1, ln(1)=0 ...
fn exact_special(name: &str, x: &Num) -> Option<i64> {
    let zero = matches!(x, Num::Exact(r) if r.is_zero());
    let one = matches!(x, Num::Exact(r) if r.is_one());
    match name {
        "sin" | "tan" | "asin" | "atan" if zero => Some(0),
        "cos" | "exp" if zero => Some(1),
        "ln" | "acos" if one => Some(0),
        _ => None,
    }
}
