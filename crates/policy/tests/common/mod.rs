//! Helpers shared by the policy tests.

use capsule_policy::{Affect, DecisionRequest, Lane};

/// A request by `agent:alice` in the prod lane at its action's level, with affect
/// comfortably above every threshold and no arguments.
pub fn request(action: &str, resource: &str) -> DecisionRequest {
    DecisionRequest {
        principal: "agent:alice".into(),
        action: action.into(),
        resource: resource.into(),
        lane: Lane::Prod,
        level: None,
        affect: Affect {
            confidence: Some(0.9),
            empathy: Some(0.9),
            safety: Some(0.99),
            ..Affect::default()
        },
        risk: None,
        drift: None,
        args: serde_json::json!({}),
    }
}
