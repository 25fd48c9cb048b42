//! Medical task bot: deterministic clinical calculators.
//!
//! This module owns the "medical" bot's arithmetic: it picks a calculator
//! (from `params["calculator"]` or by keywords in the free-text query), reads
//! its inputs from `params` first and then from the query text (params win),
//! validates every input against a physiological range, computes the result
//! and returns it together with the formula, the published source and every
//! input with its unit as understood.
//!
//! **Every output is labelled [`LABEL`] ("SIMULATION ONLY — not medical
//! advice")**: the `label` field always holds it and the one-line `answer`
//! always starts with it. Nothing here is fit for clinical use.
//!
//! Formula versions used:
//! - Cockcroft–Gault 1976 creatinine clearance, total body weight, × 0.85 if female.
//! - BMI = kg / m², WHO adult categories (TRS 894, 2000).
//! - Body-surface area: Mosteller 1987, √(cm × kg / 3600).
//! - eGFR: CKD-EPI 2021 creatinine equation, race-free (Inker et al. 2021).
//! - Mean arterial pressure: DBP + (SBP − DBP) / 3.
//! - Corrected calcium: Payne 1973, Ca + 0.8 × (4.0 − albumin) in mg/dL, g/dL,
//!   or the SI form Ca + 0.02 × (40 − albumin) in mmol/L, g/L when calcium is
//!   given in mmol/L.
//! - Anion gap: Na − (Cl + HCO₃), or Na + K − (Cl + HCO₃) when K is given.
//! - QTc: Bazett 1920 (QT / √RR) and Fridericia 1920 (QT / ∛RR), RR = 60 / HR s.
//! - CHA₂DS₂-VASc: Lip et al. 2010; stroke-rate bands from the same cohort
//!   as tabulated in the ESC 2010 AF guideline.
//!
//! The query reader is a small hand-written tokenizer (no regex): numbers with
//! a unit after them ("70 kg", "1.75 m", "97 µmol/L", "60-year-old"), numbers
//! with a label before them ("age 60", "creatinine 1.1", "Na 140", "heart rate
//! 75"), "120/80" as SBP/DBP, sex words and CHA₂DS₂-VASc risk-factor words. A
//! bare number is used only when it is the only one and exactly one required
//! input is still missing.

use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// Label carried by every result and at the start of every answer line.
pub const LABEL: &str = "SIMULATION ONLY — not medical advice";

/// One input as the calculator understood it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Input {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// "params", "query", or "default" (an unmentioned CHA₂DS₂-VASc criterion).
    pub source: String,
}

/// A computed, labelled result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MedicalResult {
    pub calculator: String,
    pub formula: String,
    pub source: String,
    pub inputs: Vec<Input>,
    pub value: f64,
    pub unit: String,
    pub interpretation: Option<String>,
    pub label: String,
    pub answer: String,
}

/// A refusal naming the offending field.
#[derive(Debug, Clone, PartialEq)]
pub struct MedicalError {
    pub field: String,
    pub reason: String,
}

impl MedicalError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for MedicalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for MedicalError {}

type Res<T> = Result<T, MedicalError>;

/// One entry of the calculator table.
#[derive(Debug)]
pub struct Calculator {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// Lower-case word phrases matched against the query's words.
    pub keywords: &'static [&'static str],
    /// Parameter names read (alternatives joined by " or ").
    pub inputs: &'static [&'static str],
    source: &'static str,
    run: fn(&mut Ctx) -> Res<Outcome>,
}

static CALCULATORS: [Calculator; 10] = [
    Calculator {
        name: "cockcroft_gault",
        title: "Cockcroft–Gault creatinine clearance",
        description: "Creatinine clearance from age, weight, serum creatinine and sex (adults).",
        keywords: &[
            "cockcroft gault",
            "cockcroft",
            "creatinine clearance",
            "crcl",
        ],
        inputs: &[
            "age",
            "weight_kg or weight_lb",
            "creatinine_mg_dl or creatinine_umol_l",
            "sex",
        ],
        source: "Cockcroft DW, Gault MH. Prediction of creatinine clearance from serum creatinine. Nephron 1976;16:31–41",
        run: run_cockcroft_gault,
    },
    Calculator {
        name: "bmi",
        title: "Body-mass index",
        description: "Weight / height², with WHO adult categories.",
        keywords: &["bmi", "body mass index", "quetelet"],
        inputs: &[
            "weight_kg or weight_lb",
            "height_m or height_cm or height_in",
        ],
        source: "WHO. Obesity: preventing and managing the global epidemic. WHO Technical Report Series 894, 2000",
        run: run_bmi,
    },
    Calculator {
        name: "bsa_mosteller",
        title: "Body-surface area (Mosteller)",
        description: "√(height cm × weight kg / 3600).",
        keywords: &["bsa", "body surface area", "surface area", "mosteller"],
        inputs: &[
            "height_m or height_cm or height_in",
            "weight_kg or weight_lb",
        ],
        source: "Mosteller RD. Simplified calculation of body-surface area. N Engl J Med 1987;317:1098",
        run: run_bsa,
    },
    Calculator {
        name: "egfr_ckd_epi_2021",
        title: "eGFR (CKD-EPI 2021, race-free)",
        description: "Estimated GFR from serum creatinine, age and sex (adults).",
        keywords: &["egfr", "gfr", "ckd epi", "glomerular filtration"],
        inputs: &["age", "creatinine_mg_dl or creatinine_umol_l", "sex"],
        source: "Inker LA, Eneanya ND, Coresh J, et al. New creatinine- and cystatin C-based equations to estimate GFR without race. N Engl J Med 2021;385:1737–49",
        run: run_egfr,
    },
    Calculator {
        name: "map",
        title: "Mean arterial pressure",
        description: "DBP + (SBP − DBP) / 3.",
        keywords: &["map", "mean arterial pressure", "mean arterial"],
        inputs: &["sbp", "dbp"],
        source: "Standard approximation MAP ≈ DBP + ⅓ pulse pressure (e.g. Guyton & Hall, Textbook of Medical Physiology)",
        run: run_map,
    },
    Calculator {
        name: "corrected_calcium",
        title: "Albumin-corrected calcium (Payne)",
        description: "Total calcium corrected for serum albumin, conventional or SI units.",
        keywords: &[
            "corrected calcium",
            "adjusted calcium",
            "calcium correction",
            "payne",
        ],
        inputs: &[
            "calcium_mg_dl or calcium_mmol_l",
            "albumin_g_dl or albumin_g_l",
        ],
        source: "Payne RB, Little AJ, Williams RB, Milner JR. Interpretation of serum calcium in patients with abnormal serum proteins. BMJ 1973;4:643–6",
        run: run_corrected_calcium,
    },
    Calculator {
        name: "anion_gap",
        title: "Anion gap",
        description: "Na − (Cl + HCO₃), plus K when given.",
        keywords: &["anion gap"],
        inputs: &["na", "cl", "hco3", "k (optional)"],
        source: "Emmett M, Narins RG. Clinical use of the anion gap. Medicine (Baltimore) 1977;56:38–54",
        run: run_anion_gap,
    },
    Calculator {
        name: "qtc_bazett",
        title: "QTc (Bazett)",
        description: "QT / √RR, RR in seconds; also reports Fridericia.",
        keywords: &["qtc", "qtcb", "bazett", "corrected qt", "qt"],
        inputs: &["qt_ms", "heart_rate or rr_s or rr_ms"],
        source: "Bazett HC. An analysis of the time-relations of electrocardiograms. Heart 1920;7:353–70",
        run: run_qtc_bazett,
    },
    Calculator {
        name: "qtc_fridericia",
        title: "QTc (Fridericia)",
        description: "QT / ∛RR, RR in seconds; also reports Bazett.",
        keywords: &["qtcf", "fridericia"],
        inputs: &["qt_ms", "heart_rate or rr_s or rr_ms"],
        source: "Fridericia LS. Die Systolendauer im Elektrokardiogramm bei normalen Menschen und bei Herzkranken. Acta Med Scand 1920;53:469–86",
        run: run_qtc_fridericia,
    },
    Calculator {
        name: "cha2ds2_vasc",
        title: "CHA₂DS₂-VASc score",
        description: "Stroke-risk score in atrial fibrillation.",
        keywords: &[
            "cha2ds2 vasc",
            "cha2ds2vasc",
            "cha2ds2",
            "chads vasc",
            "chadsvasc",
            "chads2 vasc",
        ],
        inputs: &[
            "age",
            "sex",
            "chf",
            "hypertension",
            "diabetes",
            "stroke",
            "vascular",
        ],
        source: "Lip GYH, Nieuwlaat R, Pisters R, Lane DA, Crijns HJGM. Chest 2010;137:263–72",
        run: run_cha2ds2_vasc,
    },
];

