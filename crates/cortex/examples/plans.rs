//! The local planner's raw replies to the demo's prompts (for comparing
//! model runtimes: benches/models_bench.sh prints them):
//!
//!   cargo run --release -p capsule-cortex --example plans
//!
//! One line per prompt: the prompt and SmolLM2's constrained reply, with
//! no recall (the demo's recall depends on what the demo stored first).

use capsule_cortex::llm::prompt_for;
use capsule_cortex::{ChatModel, LocalModel, PlanInput};
use capsule_models::fetch::fetch_shared;
use capsule_models::{LocalChat, SMOLLM2};

/// The texts the demo thinks about (`capsule demo`, step 3 and the local
/// planner's prompt).
const PROMPTS: [&str; 5] = [
    "Summarise the audit log for the last hour",
    "Plan the next step of the data migration",
    "Is the backup job healthy?",
    "Draft a reply to the on-call engineer",
    "Is the nightly backup healthy? Check it now.",
];

fn main() {
    let dir = fetch_shared(&SMOLLM2).expect("fetch SmolLM2");
    let chat = LocalChat::load_smollm2(&dir).expect("load SmolLM2");
    let model = LocalModel::new(chat);
    for text in PROMPTS {
        let input = PlanInput {
            text,
            gw: None,
            measure: None,
            workspace_dim: 8,
            recall: &[],
        };
        let reply = model.complete(&prompt_for(&input)).expect("plan");
        println!("{text:<46} {reply}");
    }
}
