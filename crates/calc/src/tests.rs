//! Unit and property tests for `evaluate`.

use super::*;
use std::time::{Duration, Instant};

fn ev(s: &str) -> Answer {
    evaluate(s, &Limits::default()).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ev_err(s: &str) -> CalcError {
    match evaluate(s, &Limits::default()) {
        Ok(a) => panic!("{s}: expected an error, got {a:?}"),
        Err(e) => e,
    }
}

#[test]
fn point_one_plus_point_two_is_exact() {
    let a = ev("0.1 + 0.2");
    assert_eq!(a.exact.as_deref(), Some("3/10"));
    assert_eq!(a.decimal, "0.3");
    assert!(!a.approximate);
    assert_eq!(a.unit, None);
    assert_eq!(a.dimension, "dimensionless");
    assert_eq!(a.text, "0.1 + 0.2 = 3/10 = 0.3");
}

#[test]
fn big_powers_are_exact() {
    let a = ev("2^200");
    assert_eq!(
        a.exact.as_deref(),
        Some("1606938044258990275541962092341162602522202993782792835301376")
    );
    assert!(a.approximate); // decimal is rounded to 30 digits
    assert_eq!(a.decimal, "1.60693804425899027554196209234e60");
    assert_eq!(ev("2**10").exact.as_deref(), Some("1024"));
    assert_eq!(ev("2^-2").exact.as_deref(), Some("1/4"));
    assert_eq!(ev("2^3^2").exact.as_deref(), Some("512")); // right-associative
    assert_eq!(ev("-2^2").exact.as_deref(), Some("-4"));
}

#[test]
fn simple_rationals() {
    assert_eq!(ev("(1/3)*3").exact.as_deref(), Some("1"));
    assert_eq!(ev("10/4").exact.as_deref(), Some("5/2"));
    assert_eq!(ev("10/4").decimal, "2.5");
    let third = ev("1/3");
    assert_eq!(third.decimal, "0.333333333333333333333333333333");
    assert!(third.approximate);
    assert_eq!(ev("-7/3").exact.as_deref(), Some("-7/3"));
    assert_eq!(ev("1e-3").exact.as_deref(), Some("1/1000"));
    assert_eq!(ev("1_000 + 1").exact.as_deref(), Some("1001"));
    assert_eq!(ev("7 % 3").exact.as_deref(), Some("1"));
    assert_eq!(ev("-(3 - 5)").exact.as_deref(), Some("2"));
    assert_eq!(
        ev("12345678901234567890123").exact.as_deref(),
        Some("12345678901234567890123")
    );
}

#[test]
fn factorial_and_big_product() {
    assert_eq!(
        ev("30!").exact.as_deref(),
        Some("265252859812191058636308480000000")
    );
    assert_eq!(
        ev("123456789 * 987654321 * 111111111").exact.as_deref(),
        Some("13548070110078070876373859")
    );
    assert!(ev_err("5000!").reason.contains("1000"));
    assert!(ev_err("1000!").reason.contains("bits"));
}

#[test]
fn roots_exact_and_irrational() {
    assert_eq!(ev("8^(1/3)").exact.as_deref(), Some("2"));
    assert_eq!(ev("4^(1/2)").exact.as_deref(), Some("2"));
    assert_eq!(ev("(9/4)^(1/2)").exact.as_deref(), Some("3/2"));
    assert_eq!(ev("sqrt(16/9)").exact.as_deref(), Some("4/3"));
    assert_eq!(ev("cbrt(-27)").exact.as_deref(), Some("-3"));
    assert_eq!(ev("root(32, 5)").exact.as_deref(), Some("2"));
    let s = ev("sqrt(2)");
    assert_eq!(s.exact, None);
    assert!(s.approximate);
    assert!(s.decimal.starts_with("1.41421356237309"), "{}", s.decimal);
    assert!(s.text.contains('≈'));
    // irrational stays approximate through arithmetic
    let t = ev("sqrt(2) * sqrt(2)");
    assert_eq!(t.exact, None);
    assert!(t.approximate);
    assert!(ev_err("sqrt(-1)").reason.contains("negative"));
    assert_eq!(ev_err("1 + ln(0)").position, 4);
}

#[test]
fn functions_and_constants() {
    assert_eq!(ev("log10(1000)").exact.as_deref(), Some("3"));
    assert_eq!(ev("log2(1/8)").exact.as_deref(), Some("-3"));
    assert_eq!(ev("log(81, 3)").exact.as_deref(), Some("4"));
    assert_eq!(
        ev("floor(7/2) + ceil(1/3) + round(5/2)").exact.as_deref(),
        Some("7")
    );
    assert_eq!(ev("max(1, 5/2, 2)").exact.as_deref(), Some("5/2"));
    assert_eq!(ev("abs(-3)").exact.as_deref(), Some("3"));
    assert_eq!(ev("cos(0)").exact.as_deref(), Some("1"));
    assert!(ev("pi").decimal.starts_with("3.14159265358979"));
    assert!(ev("sin(pi/2)").decimal.starts_with('1'));
    assert!(ev("exp(1)").decimal.starts_with("2.71828182845904"));
    assert!(ev_err("sin(3 m)").reason.contains("dimensionless"));
    assert!(ev_err("asin(2)").reason.contains("[-1, 1]"));
}

#[test]
fn unit_conversions() {
    let a = ev("5 km to mi");
    assert_eq!(a.exact.as_deref(), Some("78125/25146 mi")); // 5000 / 1609.344
    assert_eq!(a.unit.as_deref(), Some("mi"));
    assert_eq!(a.dimension, "length");
    assert!(a.decimal.starts_with("3.10685596118"));
    let b = ev("100 km/h to m/s");
    assert_eq!(b.exact.as_deref(), Some("250/9 m/s"));
    assert_eq!(b.dimension, "length/time");
    assert!(b.decimal.starts_with("27.777"));
    let c = ev("3 km + 200 m");
    assert_eq!(c.exact.as_deref(), Some("16/5 km"));
    assert_eq!(c.decimal, "3.2");
    assert_eq!(ev("1 in to cm").exact.as_deref(), Some("127/50 cm"));
    assert_eq!(ev("5 in in cm").exact.as_deref(), Some("127/10 cm"));
    assert_eq!(ev("254 cm in in").exact.as_deref(), Some("100 in"));
    assert_eq!(ev("1 lb -> g").exact.as_deref(), Some("45359237/100000 g"));
    assert_eq!(ev("2 kcal as J").exact.as_deref(), Some("8368 J"));
    assert_eq!(ev("1 kWh to J").exact.as_deref(), Some("3600000 J"));
    assert_eq!(ev("1 atm to kPa").exact.as_deref(), Some("4053/40 kPa"));
    assert_eq!(ev("60 km / 2 h").exact.as_deref(), Some("30 km/h"));
    assert_eq!(ev("2 m²").exact.as_deref(), Some("2 m^2"));
    assert_eq!(ev("1 L to cm^3").exact.as_deref(), Some("1000 cm^3"));
    assert_eq!(ev("3 µm + 1 μm to nm").exact.as_deref(), Some("4000 nm"));
}

#[test]
fn derived_units_and_dimensions() {
    let a = ev("5 kg * 2 m/s^2");
    assert_eq!(a.dimension, "mass·length/time²");
    assert_eq!(a.unit.as_deref(), Some("N"));
    assert_eq!(a.exact.as_deref(), Some("10 N"));
    assert_eq!(ev("sqrt(16 m^2)").exact.as_deref(), Some("4 m"));
    assert!(ev_err("sqrt(2 m)").reason.contains("divisible"));
    assert_eq!(ev("10 m / 5 m").unit, None);
    assert_eq!(ev("10 N * 2 m to kJ").exact.as_deref(), Some("1/50 kJ"));
}

#[test]
fn temperatures_are_affine() {
    assert_eq!(ev("100 °C to °F").exact.as_deref(), Some("212 °F"));
    assert_eq!(ev("-40 degF in celsius").exact.as_deref(), Some("-40 °C"));
    assert_eq!(ev("0 °C to K").exact.as_deref(), Some("5463/20 K"));
    assert_eq!(ev("300 K to °C").exact.as_deref(), Some("537/20 °C"));
    assert!(ev_err("10 °C + 5 °C").reason.contains("affine"));
}

#[test]
fn dimension_error_names_the_operator() {
    let e = ev_err("3 m + 2 s");
    assert_eq!(e.position, 4);
    assert_eq!(e.reason, "cannot add length and time");
    let e = ev_err("5 kg to m");
    assert_eq!(e.position, 8);
    assert!(
        e.reason.contains("cannot convert mass to m"),
        "{}",
        e.reason
    );
}

#[test]
fn division_by_zero_position() {
    let e = ev_err("1 + 2/0");
    assert_eq!(e.position, 5);
    assert_eq!(e.reason, "division by zero");
    assert_eq!(ev_err("what is 1/(3-3)?").position, 9);
}

#[test]
fn unknown_name_position() {
    let e = ev_err("2 + foo * 3");
    assert_eq!(e.position, 4);
    assert_eq!(e.reason, "unknown name \"foo\"");
    assert_eq!(ev_err("calculate 1 + baz").position, 14);
}

#[test]
fn natural_language_wrapper() {
    let a = ev("What is 0.1 + 0.2?");
    assert_eq!(a.expression, "0.1 + 0.2");
    assert_eq!(a.exact.as_deref(), Some("3/10"));
    assert_eq!(ev("how much is 2*3 =").exact.as_deref(), Some("6"));
    assert_eq!(ev("Convert 5 km to miles.").unit.as_deref(), Some("mi"));
    assert_eq!(ev("what's 2^10").exact.as_deref(), Some("1024"));
    assert_eq!(ev_err("   ").reason, "empty expression");
}

#[test]
fn limits_length() {
    let long = "1+".repeat(2000);
    let e = ev_err(&long);
    assert_eq!(e.position, 2048);
    assert!(e.reason.contains("longer"));
}

#[test]
fn limits_depth_is_quick_and_safe() {
    let big = Limits {
        max_len: 1_000_000,
        ..Limits::default()
    };
    let start = Instant::now();
    for s in [
        "(".repeat(100_000),
        "-".repeat(100_000),
        "2^".repeat(50_000) + "2",
        "sqrt(".repeat(50_000),
        "5 m to ".to_string() + &"(".repeat(100_000),
    ] {
        let e = evaluate(&s, &big).expect_err("depth");
        assert!(e.reason.contains("nested deeper"), "{}", e.reason);
        assert!(e.position < 1000);
        // and with default limits it is a length error
        assert!(ev_err(&s).reason.contains("longer"));
    }
    assert_eq!(ev_err(&"(".repeat(65)).position, 64);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn huge_exponent_refused_quickly() {
    let start = Instant::now();
    let e = ev_err("2^99999999");
    assert_eq!(e.position, 1);
    assert!(e.reason.contains("too large"), "{}", e.reason);
    assert!(ev_err("10^10^10").reason.contains("too large"));
    assert!(ev_err("1e99999999999").reason.contains("too large"));
    assert!(ev_err("(2^8000)*(2^8000)").reason.contains("bits"));
    assert_eq!(ev("1^99999999999999999999").exact.as_deref(), Some("1"));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn utf8_inputs_do_not_panic() {
    for s in [
        "µm",
        "²",
        "😀",
        "3 😀 4",
        "5 µm to m",
        "é+1",
        "2²",
        "√2",
        "what is ²?",
        "ſ",
        "İ",
        "1 −2",
        "3×4÷2",
        "°",
        "°C",
        "5 ° C",
        "\u{0}",
        "1e",
        ".",
        "..",
        "1..2",
        "(",
        ")",
        "",
        "what is",
        "to",
        "5 to",
        "5 in",
        "in",
        "m^",
        "m^-",
        "2^^2",
        "sqrt",
        "sqrt()",
        "min",
        "log(1,1)",
        "root(8,0)",
        "1,2",
        "5!!",
        "0^-1",
        "(-8)^(1/3)",
        "(-4)^(1/2)",
    ] {
        let _ = evaluate(s, &Limits::default());
    }
    assert_eq!(ev("2²").exact.as_deref(), Some("4"));
    assert_eq!(ev("3×4÷2").exact.as_deref(), Some("6"));
    assert_eq!(ev("(-8)^(1/3)").exact.as_deref(), Some("-2"));
    assert_eq!(ev("10 min to s").exact.as_deref(), Some("600 s"));
    assert_eq!(ev("min(3, 2)").exact.as_deref(), Some("2"));
    assert_eq!(ev("5 in").exact.as_deref(), Some("5 in"));
}

#[test]
fn error_display() {
    let e = CalcError::new(3, "boom");
    assert_eq!(e.to_string(), "at position 3: boom");
}

mod props {
    use super::super::*;
    use num_rational::BigRational;
    use proptest::prelude::*;

    const ALPHABET: &str = "0123456789.+-*/^() kmgs";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_strings_never_panic(chars in proptest::collection::vec(
            proptest::sample::select(ALPHABET.chars().collect::<Vec<_>>()), 0..80)) {
            let s: String = chars.into_iter().collect();
            let _ = evaluate(&s, &Limits::default());
        }

        #[test]
        fn add_then_subtract_is_identity(
            an in -1000i64..1000, ad in 1i64..1000,
            bn in -1000i64..1000, bd in 1i64..1000,
        ) {
            let s = format!("({an}/{ad}) + ({bn}/{bd}) - ({bn}/{bd})");
            let got = evaluate(&s, &Limits::default()).expect("valid");
            let a = BigRational::new(an.into(), ad.into());
            let want = if a.is_integer() {
                a.numer().to_string()
            } else {
                format!("{}/{}", a.numer(), a.denom())
            };
            prop_assert_eq!(got.exact, Some(want));
        }
    }
}

#[test]
fn approximations_of_huge_exact_values() {
    let a = ev("root(2^8000 + 1, 1000)");
    let x: f64 = a.decimal.parse().expect("float");
    assert!((x - 256.0).abs() < 1e-9, "{}", a.decimal);
    assert!(a.approximate);
    assert_eq!(ev("log(2^8000, 2)").exact.as_deref(), Some("8000"));
    assert_eq!(ev("log10(10^2000)").exact.as_deref(), Some("2000"));
    assert!(ev("ln(2^8000)").decimal.starts_with("5545.17744447956"));
    assert!(ev("sqrt(2^2001)").decimal.starts_with("1.5153420044"));
}

#[test]
fn approximations_beyond_f64_range_are_errors() {
    assert!(ev_err("sqrt(2^8001)").reason.contains("finite"));
    assert!(ev_err("exp(1000)").reason.contains("finite"));
}

#[test]
fn operators_spelled_as_words() {
    let lim = Limits::default();
    let exact = |q: &str| evaluate(q, &lim).unwrap().exact.unwrap();
    assert_eq!(exact("what is 2 to the power of 12"), "4096");
    assert_eq!(exact("7 divided by 2"), "7/2");
    assert_eq!(exact("3 plus 4 times 2"), "11");
    assert_eq!(exact("10 minus 3 squared"), "1");
    assert_eq!(exact("17 mod 5"), "2");
    assert_eq!(exact("2 raised to 3"), "8");
    assert_eq!(exact("6 Multiplied By 7"), "42");
    // "to" alone is still a conversion.
    assert_eq!(exact("1 km to m"), "1000 m");
    // A missing exponent is named where the input ends.
    let e = evaluate("2 to the power of", &lim).unwrap_err();
    assert_eq!(e.position, 17, "{e}");
}