/// The calculator table.
pub fn calculators() -> &'static [Calculator] {
    &CALCULATORS
}

/// Pick the calculator (`params["calculator"]` if given, else by keywords in
/// the query), read its inputs from `params` (a JSON object; numbers or
/// numeric strings) and then from the query text, validate ranges, compute.
pub fn compute(query: &str, params: &Map<String, Value>) -> Result<MedicalResult, MedicalError> {
    let (wanted, from_params) = parse_params(params)?;
    let calc = match wanted {
        Some(name) => select_named(&name)?,
        None => select_by_query(query)?,
    };
    let mut ctx = Ctx {
        params: from_params,
        query: parse_query(query),
        inputs: Vec::new(),
        notes: Vec::new(),
        loose_used: false,
    };
    let out = (calc.run)(&mut ctx)?;
    if !out.value.is_finite() {
        return Err(MedicalError::new("result", "not a finite number"));
    }
    Ok(finish(calc, ctx, out))
}

fn finish(calc: &Calculator, ctx: Ctx, out: Outcome) -> MedicalResult {
    let value = round_to(out.value, out.decimals);
    let mut formula = out.formula;
    for note in &ctx.notes {
        formula.push_str("; ");
        formula.push_str(note);
    }
    let mut answer = format!(
        "{LABEL}. {}: {value:.prec$} {}",
        calc.title,
        out.unit,
        prec = out.decimals
    );
    if let Some(i) = &out.interpretation {
        answer.push_str(" — ");
        answer.push_str(i);
    }
    MedicalResult {
        calculator: calc.name.to_string(),
        formula,
        source: calc.source.to_string(),
        inputs: ctx.inputs,
        value,
        unit: out.unit.to_string(),
        interpretation: out.interpretation,
        label: LABEL.to_string(),
        answer,
    }
}

fn round_to(v: f64, decimals: usize) -> f64 {
    let p = 10f64.powi(decimals as i32);
    (v * p).round() / p
}

/// Short display of a number (at most 3 decimals, no trailing zeros).
fn show(v: f64) -> String {
    format!("{}", round_to(v, 3))
}

// ---------------------------------------------------------------- quantities

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Q {
    Age,
    Weight,
    Height,
    Creatinine,
    Sbp,
    Dbp,
    Calcium,
    Albumin,
    Na,
    Cl,
    Hco3,
    K,
    Qt,
    HeartRate,
    Rr,
}

/// One accepted unit of a quantity: its params name, its unit, the factor to
/// the quantity's canonical (first) unit and the valid range in this unit.
struct UnitSpec {
    param: &'static str,
    unit: &'static str,
    factor: f64,
    min: f64,
    max: f64,
}

struct QSpec {
    field: &'static str,
    units: &'static [UnitSpec],
    hint: &'static str,
}

const fn u(param: &'static str, unit: &'static str, factor: f64, min: f64, max: f64) -> UnitSpec {
    UnitSpec {
        param,
        unit,
        factor,
        min,
        max,
    }
}

/// Indexed by `Q as usize` (order checked by a test).
static QUANTITIES: [QSpec; 15] = [
    QSpec {
        field: "age",
        units: &[u("age", "years", 1.0, 0.0, 120.0)],
        hint: "give params.age or e.g. \"60 year old\" / \"age 60\" in the query",
    },
    QSpec {
        field: "weight",
        units: &[
            u("weight_kg", "kg", 1.0, 0.5, 500.0),
            u("weight_lb", "lb", 0.453_592_37, 1.1, 1102.0),
        ],
        hint: "give params.weight_kg or e.g. \"70 kg\" in the query",
    },
    QSpec {
        field: "height",
        units: &[
            u("height_m", "m", 1.0, 0.3, 2.75),
            u("height_cm", "cm", 0.01, 30.0, 275.0),
            u("height_in", "in", 0.0254, 11.8, 108.3),
        ],
        hint: "give params.height_m or params.height_cm or e.g. \"1.75 m\" / \"175 cm\" in the query",
    },
    QSpec {
        field: "creatinine",
        units: &[
            u("creatinine_mg_dl", "mg/dL", 1.0, 0.1, 20.0),
            u("creatinine_umol_l", "µmol/L", 1.0 / 88.4, 8.84, 1768.0),
        ],
        hint: "give params.creatinine_mg_dl or params.creatinine_umol_l or e.g. \"creatinine 1.1 mg/dL\" in the query",
    },
    QSpec {
        field: "sbp",
        units: &[u("sbp", "mmHg", 1.0, 50.0, 300.0)],
        hint: "give params.sbp or e.g. \"120/80\" in the query",
    },
    QSpec {
        field: "dbp",
        units: &[u("dbp", "mmHg", 1.0, 20.0, 200.0)],
        hint: "give params.dbp or e.g. \"120/80\" in the query",
    },
    QSpec {
        field: "calcium",
        units: &[
            u("calcium_mg_dl", "mg/dL", 1.0, 4.0, 20.0),
            u("calcium_mmol_l", "mmol/L", 4.008, 1.0, 5.0),
        ],
        hint: "give params.calcium_mg_dl or params.calcium_mmol_l or e.g. \"calcium 8.0\" in the query",
    },
    QSpec {
        field: "albumin",
        units: &[
            u("albumin_g_dl", "g/dL", 1.0, 0.5, 6.5),
            u("albumin_g_l", "g/L", 0.1, 5.0, 65.0),
        ],
        hint: "give params.albumin_g_dl or params.albumin_g_l or e.g. \"albumin 2.5\" in the query",
    },
    QSpec {
        field: "na",
        units: &[u("na", "mmol/L", 1.0, 100.0, 200.0)],
        hint: "give params.na or e.g. \"Na 140\" in the query",
    },
    QSpec {
        field: "cl",
        units: &[u("cl", "mmol/L", 1.0, 60.0, 160.0)],
        hint: "give params.cl or e.g. \"Cl 104\" in the query",
    },
    QSpec {
        field: "hco3",
        units: &[u("hco3", "mmol/L", 1.0, 2.0, 60.0)],
        hint: "give params.hco3 or e.g. \"HCO3 24\" in the query",
    },
    QSpec {
        field: "k",
        units: &[u("k", "mmol/L", 1.0, 1.0, 10.0)],
        hint: "give params.k or e.g. \"K 4.0\" in the query",
    },
    QSpec {
        field: "qt",
        units: &[u("qt_ms", "ms", 1.0, 200.0, 800.0)],
        hint: "give params.qt_ms or e.g. \"QT 400 ms\" in the query",
    },
    QSpec {
        field: "heart_rate",
        units: &[u("heart_rate", "bpm", 1.0, 20.0, 300.0)],
        hint: "give params.heart_rate (or rr_s) or e.g. \"heart rate 75\" / \"RR 0.8 s\" in the query",
    },
    QSpec {
        field: "rr",
        units: &[
            u("rr_s", "s", 1.0, 0.2, 3.0),
            u("rr_ms", "ms", 0.001, 200.0, 3000.0),
        ],
        hint: "give params.rr_s or e.g. \"RR 0.8 s\" in the query",
    },
];

const ALL_Q: [Q; 15] = [
    Q::Age,
    Q::Weight,
    Q::Height,
    Q::Creatinine,
    Q::Sbp,
    Q::Dbp,
    Q::Calcium,
    Q::Albumin,
    Q::Na,
    Q::Cl,
    Q::Hco3,
    Q::K,
    Q::Qt,
    Q::HeartRate,
    Q::Rr,
];

impl Q {
    fn spec(self) -> &'static QSpec {
        &QUANTITIES[self as usize]
    }
}

/// A number read for a quantity, in one of its units.
#[derive(Debug, Clone, Copy)]
struct Reading {
    q: Q,
    unit: usize,
    value: f64,
    source: &'static str,
}

