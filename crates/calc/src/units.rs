//! The unit table: dimensions as exponent vectors over the seven SI base
//! dimensions, and every accepted unit name with its exact SI factor.
//!
//! All factors are exact rationals taken from the SI / international
//! definitions (1 in = 0.0254 m, 1 lb = 0.45359237 kg, 1 cal = 4.184 J, ...).

use num_bigint::BigInt;
use num_rational::BigRational;
use std::str::FromStr;

/// Number of SI base dimensions.
pub(crate) const BASES: usize = 7;

/// Largest absolute exponent a dimension may reach (keeps `m^100000` out).
pub(crate) const MAX_DIM_EXP: i32 = 100;

/// Base dimension order: mass, length, time, current, temperature, amount, luminosity.
const DIM_NAMES: [&str; BASES] = [
    "mass",
    "length",
    "time",
    "current",
    "temperature",
    "amount",
    "luminosity",
];
const SI_SYMBOLS: [&str; BASES] = ["kg", "m", "s", "A", "K", "mol", "cd"];

/// A dimension: exponents of (mass, length, time, current, temperature, amount, luminosity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Dim(pub [i32; BASES]);

const M: usize = 0;
const L: usize = 1;
const T: usize = 2;
const I: usize = 3;
const TH: usize = 4;
const N: usize = 5;
const J: usize = 6;

const fn d(pairs: &[(usize, i32)]) -> Dim {
    let mut e = [0i32; BASES];
    let mut k = 0;
    while k < pairs.len() {
        e[pairs[k].0] = pairs[k].1;
        k += 1;
    }
    Dim(e)
}

pub(crate) const NONE: Dim = Dim([0; BASES]);
const LEN: Dim = d(&[(L, 1)]);
const MASS: Dim = d(&[(M, 1)]);
const TIME: Dim = d(&[(T, 1)]);
const CUR: Dim = d(&[(I, 1)]);
pub(crate) const TEMP: Dim = d(&[(TH, 1)]);
const AMT: Dim = d(&[(N, 1)]);
const LUM: Dim = d(&[(J, 1)]);
const FORCE: Dim = d(&[(M, 1), (L, 1), (T, -2)]);
const ENERGY: Dim = d(&[(M, 1), (L, 2), (T, -2)]);
const POWER: Dim = d(&[(M, 1), (L, 2), (T, -3)]);
const PRESSURE: Dim = d(&[(M, 1), (L, -1), (T, -2)]);
const FREQ: Dim = d(&[(T, -1)]);
const VOLTAGE: Dim = d(&[(M, 1), (L, 2), (T, -3), (I, -1)]);
const VOLUME: Dim = d(&[(L, 3)]);
const AREA: Dim = d(&[(L, 2)]);
const SPEED: Dim = d(&[(L, 1), (T, -1)]);
const CHARGE: Dim = d(&[(T, 1), (I, 1)]);

impl Dim {
    pub(crate) fn is_none(&self) -> bool {
        self.0.iter().all(|&e| e == 0)
    }

    /// Combine two dimensions exponent-wise with `f`, refusing huge exponents.
    fn zip(&self, o: &Dim, f: impl Fn(i32, i32) -> Option<i32>) -> Option<Dim> {
        let mut e = [0i32; BASES];
        for (k, slot) in e.iter_mut().enumerate() {
            let v = f(self.0[k], o.0[k])?;
            if v.abs() > MAX_DIM_EXP {
                return None;
            }
            *slot = v;
        }
        Some(Dim(e))
    }

    pub(crate) fn mul(&self, o: &Dim) -> Option<Dim> {
        self.zip(o, |a, b| a.checked_add(b))
    }

    pub(crate) fn div(&self, o: &Dim) -> Option<Dim> {
        self.zip(o, |a, b| a.checked_sub(b))
    }

    /// Raise to the rational power p/q; `None` unless every exponent stays integral and small.
    pub(crate) fn pow(&self, p: i64, q: i64) -> Option<Dim> {
        self.zip(&NONE, |a, _| {
            let num = i64::from(a).checked_mul(p)?;
            if q == 0 || num % q != 0 {
                return None;
            }
            i32::try_from(num / q).ok()
        })
    }

    /// Human name, e.g. "mass·length/time²" or "dimensionless".
    pub(crate) fn name(&self) -> String {
        if self.is_none() {
            return "dimensionless".into();
        }
        let part = |k: usize, e: i32| format!("{}{}", DIM_NAMES[k], superscript(e));
        join_fraction(self, "·", part)
    }

    /// SI base-unit atoms, e.g. [("kg", 1), ("m", 1), ("s", -2)].
    pub(crate) fn si_atoms(&self) -> Vec<(&'static str, i32)> {
        (0..BASES)
            .filter(|&k| self.0[k] != 0)
            .map(|k| (SI_SYMBOLS[k], self.0[k]))
            .collect()
    }
}

