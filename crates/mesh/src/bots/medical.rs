//! The medical bot: clinical calculators (`clinical.rs`) over parameters
//! given in `params` or read from the query text. Every output is labelled
//! "SIMULATION ONLY — not medical advice", names its formula and source
//! and the inputs as understood; inputs outside physiological ranges are
//! refused with the field and the range.

use super::clinical::{compute, LABEL};
use super::{Artifact, Bot, BotContext, BotError, BotInfo, Verification};
use crate::task::TaskSpec;

/// What the medical bot is, for routing and classification.
pub const INFO: BotInfo = BotInfo {
    domain: "medical",
    description: "Clinical calculators: BMI, body-surface area, creatinine clearance (Cockcroft-Gault), eGFR (CKD-EPI 2021), mean arterial pressure, corrected calcium, anion gap, QTc, CHA2DS2-VASc score, from a patient's numbers.",
    exemplars: &[
        "BMI for 70 kg and 1.75 m",
        "creatinine clearance for a 60 year old woman, 65 kg, creatinine 1.1",
        "eGFR for a 50-year-old man with serum creatinine 1.2 mg/dL",
        "body surface area for 180 cm and 80 kg",
        "mean arterial pressure for blood pressure 120/80",
        "corrected calcium with calcium 8.0 and albumin 2.5",
        "anion gap with sodium 140, chloride 104, bicarbonate 24",
        "QTc for QT 400 ms at heart rate 75",
        "CHA2DS2-VASc score for a 72 year old woman with hypertension",
        "what is my body mass index if I weigh 80 kg at 180 cm",
    ],
    keywords: &[
        "bmi", "body mass", "creatinine", "clearance", "egfr", "gfr", "bsa",
        "surface area", "arterial", "blood pressure", "calcium", "albumin",
        "anion", "qtc", "qt", "cha2ds2", "vasc", "patient", "mg/dl", "mmhg",
    ],
    case_sensitive: true,
    semantic_reuse: false,
    cacheable: true,
};

pub struct MedicalBot {
    info: &'static BotInfo,
}

impl Default for MedicalBot {
    fn default() -> Self {
        MedicalBot { info: &INFO }
    }
}

impl Bot for MedicalBot {
    fn describe(&self) -> &BotInfo {
        self.info
    }

    fn run(&self, spec: &TaskSpec, _ctx: &BotContext) -> Result<Artifact, BotError> {
        let r = compute(&spec.query, &spec.params).map_err(|e| BotError(e.to_string()))?;
        Ok(Artifact {
            answer: r.answer.clone(),
            citations: vec![serde_json::json!({"source": r.source, "formula": r.formula})],
            data: serde_json::to_value(&r).map_err(|e| BotError(e.to_string()))?,
            verification: Verification {
                method: "every input within its physiological range; result finite".into(),
                passed: Some(r.value.is_finite()),
            },
            bot: "medical".into(),
            model: None,
            label: Some(LABEL.into()),
        })
    }
}