impl Reading {
    fn new(q: Q, unit: usize, value: f64, source: &'static str) -> Self {
        Self {
            q,
            unit,
            value,
            source,
        }
    }
    fn unit_spec(&self) -> &'static UnitSpec {
        let units = self.q.spec().units;
        &units[self.unit.min(units.len() - 1)]
    }
    fn canonical(&self) -> f64 {
        self.value * self.unit_spec().factor
    }
    fn validate(&self) -> Res<()> {
        let us = self.unit_spec();
        if !self.value.is_finite() {
            return Err(MedicalError::new(us.param, "not a finite number"));
        }
        if self.value < us.min || self.value > us.max {
            return Err(MedicalError::new(
                us.param,
                format!(
                    "{} is outside {}–{} {}",
                    show(self.value),
                    show(us.min),
                    show(us.max),
                    us.unit
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sex {
    Female,
    Male,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Chf,
    Hypertension,
    Diabetes,
    Stroke,
    Vascular,
}

const ALL_FLAGS: [Flag; 5] = [
    Flag::Chf,
    Flag::Hypertension,
    Flag::Diabetes,
    Flag::Stroke,
    Flag::Vascular,
];

impl Flag {
    fn name(self) -> &'static str {
        match self {
            Flag::Chf => "chf",
            Flag::Hypertension => "hypertension",
            Flag::Diabetes => "diabetes",
            Flag::Stroke => "stroke",
            Flag::Vascular => "vascular",
        }
    }
    fn points(self) -> u32 {
        if self == Flag::Stroke {
            2
        } else {
            1
        }
    }
    /// Word phrases in the query that assert this criterion.
    fn phrases(self) -> &'static [&'static str] {
        match self {
            Flag::Chf => &["chf", "hf", "heart failure", "congestive", "lv dysfunction"],
            Flag::Hypertension => &["hypertension", "hypertensive", "htn", "high blood pressure"],
            Flag::Diabetes => &["diabetes", "diabetic", "dm", "t2dm", "t1dm"],
            Flag::Stroke => &[
                "stroke",
                "tia",
                "cva",
                "thromboembolism",
                "thromboembolic",
                "embolism",
                "transient ischemic attack",
                "transient ischaemic attack",
            ],
            Flag::Vascular => &[
                "vascular",
                "mi",
                "myocardial infarction",
                "heart attack",
                "pad",
                "peripheral artery disease",
                "peripheral arterial disease",
                "aortic plaque",
            ],
        }
    }
}

/// Everything read from one source (params or query).
#[derive(Debug, Default)]
struct Facts {
    nums: Vec<Reading>,
    sex: Vec<Sex>,
    flags: Vec<(Flag, bool)>,
    /// Bare numbers with neither label nor unit (query only).
    loose: Vec<f64>,
}

// ---------------------------------------------------------------- params

const PARAM_EXTRAS: [&str; 2] = ["calculator", "sex"];

fn known_params() -> String {
    let mut names: Vec<&str> = PARAM_EXTRAS.to_vec();
    for q in ALL_Q {
        names.extend(q.spec().units.iter().map(|u| u.param));
    }
    names.extend(ALL_FLAGS.iter().map(|f| f.name()));
    names.join(", ")
}

fn find_param(key: &str) -> Option<(Q, usize)> {
    ALL_Q.iter().find_map(|&q| {
        let pos = q.spec().units.iter().position(|u| u.param == key)?;
        Some((q, pos))
    })
}

fn parse_params(params: &Map<String, Value>) -> Res<(Option<String>, Facts)> {
    let mut calc = None;
    let mut facts = Facts::default();
    for (key, val) in params {
        if key == "calculator" {
            let s = val
                .as_str()
                .ok_or_else(|| MedicalError::new(key, "expected a string naming a calculator"))?;
            calc = Some(s.to_string());
        } else if key == "sex" {
            facts.sex.push(param_sex(val)?);
        } else if let Some(flag) = ALL_FLAGS.iter().find(|f| f.name() == key) {
            facts.flags.push((*flag, param_bool(key, val)?));
        } else if let Some((q, unit)) = find_param(key) {
            if let Some(prev) = facts.nums.iter().find(|r| r.q == q) {
                return Err(MedicalError::new(
                    key,
                    format!(
                        "conflicts with params.{}; give only one",
                        prev.unit_spec().param
                    ),
                ));
            }
            facts
                .nums
                .push(Reading::new(q, unit, param_number(key, val)?, "params"));
        } else {
            return Err(MedicalError::new(
                key,
                format!("unknown parameter; expected one of {}", known_params()),
            ));
        }
    }
    Ok((calc, facts))
}

fn param_number(key: &str, val: &Value) -> Res<f64> {
    let n = match val {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let n = n.ok_or_else(|| MedicalError::new(key, format!("expected a number, got {val}")))?;
    if n.is_finite() {
        Ok(n)
    } else {
        Err(MedicalError::new(key, "not a finite number"))
    }
}

fn param_bool(key: &str, val: &Value) -> Res<bool> {
    let b = match val {
        Value::Bool(b) => Some(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => Some(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Some(false),
        Value::String(s) => match s.trim().to_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => Some(true),
            "false" | "no" | "n" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    b.ok_or_else(|| MedicalError::new(key, format!("expected true or false, got {val}")))
}

fn param_sex(val: &Value) -> Res<Sex> {
    let s = val.as_str().map(|s| s.trim().to_lowercase());
    match s.as_deref() {
        Some("female" | "f" | "woman") => Ok(Sex::Female),
        Some("male" | "m" | "man") => Ok(Sex::Male),
        _ => Err(MedicalError::new(
            "sex",
            format!("expected \"female\" or \"male\", got {val}"),
        )),
    }
}

// ---------------------------------------------------------------- selection

fn select_named(name: &str) -> Res<&'static Calculator> {
    let lower = name.trim().to_lowercase();
    if let Some(c) = CALCULATORS.iter().find(|c| c.name == lower) {
        return Ok(c);
    }
    best_keyword_match(&words_of(&tokenize(&lower))).ok_or_else(|| {
        MedicalError::new(
            "calculator",
            format!(
                "unknown calculator {name:?}; expected one of {}",
                calculator_names()
            ),
        )
    })
}

fn select_by_query(query: &str) -> Res<&'static Calculator> {
    best_keyword_match(&words_of(&tokenize(query))).ok_or_else(|| {
        MedicalError::new(
            "calculator",
            format!(
                "could not tell which calculator from the query; give params.calculator (one of {}) or name it, e.g. \"BMI for 70 kg, 1.75 m\"",
                calculator_names()
            ),
        )
    })
}

fn calculator_names() -> String {
    CALCULATORS
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The calculator whose longest matching keyword is longest; ties go to the
/// keyword that appears first.
fn best_keyword_match(words: &[&str]) -> Option<&'static Calculator> {
    let mut best: Option<(usize, usize, &'static Calculator)> = None;
    for calc in &CALCULATORS {
        for kw in calc.keywords {
            if let Some(pos) = find_phrase(words, kw) {
                let better = match best {
                    None => true,
                    Some((len, p, _)) => kw.len() > len || (kw.len() == len && pos < p),
                };
                if better {
                    best = Some((kw.len(), pos, calc));
                }
            }
        }
    }
    best.map(|(_, _, c)| c)
}

/// Position of the first occurrence of a space-separated phrase in `words`.
fn find_phrase(words: &[&str], phrase: &str) -> Option<usize> {
    let parts: Vec<&str> = phrase.split(' ').collect();
    if parts.is_empty() || parts.len() > words.len() {
        return None;
    }
    (0..=words.len() - parts.len()).find(|&i| words[i..i + parts.len()] == parts[..])
}

// ---------------------------------------------------------------- query text

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Word(String),
    /// "120/80"
    Pair(f64, f64),
}

#[derive(Debug)]
enum Raw {
    Num(f64),
    Word(String),
    Slash,
}

/// Lower-case, map subscript/superscript digits and micro signs to ASCII.
fn normalize(text: &str) -> Vec<char> {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            '₀'..='₉' => char::from(b'0' + (c as u32 - '₀' as u32) as u8),
            '²' => '2',
            '³' => '3',
            'µ' | 'μ' => 'u',
            _ => c,
        })
        .collect()
}

fn raw_tokens(text: &str) -> Vec<Raw> {
    let chars = normalize(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next_digit = chars.get(i + 1).is_some_and(|d| d.is_ascii_digit());
        let minus = c == '-'
            && next_digit
            && (i == 0 || chars[i - 1].is_whitespace() || "(:=,;".contains(chars[i - 1]));
        if c.is_ascii_digit() || ((c == '.' || minus) && next_digit) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            if let Ok(v) = s.trim_end_matches('.').parse::<f64>() {
                out.push(Raw::Num(v));
            }
        } else if c.is_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_alphanumeric() {
                i += 1;
            }
            out.push(Raw::Word(chars[start..i].iter().collect()));
        } else {
            if c == '/' {
                out.push(Raw::Slash);
            }
            i += 1;
        }
    }
    out
}

/// Tokens with "a/b" merged: numbers into a pair, words into one unit word.
fn tokenize(text: &str) -> Vec<Tok> {
    let raw = raw_tokens(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        match (&raw[i], raw.get(i + 1), raw.get(i + 2)) {
            (Raw::Num(a), Some(Raw::Slash), Some(Raw::Num(b))) => {
                out.push(Tok::Pair(*a, *b));
                i += 3;
            }
            (Raw::Word(a), Some(Raw::Slash), Some(Raw::Word(b))) => {
                out.push(Tok::Word(format!("{a}/{b}")));
                i += 3;
            }
            (Raw::Slash, Some(Raw::Word(b)), _) => {
                out.push(Tok::Word(format!("/{b}")));
                i += 2;
            }
            (Raw::Slash, _, _) => i += 1,
            (Raw::Num(v), _, _) => {
                out.push(Tok::Num(*v));
                i += 1;
            }
            (Raw::Word(w), _, _) => {
                out.push(Tok::Word(w.clone()));
                i += 1;
            }
        }
    }
    out
}

fn words_of(toks: &[Tok]) -> Vec<&str> {
    toks.iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w.as_str()),
            _ => None,
        })
        .collect()
}