/// Unit text from (symbol, exponent) atoms: "kg*m/s^2", "kg/(m*s^2)", "h^-1".
pub(crate) fn fraction_text(atoms: &[(String, i32)]) -> String {
    let pow = |s: &str, e: i32| {
        if e == 1 {
            s.to_string()
        } else {
            format!("{s}^{e}")
        }
    };
    let num: Vec<String> = atoms
        .iter()
        .filter(|a| a.1 > 0)
        .map(|a| pow(&a.0, a.1))
        .collect();
    let den: Vec<String> = atoms
        .iter()
        .filter(|a| a.1 < 0)
        .map(|a| pow(&a.0, -a.1))
        .collect();
    if num.is_empty() {
        let neg: Vec<String> = atoms.iter().map(|a| pow(&a.0, a.1)).collect();
        return neg.join("*");
    }
    match den.len() {
        0 => num.join("*"),
        1 => format!("{}/{}", num.join("*"), den.join("*")),
        _ => format!("{}/({})", num.join("*"), den.join("*")),
    }
}

/// Render numerator parts, then "/" and the denominator (parenthesised when it has several parts).
fn join_fraction(dim: &Dim, sep: &str, part: impl Fn(usize, i32) -> String) -> String {
    let num: Vec<String> = (0..BASES)
        .filter(|&k| dim.0[k] > 0)
        .map(|k| part(k, dim.0[k]))
        .collect();
    let den: Vec<String> = (0..BASES)
        .filter(|&k| dim.0[k] < 0)
        .map(|k| part(k, -dim.0[k]))
        .collect();
    let mut s = if num.is_empty() {
        "1".to_string()
    } else {
        num.join(sep)
    };
    if !den.is_empty() {
        s.push('/');
        if den.len() > 1 {
            s.push('(');
            s.push_str(&den.join(sep));
            s.push(')');
        } else {
            s.push_str(&den.join(sep));
        }
    }
    s
}

/// Unicode superscript for an exponent; empty for 1.
fn superscript(e: i32) -> String {
    if e == 1 {
        return String::new();
    }
    e.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

/// One row of the unit table: accepted names, exact SI factor as "n/d" text, dimension.
struct UnitDef {
    names: &'static [&'static str],
    factor: &'static str,
    dim: Dim,
}

macro_rules! u {
    ($names:expr, $factor:expr, $dim:expr) => {
        UnitDef {
            names: &$names,
            factor: $factor,
            dim: $dim,
        }
    };
}

/// The checked unit table. The first name of each row is the canonical symbol.
const TABLE: &[UnitDef] = &[
    // length
    u!(["m", "meter", "meters", "metre", "metres"], "1", LEN),
    u!(
        ["km", "kilometer", "kilometers", "kilometre", "kilometres"],
        "1000",
        LEN
    ),
    u!(
        [
            "cm",
            "centimeter",
            "centimeters",
            "centimetre",
            "centimetres"
        ],
        "1/100",
        LEN
    ),
    u!(
        [
            "mm",
            "millimeter",
            "millimeters",
            "millimetre",
            "millimetres"
        ],
        "1/1000",
        LEN
    ),
    u!(
        [
            "um",
            "µm",
            "μm",
            "micrometer",
            "micrometers",
            "micron",
            "microns"
        ],
        "1/1000000",
        LEN
    ),
    u!(
        ["nm", "nanometer", "nanometers", "nanometre", "nanometres"],
        "1/1000000000",
        LEN
    ),
    u!(["mi", "mile", "miles"], "1609344/1000", LEN),
    u!(["yd", "yard", "yards"], "9144/10000", LEN),
    u!(["ft", "foot", "feet"], "3048/10000", LEN),
    u!(["in", "inch", "inches"], "254/10000", LEN),
    u!(["nmi", "nauticalmile"], "1852", LEN),
    // area / volume
    u!(["ha", "hectare", "hectares"], "10000", AREA),
    u!(
        ["L", "l", "liter", "liters", "litre", "litres"],
        "1/1000",
        VOLUME
    ),
    u!(
        [
            "mL",
            "ml",
            "milliliter",
            "milliliters",
            "millilitre",
            "millilitres"
        ],
        "1/1000000",
        VOLUME
    ),
    // mass
    u!(["kg", "kilogram", "kilograms"], "1", MASS),
    u!(["g", "gram", "grams", "gramme", "grammes"], "1/1000", MASS),
    u!(["mg", "milligram", "milligrams"], "1/1000000", MASS),
    u!(["t", "tonne", "tonnes"], "1000", MASS),
    u!(["lb", "lbs", "pound", "pounds"], "45359237/100000000", MASS),
    u!(["oz", "ounce", "ounces"], "45359237/1600000000", MASS),
    // time
    u!(["s", "sec", "second", "seconds"], "1", TIME),
    u!(["ms", "millisecond", "milliseconds"], "1/1000", TIME),
    u!(["min", "minute", "minutes"], "60", TIME),
    u!(["h", "hr", "hour", "hours"], "3600", TIME),
    u!(["day", "days"], "86400", TIME),
    u!(["week", "weeks"], "604800", TIME),
    // speed shorthands
    u!(["mph"], "1609344/3600000", SPEED),
    u!(["kph", "kmh"], "1000/3600", SPEED),
    u!(["kn", "knot", "knots"], "1852/3600", SPEED),
    // other base units
    u!(["A", "ampere", "amperes", "amp", "amps"], "1", CUR),
    u!(["mA", "milliampere", "milliamperes"], "1/1000", CUR),
    u!(["K", "kelvin", "kelvins"], "1", TEMP),
    u!(["mol", "mole", "moles"], "1", AMT),
    u!(["cd", "candela"], "1", LUM),
    // derived
    u!(["N", "newton", "newtons"], "1", FORCE),
    u!(["kN", "kilonewton", "kilonewtons"], "1000", FORCE),
    u!(["lbf"], "44482216152605/10000000000000", FORCE),
    u!(["J", "joule", "joules"], "1", ENERGY),
    u!(["kJ", "kilojoule", "kilojoules"], "1000", ENERGY),
    u!(["cal", "calorie", "calories"], "4184/1000", ENERGY),
    u!(["kcal", "kilocalorie", "kilocalories"], "4184", ENERGY),
    u!(["Wh"], "3600", ENERGY),
    u!(["kWh"], "3600000", ENERGY),
    u!(["W", "watt", "watts"], "1", POWER),
    u!(["kW", "kilowatt", "kilowatts"], "1000", POWER),
    u!(["Pa", "pascal", "pascals"], "1", PRESSURE),
    u!(["kPa"], "1000", PRESSURE),
    u!(["bar"], "100000", PRESSURE),
    u!(["atm"], "101325", PRESSURE),
    // psi = lbf / in^2 = 4.4482216152605 N / 0.00064516 m^2
    u!(["psi"], "44482216152605/6451600000", PRESSURE),
    u!(["Hz", "hertz"], "1", FREQ),
    u!(["kHz"], "1000", FREQ),
    u!(["MHz"], "1000000", FREQ),
    u!(["V", "volt", "volts"], "1", VOLTAGE),
    u!(["mV"], "1/1000", VOLTAGE),
    u!(["kV"], "1000", VOLTAGE),
    u!(["C", "coulomb", "coulombs"], "1", CHARGE),
];

