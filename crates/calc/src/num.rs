//! Numbers: exact big rationals, or an f64 approximation once anything
//! irrational entered the computation. Plus decimal rendering.

use num_bigint::BigInt;
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// Maximum significant digits in a rendered decimal.
pub(crate) const SIG_DIGITS: usize = 30;

/// A numeric magnitude.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Num {
    Exact(BigRational),
    Approx(f64),
}

impl Num {
    pub(crate) fn int(i: i64) -> Num {
        Num::Exact(BigRational::from_integer(BigInt::from(i)))
    }

    pub(crate) fn to_f64(&self) -> f64 {
        match self {
            Num::Exact(r) => rational_to_f64(r),
            Num::Approx(f) => *f,
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        match self {
            Num::Exact(r) => r.is_zero(),
            Num::Approx(f) => *f == 0.0,
        }
    }

    pub(crate) fn is_negative(&self) -> bool {
        match self {
            Num::Exact(r) => r.is_negative(),
            Num::Approx(f) => *f < 0.0,
        }
    }
}

/// Exact rational to f64 (±inf when out of range, never panics).
pub(crate) fn rational_to_f64(r: &BigRational) -> f64 {
    r.to_f64().unwrap_or_else(|| {
        if r.is_negative() {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }
    })
}

/// Bits needed for the larger of numerator and denominator.
pub(crate) fn bits(r: &BigRational) -> u64 {
    r.numer().bits().max(r.denom().bits())
}

pub(crate) fn ten_pow(n: u32) -> BigInt {
    num_traits::pow(BigInt::from(10), n as usize)
}

/// Exact integer n-th root of a non-negative integer, if it is one.
pub(crate) fn exact_int_root(x: &BigInt, n: u32) -> Option<BigInt> {
    if x.is_negative() || n == 0 {
        return None;
    }
    let r = x.nth_root(n);
    (num_traits::pow(r.clone(), n as usize) == *x).then_some(r)
}

/// Exact n-th root of a rational (odd roots of negatives allowed), if rational.
pub(crate) fn exact_root(x: &BigRational, n: u32) -> Option<BigRational> {
    let neg = x.is_negative();
    if neg && n.is_multiple_of(2) {
        return None;
    }
    let a = x.abs();
    let num = exact_int_root(a.numer(), n)?;
    let den = exact_int_root(a.denom(), n)?;
    let r = BigRational::new(num, den);
    Some(if neg { -r } else { r })
}

/// "n" or "n/d".
pub(crate) fn rational_text(r: &BigRational) -> String {
    if r.denom().is_one() {
        r.numer().to_string()
    } else {
        format!("{}/{}", r.numer(), r.denom())
    }
}

/// Decimal rendering of an exact rational: `(text, approximate)`.
/// Exact when the value has at most 30 significant digits, else rounded
/// (half away from zero) to 30 significant digits.
pub(crate) fn rational_decimal(r: &BigRational) -> (String, bool) {
    if r.is_zero() {
        return ("0".into(), false);
    }
    let sign = if r.is_negative() { "-" } else { "" };
    let a = r.abs();
    let (n, d) = (a.numer(), a.denom());
    // k = floor(log10(a))
    let nd = n.to_string().len() as i64;
    let dd = d.to_string().len() as i64;
    let mut k = nd - dd;
    if !ge_pow10(n, d, k) {
        k -= 1;
    }
    // scaled = a * 10^(SIG-1-k): an integer part of exactly SIG digits
    let shift = SIG_DIGITS as i64 - 1 - k;
    let (sn, sd) = scale(n, d, shift);
    let (mut q, rem) = sn.div_rem(&sd);
    let exact = rem.is_zero();
    if !exact && (rem * 2u8) >= sd {
        q += 1u8;
    }
    let mut digits = q.to_string();
    if digits.len() > SIG_DIGITS {
        // rounding carried into a new digit (999.. -> 1000..)
        digits.truncate(SIG_DIGITS);
        k += 1;
    }
    let digits = digits.trim_end_matches('0').to_string();
    (format!("{sign}{}", place_point(&digits, k)), !exact)
}

/// Does n/d >= 10^k hold?
fn ge_pow10(n: &BigInt, d: &BigInt, k: i64) -> bool {
    let p = ten_pow(k.unsigned_abs() as u32);
    if k >= 0 {
        *n >= d * p
    } else {
        n * p >= *d
    }
}

/// (n * 10^shift, d) or (n, d * 10^-shift).
fn scale(n: &BigInt, d: &BigInt, shift: i64) -> (BigInt, BigInt) {
    let p = ten_pow(shift.unsigned_abs() as u32);
    if shift >= 0 {
        (n * p, d.clone())
    } else {
        (n.clone(), d * p)
    }
}

/// Place the decimal point: value = 0.DIGITS * 10^(k+1). Plain notation for
/// -7 < k < 30, scientific otherwise.
fn place_point(digits: &str, k: i64) -> String {
    let len = digits.len() as i64;
    if (0..SIG_DIGITS as i64).contains(&k) {
        if len <= k + 1 {
            let zeros = "0".repeat((k + 1 - len) as usize);
            format!("{digits}{zeros}")
        } else {
            let (i, f) = digits.split_at((k + 1) as usize);
            format!("{i}.{f}")
        }
    } else if (-7..0).contains(&k) {
        format!("0.{}{digits}", "0".repeat((-k - 1) as usize))
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        if rest.is_empty() {
            format!("{first}e{k}")
        } else {
            format!("{first}.{rest}e{k}")
        }
    }
}

/// Render an f64 with up to 17 significant digits (shortest round-trip form).
pub(crate) fn float_text(f: f64) -> String {
    let a = f.abs();
    if a == 0.0 || (1e-7..1e21).contains(&a) {
        format!("{f}")
    } else {
        format!("{f:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: i64, d: i64) -> BigRational {
        BigRational::new(n.into(), d.into())
    }

    #[test]
    fn decimals() {
        assert_eq!(rational_decimal(&q(3, 10)), ("0.3".into(), false));
        assert_eq!(rational_decimal(&q(5, 4)), ("1.25".into(), false));
        assert_eq!(rational_decimal(&q(-1, 8)), ("-0.125".into(), false));
        assert_eq!(rational_decimal(&q(1200, 1)), ("1200".into(), false));
        assert_eq!(
            rational_decimal(&q(1, 3)),
            ("0.333333333333333333333333333333".into(), true)
        );
        assert_eq!(
            rational_decimal(&q(2, 3)),
            ("0.666666666666666666666666666667".into(), true)
        );
        assert_eq!(rational_decimal(&q(1, 1000000000)), ("1e-9".into(), false));
        let big = BigRational::from_integer(num_traits::pow(BigInt::from(2), 100));
        assert_eq!(
            rational_decimal(&big),
            ("1.26765060022822940149670320538e30".into(), true)
        );
        assert_eq!(rational_decimal(&q(999, 1000)), ("0.999".into(), false));
    }

    #[test]
    fn roots() {
        assert_eq!(exact_root(&q(16, 9), 2), Some(q(4, 3)));
        assert_eq!(exact_root(&q(-8, 1), 3), Some(q(-2, 1)));
        assert_eq!(exact_root(&q(2, 1), 2), None);
        assert_eq!(exact_root(&q(-4, 1), 2), None);
    }
}