fn word_at(toks: &[Tok], i: usize) -> Option<&str> {
    match toks.get(i) {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    }
}

/// A word naming a quantity when it stands before a number.
fn label_quantity(word: &str) -> Option<Q> {
    Some(match word {
        "age" | "aged" => Q::Age,
        "weight" | "weighs" | "weighing" | "weighed" | "wt" => Q::Weight,
        "height" | "ht" => Q::Height,
        "creatinine" | "creat" | "scr" | "cr" => Q::Creatinine,
        "calcium" | "ca" => Q::Calcium,
        "albumin" | "alb" => Q::Albumin,
        "na" | "sodium" => Q::Na,
        "cl" | "chloride" => Q::Cl,
        "hco3" | "bicarbonate" | "bicarb" | "co2" | "tco2" => Q::Hco3,
        "k" | "potassium" => Q::K,
        "qt" => Q::Qt,
        "rate" | "hr" | "pulse" => Q::HeartRate,
        "rr" => Q::Rr,
        "sbp" | "systolic" => Q::Sbp,
        "dbp" | "diastolic" => Q::Dbp,
        _ => return None,
    })
}

const FILLERS: [&str; 14] = [
    "of",
    "is",
    "was",
    "at",
    "about",
    "approximately",
    "around",
    "interval",
    "level",
    "value",
    "serum",
    "plasma",
    "measured",
    "the",
];

/// The quantity labelled just before token `i` (skipping filler words).
fn label_before(toks: &[Tok], i: usize) -> Option<Q> {
    let mut j = i;
    while j > 0 && i - j < 4 {
        j -= 1;
        let w = word_at(toks, j)?;
        if let Some(q) = label_quantity(w) {
            return Some(q);
        }
        if !FILLERS.contains(&w) {
            return None;
        }
    }
    None
}

fn is_electrolyte(q: Q) -> bool {
    matches!(q, Q::Na | Q::Cl | Q::Hco3 | Q::K)
}

/// Readings for a number `v` with optional label and unit word after it.
/// Empty means the number was not understood.
fn classify(v: f64, label: Option<Q>, unit: Option<&str>) -> Vec<(Q, usize)> {
    let by_unit: Option<Vec<(Q, usize)>> = unit.and_then(|w| {
        Some(match w {
            "kg" | "kgs" | "kilogram" | "kilograms" => vec![(Q::Weight, 0)],
            "lb" | "lbs" | "pound" | "pounds" => vec![(Q::Weight, 1)],
            "m" | "meter" | "meters" | "metre" | "metres" if v <= 3.0 => vec![(Q::Height, 0)],
            "cm" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => {
                vec![(Q::Height, 1)]
            }
            "inch" | "inches" => vec![(Q::Height, 2)],
            "year" | "years" | "yr" | "yrs" | "yo" | "y" | "y/o" => vec![(Q::Age, 0)],
            "umol/l" | "micromol/l" => vec![(Q::Creatinine, 1)],
            "mg/dl" => match label {
                Some(Q::Calcium) => vec![(Q::Calcium, 0)],
                Some(Q::Creatinine) => vec![(Q::Creatinine, 0)],
                _ => vec![(Q::Creatinine, 0), (Q::Calcium, 0)],
            },
            "mmol/l" | "meq/l" => match label {
                Some(q) if is_electrolyte(q) => vec![(q, 0)],
                Some(Q::Calcium) | None if w == "mmol/l" => vec![(Q::Calcium, 1)],
                _ => return None,
            },
            "g/dl" => vec![(Q::Albumin, 0)],
            "g/l" => vec![(Q::Albumin, 1)],
            "ms" | "msec" => match label {
                Some(Q::Rr) => vec![(Q::Rr, 1)],
                _ => vec![(Q::Qt, 0)],
            },
            "s" | "sec" | "secs" | "second" | "seconds" => match label {
                Some(Q::Qt) => return None,
                _ => vec![(Q::Rr, 0)],
            },
            "bpm" | "/min" | "beats" => vec![(Q::HeartRate, 0)],
            "mmhg" => match label {
                Some(q @ (Q::Sbp | Q::Dbp)) => vec![(q, 0)],
                _ => return None,
            },
            _ => return None,
        })
    });
    if let Some(found) = by_unit {
        return found;
    }
    let Some(q) = label else {
        return Vec::new();
    };
    let unit = match q {
        Q::Height if v > 3.0 => 1,
        Q::Creatinine if v > 20.0 => 1,
        Q::Calcium if v < 4.0 => 1,
        Q::Albumin if v > 6.5 => 1,
        Q::Rr if v > 3.0 => 1,
        _ => 0,
    };
    vec![(q, unit)]
}

fn sex_word(word: &str) -> Option<Sex> {
    match word {
        "female" | "woman" | "women" | "f" | "lady" | "girl" | "she" | "her" => Some(Sex::Female),
        "male" | "man" | "men" | "m" | "boy" | "gentleman" | "he" | "his" | "him" => {
            Some(Sex::Male)
        }
        _ => None,
    }
}

/// Words whose following number is part of a name ("CKD-EPI 2021").
const NAME_WORDS: [&str; 3] = ["epi", "ckd", "version"];

fn parse_query(query: &str) -> Facts {
    let toks = tokenize(query);
    let mut facts = Facts::default();
    for (i, tok) in toks.iter().enumerate() {
        match tok {
            Tok::Pair(a, b) => {
                facts.nums.push(Reading::new(Q::Sbp, 0, *a, "query"));
                facts.nums.push(Reading::new(Q::Dbp, 0, *b, "query"));
            }
            Tok::Num(v) => {
                let unit = word_at(&toks, i + 1);
                let found = classify(*v, label_before(&toks, i), unit);
                let after_name =
                    i > 0 && word_at(&toks, i - 1).is_some_and(|w| NAME_WORDS.contains(&w));
                if found.is_empty() && !after_name {
                    facts.loose.push(*v);
                }
                for (q, unit) in found {
                    facts.nums.push(Reading::new(q, unit, *v, "query"));
                }
            }
            Tok::Word(w) => {
                let metre = w == "m" && i > 0 && matches!(toks[i - 1], Tok::Num(v) if v <= 3.0);
                if let Some(s) = sex_word(w).filter(|_| !metre) {
                    facts.sex.push(s);
                }
            }
        }
    }
    facts.flags = query_flags(&words_of(&toks));
    facts
}

const NEGATIONS: [&str; 6] = ["no", "not", "without", "denies", "non", "never"];
const HISTORY_WORDS: [&str; 6] = ["history", "of", "prior", "previous", "known", "h/o"];

/// "no diabetes", "no history of stroke", "non-diabetic"; "no CHF, diabetes"
/// negates only CHF.
fn negated_at(words: &[&str], pos: usize) -> bool {
    words[..pos]
        .iter()
        .rev()
        .take(4)
        .find(|w| !HISTORY_WORDS.contains(w))
        .is_some_and(|w| NEGATIONS.contains(w))
}

fn query_flags(words: &[&str]) -> Vec<(Flag, bool)> {
    let mut out = Vec::new();
    for flag in ALL_FLAGS {
        for phrase in flag.phrases() {
            let Some(pos) = find_phrase(words, phrase) else {
                continue;
            };
            let n = phrase.split(' ').count();
            if flag == Flag::Stroke && words.get(pos + n) == Some(&"risk") {
                continue;
            }
            out.push((flag, !negated_at(words, pos)));
        }
    }
    out
}

// ---------------------------------------------------------------- context

struct Ctx {
    params: Facts,
    query: Facts,
    inputs: Vec<Input>,
    notes: Vec<String>,
    loose_used: bool,
}

struct Outcome {
    value: f64,
    decimals: usize,
    unit: &'static str,
    formula: String,
    interpretation: Option<String>,
}