/// Named derived units a pure-SI compound result may be shown as.
const NAMED_DERIVED: &[(&str, Dim)] = &[
    ("N", FORCE),
    ("J", ENERGY),
    ("W", POWER),
    ("Pa", PRESSURE),
    ("V", VOLTAGE),
];

/// A resolved unit: exact SI factor, dimension, canonical symbol.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub factor: BigRational,
    pub dim: Dim,
    pub symbol: &'static str,
}

/// Look a unit name up (case-sensitive: "mA" is not "MA").
pub(crate) fn lookup(name: &str) -> Option<Unit> {
    let row = TABLE.iter().find(|r| r.names.contains(&name))?;
    let factor = BigRational::from_str(row.factor)
        .unwrap_or_else(|_| BigRational::from_integer(BigInt::from(1)));
    Some(Unit {
        factor,
        dim: row.dim,
        symbol: row.names.first().copied().unwrap_or("?"),
    })
}

/// The named derived unit (N, J, W, Pa, V) with exactly this dimension, if any.
pub(crate) fn named_derived(dim: &Dim) -> Option<&'static str> {
    NAMED_DERIVED
        .iter()
        .find(|(_, d)| d == dim)
        .map(|(name, _)| *name)
}

/// Affine temperature scales (only bare conversions are supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    Celsius,
    Fahrenheit,
}

impl Scale {
    pub(crate) fn lookup(name: &str) -> Option<Scale> {
        match name {
            "°C" | "degC" | "celsius" | "Celsius" => Some(Scale::Celsius),
            "°F" | "degF" | "fahrenheit" | "Fahrenheit" => Some(Scale::Fahrenheit),
            _ => None,
        }
    }

    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Scale::Celsius => "°C",
            Scale::Fahrenheit => "°F",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_factor_parses_and_is_positive() {
        for row in TABLE {
            let f = BigRational::from_str(row.factor).expect(row.factor);
            assert!(f > BigRational::from_integer(0.into()), "{}", row.factor);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for row in TABLE {
            for n in row.names {
                assert!(seen.insert(*n), "duplicate unit name {n}");
                assert!(crate::parser::FUNCTIONS.iter().all(|f| f != n) || *n == "min");
            }
        }
    }

    #[test]
    fn dimension_names() {
        assert_eq!(FORCE.name(), "mass·length/time²");
        assert_eq!(SPEED.name(), "length/time");
        let atoms: Vec<(String, i32)> = PRESSURE
            .si_atoms()
            .into_iter()
            .map(|(s, e)| (s.to_string(), e))
            .collect();
        assert_eq!(fraction_text(&atoms), "kg/(m*s^2)");
        assert_eq!(NONE.name(), "dimensionless");
    }
}
