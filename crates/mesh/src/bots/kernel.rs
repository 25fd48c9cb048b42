//! The kernel bot: one brain step (and measurement when asked) through the
//! cortex's think pipeline with the deterministic hash planner, so the
//! step is policy-checked, recorded and replayable like any think. A
//! session may be named (`params.session`); the answer is the state after
//! the step. Not cacheable: the same query steps the kernel again.

use super::{only_params, str_param, Artifact, Bot, BotContext, BotError, BotInfo, Verification};
use crate::task::TaskSpec;
use capsule_cortex::{Cortex, CortexError, SessionName, ThinkRequest};
use std::sync::Arc;

/// What the kernel bot is, for routing and classification.
pub const INFO: BotInfo = BotInfo {
    domain: "kernel",
    description: "The agent's simulated quantum brain state (the kernel): take a step, measure it, report its entropy, purity and measured state.",
    exemplars: &[
        "step the brain",
        "measure the kernel state",
        "take a measurement of the brain state",
        "advance the kernel one step",
        "what is the entropy of the brain now",
        "collapse the state and report the outcome",
        "run a kernel step on session research",
        "report the purity of the density matrix",
    ],
    keywords: &[
        "kernel", "brain", "entropy", "purity", "density", "quantum", "collapse",
        "measure", "measurement", "qubit", "workspace",
    ],
    case_sensitive: false,
    semantic_reuse: false,
    cacheable: false,
};

pub struct KernelBot {
    info: &'static BotInfo,
    cortex: Arc<Cortex>,
}

impl KernelBot {
    pub fn new(cortex: Arc<Cortex>) -> Self {
        KernelBot {
            info: &INFO,
            cortex,
        }
    }
}

/// Does the query ask for a measurement?
fn asks_measure(query: &str) -> bool {
    ["measure", "collapse", "observe"]
        .iter()
        .any(|w| query.contains(w))
}

impl Bot for KernelBot {
    fn describe(&self) -> &BotInfo {
        self.info
    }

    fn run(&self, spec: &TaskSpec, ctx: &BotContext) -> Result<Artifact, BotError> {
        only_params(spec, &["measure", "session"])?;
        let measure = match spec.params.get("measure") {
            None => asks_measure(&spec.query),
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => {
                return Err(BotError(format!(
                    "params.measure: expected true or false, got {other}"
                )))
            }
        };
        let session = str_param(spec, "session")?
            .map(|s| {
                serde_json::from_value::<SessionName>(serde_json::json!(s))
                    .map_err(|e| BotError(format!("params.session: {e}")))
            })
            .transpose()?;
        let req = ThinkRequest {
            text: spec.query.clone(),
            measure: Some(measure),
            lane: Some(ctx.lane),
            planner: Some("hash".into()),
            session,
            ..ThinkRequest::default()
        };
        let reply = self
            .cortex
            .think(&ctx.principal, &req)
            .map_err(|e| match e {
                CortexError::Held(h) => BotError(format!(
                    "the brain step was held for approval {} ({})",
                    h.approval_id, h.decision.explanation
                )),
                e => BotError(format!("kernel: {e}")),
            })?;
        let r = &reply.result;
        let answer = format!(
            "{} on the kernel: entropy {:.4} nats, purity {:.4}{}",
            reply.op.as_str(),
            r.entropy,
            r.purity,
            r.measured_state
                .map(|s| format!(", measured state {s}"))
                .unwrap_or_default()
        );
        Ok(Artifact {
            answer,
            data: serde_json::to_value(&reply).map_err(|e| BotError(e.to_string()))?,
            citations: vec![serde_json::json!({"ledger_seq": reply.ledger_seq})],
            verification: Verification {
                method: "kernel validity gate (trace and positivity)".into(),
                passed: Some(r.valid),
            },
            bot: "kernel".into(),
            model: None,
            label: Some("simulation: a density-matrix model, not a mind".into()),
        })
    }
}