impl Outcome {
    fn new(value: f64, decimals: usize, unit: &'static str, formula: impl Into<String>) -> Self {
        Self {
            value,
            decimals,
            unit,
            formula: formula.into(),
            interpretation: None,
        }
    }
    fn with(mut self, interpretation: impl Into<String>) -> Self {
        self.interpretation = Some(interpretation.into());
        self
    }
}

impl Ctx {
    /// The reading for `q`: params first, then the query (several differing
    /// query values are refused).
    fn peek(&self, q: Q) -> Res<Option<Reading>> {
        if let Some(r) = self.params.nums.iter().find(|r| r.q == q) {
            return Ok(Some(*r));
        }
        let mut found = self.query.nums.iter().filter(|r| r.q == q);
        let Some(first) = found.next().copied() else {
            return Ok(None);
        };
        if let Some(other) = found.find(|r| (r.canonical() - first.canonical()).abs() > 1e-9) {
            let field = q.spec().field;
            return Err(MedicalError::new(
                field,
                format!(
                    "the query gives several values ({} {} and {} {}); give params.{} to choose",
                    show(first.value),
                    first.unit_spec().unit,
                    show(other.value),
                    other.unit_spec().unit,
                    first.unit_spec().param
                ),
            ));
        }
        Ok(Some(first))
    }

    fn record(&mut self, r: &Reading) -> Res<()> {
        r.validate()?;
        let us = r.unit_spec();
        self.inputs.push(Input {
            name: us.param.to_string(),
            value: r.value,
            unit: us.unit.to_string(),
            source: r.source.to_string(),
        });
        Ok(())
    }

    /// An optional input, validated and recorded when present.
    fn opt(&mut self, q: Q) -> Res<Option<Reading>> {
        let r = self.peek(q)?;
        if let Some(r) = &r {
            self.record(r)?;
        }
        Ok(r)
    }

    /// A required input; a single bare number in the query fills the first
    /// missing one when it fits that quantity's range.
    fn get(&mut self, q: Q) -> Res<Reading> {
        if let Some(r) = self.opt(q)? {
            return Ok(r);
        }
        let spec = q.spec();
        if let [v] = self.query.loose[..] {
            let r = Reading::new(q, 0, v, "query");
            if !self.loose_used && r.validate().is_ok() {
                self.loose_used = true;
                self.record(&r)?;
                return Ok(r);
            }
        }
        Err(MedicalError::new(
            spec.field,
            format!("missing; {}", spec.hint),
        ))
    }

    /// A required input in its canonical unit; a conversion is noted in the formula.
    fn value(&mut self, q: Q) -> Res<f64> {
        let r = self.get(q)?;
        if r.unit != 0 {
            let canon = &q.spec().units[0];
            let us = r.unit_spec();
            self.notes.push(format!(
                "{} {} {} taken as {} {}",
                q.spec().field,
                show(r.value),
                us.unit,
                show(r.canonical()),
                canon.unit
            ));
        }
        Ok(r.canonical())
    }

    fn adult_age(&mut self) -> Res<f64> {
        let age = self.value(Q::Age)?;
        if age < 18.0 {
            return Err(MedicalError::new(
                "age",
                format!("{} is outside 18–120 years (adult formula)", show(age)),
            ));
        }
        Ok(age)
    }

    fn sex(&mut self) -> Res<Sex> {
        let (sex, source) = if let Some(s) = self.params.sex.first() {
            (*s, "params")
        } else {
            let mut found = self.query.sex.iter();
            let Some(first) = found.next().copied() else {
                return Err(MedicalError::new(
                    "sex",
                    "missing; give params.sex (\"female\" or \"male\") or e.g. \"female\" / \"man\" in the query",
                ));
            };
            if found.any(|s| *s != first) {
                return Err(MedicalError::new(
                    "sex",
                    "the query mentions both female and male; give params.sex",
                ));
            }
            (first, "query")
        };
        let female = sex == Sex::Female;
        self.inputs.push(Input {
            name: "sex".into(),
            value: if female { 1.0 } else { 0.0 },
            unit: if female { "female" } else { "male" }.into(),
            source: source.into(),
        });
        Ok(sex)
    }

    fn flag(&mut self, flag: Flag) -> bool {
        // params: the one value given; query: any positive mention counts
        let find = |f: &Facts| {
            let mut hits = f.flags.iter().filter(|(g, _)| *g == flag).map(|(_, b)| *b);
            let first = hits.next()?;
            Some(first || hits.any(|b| b))
        };
        let (on, source) = match (find(&self.params), find(&self.query)) {
            (Some(b), _) => (b, "params"),
            (None, Some(b)) => (b, "query"),
            (None, None) => (false, "default"),
        };
        self.inputs.push(Input {
            name: flag.name().into(),
            value: if on { 1.0 } else { 0.0 },
            unit: "yes=1/no=0".into(),
            source: source.into(),
        });
        on
    }
}

// ---------------------------------------------------------------- formulas

fn cockcroft_gault(age: f64, weight_kg: f64, scr_mg_dl: f64, female: bool) -> f64 {
    let base = (140.0 - age) * weight_kg / (72.0 * scr_mg_dl);
    if female {
        base * 0.85
    } else {
        base
    }
}

fn bmi(weight_kg: f64, height_m: f64) -> f64 {
    weight_kg / (height_m * height_m)
}

fn bsa_mosteller(height_cm: f64, weight_kg: f64) -> f64 {
    (height_cm * weight_kg / 3600.0).sqrt()
}

fn ckd_epi_2021(scr_mg_dl: f64, age: f64, female: bool) -> f64 {
    let (kappa, alpha, sex_factor) = if female {
        (0.7, -0.241, 1.012)
    } else {
        (0.9, -0.302, 1.0)
    };
    let ratio = scr_mg_dl / kappa;
    142.0
        * ratio.min(1.0).powf(alpha)
        * ratio.max(1.0).powf(-1.200)
        * 0.9938f64.powf(age)
        * sex_factor
}

fn mean_arterial_pressure(sbp: f64, dbp: f64) -> f64 {
    dbp + (sbp - dbp) / 3.0
}

fn corrected_calcium_conventional(ca_mg_dl: f64, albumin_g_dl: f64) -> f64 {
    ca_mg_dl + 0.8 * (4.0 - albumin_g_dl)
}

fn corrected_calcium_si(ca_mmol_l: f64, albumin_g_l: f64) -> f64 {
    ca_mmol_l + 0.02 * (40.0 - albumin_g_l)
}

fn anion_gap(na: f64, cl: f64, hco3: f64, k: Option<f64>) -> f64 {
    na + k.unwrap_or(0.0) - (cl + hco3)
}

fn qtc_bazett(qt_ms: f64, rr_s: f64) -> f64 {
    qt_ms / rr_s.sqrt()
}

fn qtc_fridericia(qt_ms: f64, rr_s: f64) -> f64 {
    qt_ms / rr_s.cbrt()
}

/// `flags` in [`ALL_FLAGS`] order: CHF, hypertension, diabetes, stroke, vascular.
fn cha2ds2_vasc(age: f64, female: bool, flags: [bool; 5]) -> u32 {
    let age_points = if age >= 75.0 {
        2
    } else if age >= 65.0 {
        1
    } else {
        0
    };
    let flag_points: u32 = ALL_FLAGS
        .iter()
        .zip(flags)
        .filter(|(_, on)| *on)
        .map(|(f, _)| f.points())
        .sum();
    age_points + u32::from(female) + flag_points
}

// ---------------------------------------------------------------- runners

fn run_cockcroft_gault(c: &mut Ctx) -> Res<Outcome> {
    let age = c.adult_age()?;
    let weight = c.value(Q::Weight)?;
    let scr = c.value(Q::Creatinine)?;
    let female = c.sex()? == Sex::Female;
    Ok(Outcome::new(
        cockcroft_gault(age, weight, scr, female),
        1,
        "mL/min",
        "CrCl = (140 − age) × weight kg / (72 × SCr mg/dL) × 0.85 if female (µmol/L ÷ 88.4 = mg/dL)",
    ))
}

fn run_bmi(c: &mut Ctx) -> Res<Outcome> {
    let weight = c.value(Q::Weight)?;
    let height = c.value(Q::Height)?;
    let value = bmi(weight, height);
    Ok(Outcome::new(value, 2, "kg/m²", "BMI = weight kg / (height m)²").with(who_category(value)))
}

fn who_category(bmi: f64) -> &'static str {
    match bmi {
        b if b < 18.5 => "underweight (WHO, < 18.5)",
        b if b < 25.0 => "normal weight (WHO, 18.5–24.9)",
        b if b < 30.0 => "pre-obesity / overweight (WHO, 25.0–29.9)",
        b if b < 35.0 => "obesity class I (WHO, 30.0–34.9)",
        b if b < 40.0 => "obesity class II (WHO, 35.0–39.9)",
        _ => "obesity class III (WHO, ≥ 40)",
    }
}

