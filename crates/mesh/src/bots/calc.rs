//! The calc bot: exact arithmetic and units by `capsule-calc`. The query
//! (or `params.expression`) is the expression; the answer gives the exact
//! value and a decimal. Its verification evaluates the expression as
//! understood a second time and checks the same value comes out.

use super::{only_params, str_param, Artifact, Bot, BotContext, BotError, BotInfo, Verification};
use crate::task::TaskSpec;
use capsule_calc::{evaluate, Limits};

/// What the calc bot is, for routing and classification.
pub const INFO: BotInfo = BotInfo {
    domain: "calc",
    description: "Exact arithmetic and unit conversion: evaluate a numeric expression with fractions, decimals, big integers, powers, roots, functions and physical units.",
    exemplars: &[
        "what is 0.1 + 0.2",
        "calculate 2^100",
        "compute (3/4 + 5/6) * 12",
        "sqrt(144) + 3^4",
        "convert 5 km to miles",
        "100 km/h to m/s",
        "how much is 17 * 23 - 4",
        "evaluate 1/3 + 1/6",
        "what is 15% of 80",
        "sin(pi/6) + cos(0)",
        "3 kg * 9.81 m/s^2 in N",
        "12 inches in cm",
    ],
    keywords: &[
        "calculate", "compute", "evaluate", "convert", "sqrt", "plus", "minus",
        "times", "divided", "sum", "product", "km", "miles", "meters", "kg",
        "+", "*", "/", "^", "=",
    ],
    case_sensitive: true,
    semantic_reuse: false,
    cacheable: true,
};

pub struct CalcBot {
    info: &'static BotInfo,
    limits: Limits,
}

impl Default for CalcBot {
    fn default() -> Self {
        CalcBot {
            info: &INFO,
            limits: Limits::default(),
        }
    }
}

impl Bot for CalcBot {
    fn describe(&self) -> &BotInfo {
        self.info
    }

    fn run(&self, spec: &TaskSpec, _ctx: &BotContext) -> Result<Artifact, BotError> {
        only_params(spec, &["expression"])?;
        let input = str_param(spec, "expression")?.unwrap_or(&spec.query);
        let answer = evaluate(input, &self.limits).map_err(|e| BotError(e.to_string()))?;
        let again = evaluate(&answer.expression, &self.limits).ok();
        let passed = again
            .as_ref()
            .is_some_and(|a| a.exact == answer.exact && a.decimal == answer.decimal);
        Ok(Artifact {
            answer: answer.text.clone(),
            data: serde_json::to_value(&answer).map_err(|e| BotError(e.to_string()))?,
            citations: Vec::new(),
            verification: Verification {
                method: "exact re-evaluation of the expression as understood".into(),
                passed: Some(passed),
            },
            bot: "calc".into(),
            model: None,
            label: None,
        })
    }
}