fn run_bsa(c: &mut Ctx) -> Res<Outcome> {
    let height_m = c.value(Q::Height)?;
    let weight = c.value(Q::Weight)?;
    Ok(Outcome::new(
        bsa_mosteller(height_m * 100.0, weight),
        2,
        "m²",
        "BSA = √(height cm × weight kg / 3600)",
    ))
}

fn run_egfr(c: &mut Ctx) -> Res<Outcome> {
    let age = c.adult_age()?;
    let scr = c.value(Q::Creatinine)?;
    let female = c.sex()? == Sex::Female;
    let value = ckd_epi_2021(scr, age, female);
    Ok(Outcome::new(
        value,
        1,
        "mL/min/1.73 m²",
        "eGFR = 142 × min(SCr/κ, 1)^α × max(SCr/κ, 1)^−1.200 × 0.9938^age × 1.012 if female; κ = 0.7 (F) / 0.9 (M), α = −0.241 (F) / −0.302 (M)",
    )
    .with(gfr_category(value)))
}

fn gfr_category(egfr: f64) -> &'static str {
    match egfr {
        g if g >= 90.0 => "KDIGO G1 (≥ 90)",
        g if g >= 60.0 => "KDIGO G2 (60–89)",
        g if g >= 45.0 => "KDIGO G3a (45–59)",
        g if g >= 30.0 => "KDIGO G3b (30–44)",
        g if g >= 15.0 => "KDIGO G4 (15–29)",
        _ => "KDIGO G5 (< 15)",
    }
}

fn run_map(c: &mut Ctx) -> Res<Outcome> {
    let sbp = c.value(Q::Sbp)?;
    let dbp = c.value(Q::Dbp)?;
    if dbp >= sbp {
        return Err(MedicalError::new(
            "dbp",
            format!("{} must be below sbp {}", show(dbp), show(sbp)),
        ));
    }
    Ok(Outcome::new(
        mean_arterial_pressure(sbp, dbp),
        1,
        "mmHg",
        "MAP = DBP + (SBP − DBP) / 3",
    ))
}

fn run_corrected_calcium(c: &mut Ctx) -> Res<Outcome> {
    let ca = c.get(Q::Calcium)?;
    let alb = c.get(Q::Albumin)?;
    let alb_g_dl = alb.canonical();
    let si = ca.unit_spec().param == "calcium_mmol_l";
    if si != (alb.unit_spec().param == "albumin_g_l") {
        let (v, unit) = if si {
            (alb_g_dl * 10.0, "g/L")
        } else {
            (alb_g_dl, "g/dL")
        };
        c.notes.push(format!(
            "albumin {} {} taken as {} {unit}",
            show(alb.value),
            alb.unit_spec().unit,
            show(v)
        ));
    }
    if si {
        Ok(Outcome::new(
            corrected_calcium_si(ca.value, alb_g_dl * 10.0),
            2,
            "mmol/L",
            "SI units used: corrected Ca (mmol/L) = Ca + 0.02 × (40 − albumin g/L)",
        )
        .with("SI formula (mmol/L, g/L) used"))
    } else {
        Ok(Outcome::new(
            corrected_calcium_conventional(ca.value, alb_g_dl),
            2,
            "mg/dL",
            "Conventional units used: corrected Ca (mg/dL) = Ca + 0.8 × (4.0 − albumin g/dL)",
        )
        .with("conventional formula (mg/dL, g/dL) used"))
    }
}

fn run_anion_gap(c: &mut Ctx) -> Res<Outcome> {
    let na = c.value(Q::Na)?;
    let cl = c.value(Q::Cl)?;
    let hco3 = c.value(Q::Hco3)?;
    let k = c.opt(Q::K)?.map(|r| r.canonical());
    let (formula, note) = match k {
        Some(_) => (
            "AG = (Na + K) − (Cl + HCO3)",
            "potassium included; compare with the local reference range (often about 10–20 mmol/L with K)",
        ),
        None => (
            "AG = Na − (Cl + HCO3)",
            "compare with the local reference range (often about 8–16 mmol/L without K)",
        ),
    };
    Ok(Outcome::new(anion_gap(na, cl, hco3, k), 1, "mmol/L", formula).with(note))
}

/// RR in seconds: RR or heart rate, params before query, RR before heart rate.
fn rr_seconds(c: &mut Ctx) -> Res<f64> {
    let rr = c.peek(Q::Rr)?;
    let hr = c.peek(Q::HeartRate)?;
    let use_rr = match (rr, hr) {
        (Some(r), Some(h)) => r.source == "params" || h.source != "params",
        (Some(_), None) => true,
        _ => false,
    };
    if use_rr {
        c.value(Q::Rr)
    } else {
        Ok(60.0 / c.value(Q::HeartRate)?)
    }
}

fn run_qtc_bazett(c: &mut Ctx) -> Res<Outcome> {
    run_qtc(c, true)
}

fn run_qtc_fridericia(c: &mut Ctx) -> Res<Outcome> {
    run_qtc(c, false)
}

fn run_qtc(c: &mut Ctx, bazett: bool) -> Res<Outcome> {
    let qt = c.value(Q::Qt)?;
    let rr = rr_seconds(c)?;
    let (b, f) = (qtc_bazett(qt, rr), qtc_fridericia(qt, rr));
    let (value, formula, other) = if bazett {
        (b, "QTcB = QT / √RR", format!("Fridericia QTcF = {f:.0} ms"))
    } else {
        (f, "QTcF = QT / ∛RR", format!("Bazett QTcB = {b:.0} ms"))
    };
    Ok(
        Outcome::new(value, 0, "ms", format!("{formula}; RR = 60 / heart rate s"))
            .with(format!("{other}; RR = {} s", show(rr))),
    )
}

/// Adjusted stroke rate (%/year) by score, Lip 2010 cohort as tabulated in ESC 2010.
const STROKE_RATE: [f64; 10] = [0.0, 1.3, 2.2, 3.2, 4.0, 6.7, 9.8, 9.6, 6.7, 15.2];

fn run_cha2ds2_vasc(c: &mut Ctx) -> Res<Outcome> {
    let age = c.value(Q::Age)?;
    let female = c.sex()? == Sex::Female;
    let flags = ALL_FLAGS.map(|f| c.flag(f));
    let score = cha2ds2_vasc(age, female, flags);
    let band = match score {
        0 => "low",
        1 => "intermediate",
        _ => "high",
    };
    let rate = STROKE_RATE[(score as usize).min(STROKE_RATE.len() - 1)];
    Ok(Outcome::new(
        f64::from(score),
        0,
        "points",
        "CHF 1 + hypertension 1 + age ≥ 75 2 (65–74 1) + diabetes 1 + stroke/TIA/thromboembolism 2 + vascular disease 1 + female 1",
    )
    .with(format!(
        "{band} risk; adjusted stroke rate ≈ {rate}%/year (Lip 2010 cohort, ESC 2010 table); unmentioned criteria count as absent"
    )))
}

// ---------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn q(query: &str) -> MedicalResult {
        compute(query, &Map::new()).unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    fn err(query: &str, params: Value) -> MedicalError {
        match compute(query, &p(params)) {
            Ok(r) => panic!("{query}: expected an error, got {}", r.answer),
            Err(e) => e,
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn quantity_table_is_in_enum_order() {
        for q in ALL_Q {
            let first = q.spec().units[0].param;
            assert_eq!(find_param(first), Some((q, 0)), "{q:?}");
        }
    }

    #[test]
    fn cockcroft_gault_worked_example() {
        // (140 − 60) × 65 / (72 × 1.1) × 0.85 = 5200 / 79.2 × 0.85 = 65.657 × 0.85 = 55.808
        assert!(close(cockcroft_gault(60.0, 65.0, 1.1, true), 55.808, 1e-3));
        let r = q("creatinine clearance for a 60 year old female, 65 kg, creatinine 1.1 mg/dL");
        assert_eq!(r.calculator, "cockcroft_gault");
        assert_eq!(r.value, 55.8);
        assert_eq!(r.unit, "mL/min");
        assert!(r.answer.starts_with(LABEL));
        assert!(r.answer.contains("55.8 mL/min"));
        assert!(r.source.contains("Nephron 1976"));
    }

    #[test]
    fn cockcroft_gault_umol_conversion() {
        // 88.4 µmol/L = 1.0 mg/dL; male 40 y, 72 kg: (140 − 40) × 72 / (72 × 1.0) = 100
        let r = q("Cockcroft-Gault 40 year old man 72 kg creatinine 88.4 µmol/L");
        assert!(close(r.value, 100.0, 1e-9));
        assert!(r
            .inputs
            .iter()
            .any(|i| i.name == "creatinine_umol_l" && i.unit == "µmol/L"));
        assert!(r.formula.contains("taken as 1 mg/dL"));
        let r2 = q("crcl 40 yo male 72 kg creatinine 88.4 umol/l");
        assert_eq!(r2.value, r.value);
        let r3 = compute(
            "",
            &p(json!({"calculator":"cockcroft_gault","age":40,"weight_kg":72,"creatinine_umol_l":"88.4","sex":"male"})),
        )
        .unwrap();
        assert_eq!(r3.value, 100.0);
    }

    #[test]
    fn bmi_worked_example_and_query_values_matter() {
        // 70 / 1.75² = 70 / 3.0625 = 22.857; 80 / 3.0625 = 26.122
        assert!(close(bmi(70.0, 1.75), 22.857, 1e-3));
        let a = q("BMI for 70 kg, 1.75 m");
        let b = q("BMI for 80 kg, 1.75 m");
        assert_eq!((a.value, b.value), (22.86, 26.12));
        assert_eq!(a.unit, "kg/m²");
        assert!(a
            .interpretation
            .as_deref()
            .unwrap()
            .starts_with("normal weight"));
        assert!(b
            .interpretation
            .as_deref()
            .unwrap()
            .starts_with("pre-obesity"));
        // cm conversion
        let c = q("body mass index 70kg 175 cm");
        assert_eq!(c.value, 22.86);
        assert!(c.formula.contains("height 175 cm taken as 1.75 m"));
    }

    #[test]
    fn bsa_mosteller_worked_example() {
        // √(180 × 80 / 3600) = √4 = 2.00
        let r = q("BSA 180 cm 80 kg");
        assert_eq!(r.calculator, "bsa_mosteller");
        assert!(close(r.value, 2.0, 1e-12));
        assert_eq!(r.unit, "m²");
    }

    #[test]
    fn egfr_ckd_epi_2021_worked_examples() {
        // Man, 50 y, SCr 1.2: κ 0.9, α −0.302; SCr/κ = 1.3333 → min term 1;
        // max term 1.3333^−1.2 = e^(−1.2 × 0.28768) = 0.70805; 0.9938^50 = e^(50 × −0.0062193) = 0.73275;
        // 142 × 0.70805 × 0.73275 = 73.67 → 73.7
        assert!(close(ckd_epi_2021(1.2, 50.0, false), 73.67, 0.01));
        let r = q("eGFR for a 50-year-old man with creatinine 1.2");
        assert_eq!(r.calculator, "egfr_ckd_epi_2021");
        assert_eq!(r.value, 73.7);
        assert_eq!(r.unit, "mL/min/1.73 m²");
        // Woman, 60 y, SCr 0.6: κ 0.7, α −0.241; SCr/κ = 0.85714 → min term 0.85714^−0.241
        // = e^(0.241 × 0.15415) = 1.03785; max term 1; 0.9938^60 = e^(−0.37316) = 0.68855;
        // 142 × 1.03785 × 0.68855 × 1.012 = 102.69 → 102.7
        assert!(close(ckd_epi_2021(0.6, 60.0, true), 102.69, 0.01));
        assert_eq!(
            q("egfr 60 year old woman, creatinine 0.6 mg/dl").value,
            102.7
        );
    }

    #[test]
    fn map_worked_example() {
        // 80 + (120 − 80) / 3 = 93.33
        let r = q("MAP 120/80");
        assert_eq!(r.calculator, "map");
        assert_eq!(r.value, 93.3);
        assert!(close(mean_arterial_pressure(120.0, 80.0), 93.333, 1e-3));
    }

    #[test]
    fn corrected_calcium_both_unit_systems() {
        // 8.0 + 0.8 × (4.0 − 2.5) = 9.2 mg/dL
        let r = q("corrected calcium 8.0 albumin 2.5");
        assert!(close(r.value, 9.2, 1e-9));
        assert_eq!(r.unit, "mg/dL");
        assert!(r.formula.starts_with("Conventional"));
        // 2.0 + 0.02 × (40 − 25) = 2.30 mmol/L
        let s = q("corrected calcium 2.0 mmol/L albumin 25 g/L");
        assert!(close(s.value, 2.3, 1e-9));
        let mixed = q("corrected calcium 2.0 mmol/L albumin 2.5 g/dL");
        assert!(close(mixed.value, 2.3, 1e-9));
        assert!(mixed.formula.contains("albumin 2.5 g/dL taken as 25 g/L"));
        assert_eq!(s.unit, "mmol/L");
        assert!(s.formula.starts_with("SI"));
    }

    #[test]
    fn anion_gap_with_and_without_potassium() {
        // 140 − (104 + 24) = 12; with K 4: 16
        let r = q("anion gap Na 140 Cl 104 HCO3 24");
        assert_eq!(r.value, 12.0);
        assert_eq!(r.inputs.len(), 3);
        let k = q("anion gap Na 140 Cl 104 HCO3 24 K 4");
        assert_eq!(k.value, 16.0);
        assert!(k.formula.contains("+ K"));
    }

    #[test]
    fn qtc_bazett_and_fridericia() {
        // HR 75 → RR 0.8 s; Bazett 400 / √0.8 = 447.21; Fridericia 400 / 0.8^(1/3) = 430.89
        assert!(close(qtc_bazett(400.0, 0.8), 447.214, 1e-3));
        assert!(close(qtc_fridericia(400.0, 0.8), 430.887, 1e-3));
        let b = q("QTc with QT 400 ms and heart rate 75");
        assert_eq!((b.calculator.as_str(), b.value), ("qtc_bazett", 447.0));
        assert!(b
            .interpretation
            .as_deref()
            .unwrap()
            .contains("QTcF = 431 ms"));
        let f = q("QTc Fridericia QT 400 ms RR 0.8 s");
        assert_eq!((f.calculator.as_str(), f.value), ("qtc_fridericia", 431.0));
        let pf = compute(
            "",
            &p(json!({"calculator":"qtc_fridericia","qt_ms":400,"heart_rate":75})),
        )
        .unwrap();
        assert_eq!(pf.value, 431.0);
    }

    #[test]
    fn cha2ds2_vasc_examples() {
        // 72 y (65–74: 1) + female 1 + hypertension 1 + diabetes 1 = 4
        let r = q("CHA2DS2-VASc for a 72 year old woman with hypertension and diabetes");
        assert_eq!(r.calculator, "cha2ds2_vasc");
        assert_eq!(r.value, 4.0);
        assert_eq!(r.unit, "points");
        assert!(r.interpretation.as_deref().unwrap().contains("4%/year"));
        // 78 y (2) + male 0 + prior stroke 2 + CHF 1 = 5; "no diabetes" is negated
        let s = q("CHA₂DS₂-VASc age 78 man, prior stroke, heart failure, no diabetes");
        assert_eq!(s.value, 5.0);
        // params booleans: 80 y 2 + female 1 + all five flags (1+1+1+2+1) = 9
        let all = json!({"calculator":"cha2ds2_vasc","age":80,"sex":"female","chf":true,"hypertension":"yes",
            "diabetes":1,"stroke":true,"vascular":true});
        assert_eq!(compute("", &p(all)).unwrap().value, 9.0);
        assert_eq!(cha2ds2_vasc(50.0, false, [false; 5]), 0);
        // negation reaches only its own item; any positive mention counts
        let t = q(
            "cha2ds2-vasc 60 year old man, no CHF, diabetes, no history of stroke but prior TIA",
        );
        assert_eq!(t.value, 3.0);
        // "stroke risk" is not a prior stroke
        assert_eq!(q("CHA2DS2-VASc stroke risk 60 year old male").value, 0.0);
    }

    #[test]
    fn out_of_range_refusals() {
        let cases = [
            (
                "BMI 700 kg 1.75 m",
                "weight_kg",
                "700 is outside 0.5–500 kg",
            ),
            ("BMI 70 kg 3.5 m", "height", "missing"),
            ("BMI 70 kg 400 cm", "height_cm", "400 is outside 30–275 cm"),
            (
                "BMI 70 kg height 2.9",
                "height_m",
                "2.9 is outside 0.3–2.75 m",
            ),
            (
                "crcl 130 year old female 60 kg creatinine 1",
                "age",
                "130 is outside 0–120 years",
            ),
            (
                "crcl 15 year old female 60 kg creatinine 1",
                "age",
                "outside 18–120 years (adult formula)",
            ),
            (
                "egfr 50 year old man creatinine 25 mg/dl",
                "creatinine_mg_dl",
                "outside 0.1–20 mg/dL",
            ),
            ("MAP 400/80", "sbp", "400 is outside 50–300 mmHg"),
            ("MAP 120/10", "dbp", "10 is outside 20–200 mmHg"),
            ("MAP 120/130", "dbp", "130 must be below sbp 120"),
            (
                "corrected calcium 30 albumin 3",
                "calcium_mg_dl",
                "outside 4–20 mg/dL",
            ),
            (
                "corrected calcium 9 albumin 0.2",
                "albumin_g_dl",
                "outside 0.5–6.5 g/dL",
            ),
            ("anion gap Na 90 Cl 104 HCO3 24", "na", "outside 100–200"),
            ("anion gap Na 140 Cl 200 HCO3 24", "cl", "outside 60–160"),
            ("anion gap Na 140 Cl 104 HCO3 70", "hco3", "outside 2–60"),
            ("anion gap Na 140 Cl 104 HCO3 24 K 12", "k", "outside 1–10"),
            (
                "QTc QT 1000 ms heart rate 70",
                "qt_ms",
                "outside 200–800 ms",
            ),
            (
                "QTc QT 400 ms heart rate 400",
                "heart_rate",
                "outside 20–300 bpm",
            ),
            ("QTc QT 400 ms RR 5 s", "rr_s", "outside 0.2–3 s"),
        ];
        for (query, field, reason) in cases {
            let e = err(query, json!({}));
            assert_eq!(e.field, field, "{query}: {e}");
            assert!(e.reason.contains(reason), "{query}: {e}");
        }
        let e = err("BMI", json!({"weight_kg": "NaN", "height_m": 1.7}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("weight_kg", "not a finite number")
        );
        let e = err("BMI", json!({"weight_kg": "inf", "height_m": 1.7}));
        assert_eq!(e.field, "weight_kg");
        assert_eq!(
            err("BMI", json!({"weight_kg": 700, "height_m": 1.7})).to_string(),
            "weight_kg: 700 is outside 0.5–500 kg"
        );
    }

    #[test]
    fn params_win_over_query() {
        let r = compute("BMI for 70 kg, 1.75 m", &p(json!({"weight_kg": 80}))).unwrap();
        assert_eq!(r.value, 26.12);
        let w = r.inputs.iter().find(|i| i.name == "weight_kg").unwrap();
        assert_eq!((w.value, w.source.as_str()), (80.0, "params"));
        let h = r.inputs.iter().find(|i| i.name == "height_m").unwrap();
        assert_eq!(h.source, "query");
        // params.calculator wins over query keywords; sex from params wins too
        let e = compute(
            "BMI 60 year old man",
            &p(json!({"calculator":"cockcroft_gault","weight_kg":65,"creatinine_mg_dl":1.1,"sex":"female"})),
        )
        .unwrap();
        assert_eq!(e.value, 55.8);
    }

    #[test]
    fn missing_inputs_name_the_field() {
        let e = err("BMI for 1.75 m", json!({}));
        assert_eq!(
            e.to_string(),
            "weight: missing; give params.weight_kg or e.g. \"70 kg\" in the query"
        );
        assert_eq!(err("eGFR creatinine 1.0 age 50", json!({})).field, "sex");
        assert_eq!(err("anion gap Na 140 Cl 104", json!({})).field, "hco3");
        assert_eq!(err("QTc QT 400 ms", json!({})).field, "heart_rate");
        assert_eq!(err("what is my risk", json!({})).field, "calculator");
        // two bare numbers are not guessed
        assert_eq!(err("BMI 70 1.75", json!({})).field, "weight");
    }

    #[test]
    fn single_bare_number_fills_the_one_gap() {
        assert_eq!(q("BMI 70 kg 1.75").value, 22.86);
        assert_eq!(q("crcl 60F 65 kg creatinine 1.1").value, 55.8);
    }

    #[test]
    fn bad_params_are_refused() {
        let e = err("BMI 70 kg 1.75 m", json!({"wieght": 3}));
        assert_eq!(e.field, "wieght");
        assert!(e.reason.starts_with("unknown parameter"));
        assert_eq!(err("", json!({"calculator": "nope"})).field, "calculator");
        assert_eq!(err("BMI", json!({"weight_kg": [1]})).field, "weight_kg");
        // Either of the two is the one to drop (map order depends on
        // serde_json's features in the build).
        let both = err("BMI", json!({"height_m": 1.7, "height_cm": 170}));
        assert!(
            ["height_m", "height_cm"].contains(&both.field.as_str()),
            "{both}"
        );
        assert_eq!(err("egfr", json!({"sex": "x"})).field, "sex");
        assert_eq!(err("chadsvasc", json!({"chf": "maybe"})).field, "chf");
        assert_eq!(
            err("BMI weight -70 kg 1.7 m", json!({})).to_string(),
            "weight_kg: -70 is outside 0.5–500 kg"
        );
        assert_eq!(err("BMI 70 kg 80 kg 1.7 m", json!({})).field, "weight");
        assert_eq!(
            err("egfr 50 year old man woman creatinine 1", json!({})).field,
            "sex"
        );
    }

    #[test]
    fn every_answer_is_labelled() {
        let queries = [
            "creatinine clearance for a 60 year old female, 65 kg, creatinine 1.1 mg/dL",
            "BMI for 70 kg, 1.75 m",
            "BSA 180 cm 80 kg",
            "eGFR for a 50-year-old man with creatinine 1.2",
            "MAP 120/80",
            "corrected calcium 8.0 albumin 2.5",
            "anion gap Na 140 Cl 104 HCO3 24",
            "QTc with QT 400 ms and heart rate 75",
            "QTcF with QT 400 ms and heart rate 75",
            "CHA2DS2-VASc for a 72 year old woman with hypertension and diabetes",
        ];
        let mut seen = Vec::new();
        for query in queries {
            let r = q(query);
            assert!(r.answer.starts_with(LABEL), "{}", r.answer);
            assert_eq!(r.label, LABEL);
            assert!(r.answer.contains(&r.unit));
            assert!(!r.inputs.is_empty() && !r.formula.is_empty() && !r.source.is_empty());
            seen.push(r.calculator);
        }
        let mut names: Vec<&str> = calculators().iter().map(|c| c.name).collect();
        names.sort_unstable();
        seen.sort();
        assert_eq!(seen, names, "every calculator reachable from a query");
    }

    #[test]
    fn calculator_table_is_consistent() {
        for c in calculators() {
            assert_eq!(select_named(c.name).unwrap().name, c.name);
            for kw in c.keywords {
                let words: Vec<&str> = kw.split(' ').collect();
                assert_eq!(best_keyword_match(&words).unwrap().name, c.name, "{kw}");
            }
        }
        assert_eq!(select_named("QTc").unwrap().name, "qtc_bazett");
    }

    #[test]
    fn result_serializes() {
        let v = serde_json::to_value(q("MAP 120/80")).unwrap();
        assert_eq!(v["label"], LABEL);
        assert_eq!(v["inputs"][0]["name"], "sbp");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const KEYS: [&str; 12] = [
            "calculator",
            "age",
            "weight_kg",
            "height_cm",
            "creatinine_umol_l",
            "sex",
            "sbp",
            "dbp",
            "qt_ms",
            "heart_rate",
            "chf",
            "bogus",
        ];

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<f64>().prop_map(|f| json!(f)),
                any::<i64>().prop_map(|i| json!(i)),
                any::<bool>().prop_map(Value::Bool),
                "\\PC{0,12}".prop_map(Value::String),
                prop::sample::select(calculators().iter().map(|c| c.name).collect::<Vec<_>>())
                    .prop_map(|s| json!(s)),
                Just(Value::Null),
            ]
        }

        proptest! {
            #[test]
            fn compute_never_panics(
                query in "\\PC{0,80}",
                words in prop::collection::vec(
                    prop::sample::select(vec!["bmi", "egfr", "qtc", "map", "kg", "m", "cm", "/", "mg/dl",
                        "µmol/l", "age", "female", "man", "120/80", "na", "k", "1.5", "70", "0", ".", "1e999",
                        "cha2ds2-vasc", "no", "stroke", "anion gap", "corrected calcium", "rr", "ms", "bsa"]),
                    0..14),
                params in prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), value(), 0..6),
            ) {
                let map: Map<String, Value> = params.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                let joined = words.join(" ");
                for text in [query.as_str(), joined.as_str()] {
                    if let Ok(r) = compute(text, &map) {
                        prop_assert!(r.answer.starts_with(LABEL));
                        prop_assert!(r.value.is_finite());
                    }
                }
            }
        }
    }
}
