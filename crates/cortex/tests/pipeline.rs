//! The pipeline over real parts (ledger, policy, memory on a temp dir):
//! the order of effects, what is recorded, and the undo on failure.

use capsule_cortex::{Cortex, CortexConfig, CortexError, HashPlanner, ThinkRequest};
use capsule_kernel::{Kernel, KernelConfig};
use capsule_ledger::{Ledger, LedgerConfig};
use capsule_memory::EventStore;
use capsule_policy::killswitch::KillSwitch;
use capsule_policy::{PolicyConfig, PolicyEngine, RuleSet};
use std::sync::Arc;

fn cortex(dir: &std::path::Path) -> Cortex {
    let ledger = Arc::new(
        Ledger::create(
            &dir.join("ledger"),
            "test.local/cortex",
            LedgerConfig::default(),
        )
        .unwrap(),
    );
    let kill = KillSwitch::open(&dir.join("state"), ledger.clone()).unwrap();
    let policy = Arc::new(
        PolicyEngine::new(RuleSet::defaults(), PolicyConfig::default(), kill, ledger).unwrap(),
    );
    let memory = Arc::new(EventStore::open(&dir.join("events.db")).unwrap());
    let kernel = Kernel::new(KernelConfig {
        dim: 8,
        workspace_dim: 8,
        ..KernelConfig::default()
    })
    .unwrap();
    Cortex::new(CortexConfig::default(), kernel, policy, memory)
        .unwrap()
        .with_planner(Arc::new(HashPlanner))
}

fn think(text: &str) -> ThinkRequest {
    ThinkRequest {
        text: text.into(),
        ..ThinkRequest::default()
    }
}

#[test]
fn a_think_records_its_decision_then_its_step_and_remembers_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = cortex(dir.path());
    let r = c.think("agent:a", &think("hello")).unwrap();
    assert_eq!(r.result.step, 1);
    let decision = c.ledger().entry(r.ledger_seq - 1).unwrap();
    assert_eq!(decision.record.meta["kind"], "policy.decision");
    let step = c.ledger().entry(r.ledger_seq).unwrap();
    assert_eq!(step.record.action, "think");
    assert_eq!(step.record.meta["event_id"], r.event_id);
    let event = c.memory().get(r.event_id).unwrap();
    assert_eq!(event.glyph, r.glyph);
    assert_eq!(event.body["text"], "hello");
}

#[test]
fn the_same_inputs_on_a_fresh_cortex_give_the_same_states() {
    let run = || {
        let dir = tempfile::tempdir().unwrap();
        let c = cortex(dir.path());
        (0..5)
            .map(|i| c.think("agent:a", &think(&format!("t{i}"))).unwrap().result)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_ledger_failure_after_the_step_puts_kernel_and_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = cortex(dir.path());
    c.think("agent:a", &think("first")).unwrap();
    let before = c.state().unwrap();
    let events = c.memory().count().unwrap();
    c.ledger().close().unwrap();
    let err = c.think("agent:a", &think("second")).unwrap_err();
    assert!(matches!(err, CortexError::Ledger(_)), "{err}");
    assert_eq!(c.state().unwrap(), before);
    assert_eq!(c.memory().count().unwrap(), events);
}

#[test]
fn a_critic_refusal_is_recorded_and_does_not_step() {
    let dir = tempfile::tempdir().unwrap();
    let c = cortex(dir.path());
    let mut req = think("x");
    req.gw = Some(vec![0.1; 9]);
    let CortexError::Critic {
        rejection,
        ledger_seq,
    } = c.think("agent:a", &req).unwrap_err()
    else {
        panic!("expected a critic refusal");
    };
    assert_eq!(rejection.field, "gw");
    assert_eq!(
        c.ledger().entry(ledger_seq).unwrap().record.action,
        "plan.critic"
    );
    assert_eq!(c.state().unwrap().step, 0);
}

#[test]
fn an_unknown_planner_or_empty_input_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let c = cortex(dir.path());
    let mut req = think("x");
    req.planner = Some("oracle".into());
    match c.think("agent:a", &req).unwrap_err() {
        CortexError::Invalid { field, .. } => assert_eq!(field, "planner"),
        e => panic!("{e}"),
    }
    match c.think("agent:a", &think("  ")).unwrap_err() {
        CortexError::Invalid { field, .. } => assert_eq!(field, "text"),
        e => panic!("{e}"),
    }
}

#[test]
fn a_durable_write_that_fails_after_queueing_undoes_the_step_the_event_and_the_vector() {
    use capsule_cortex::Recall;
    use capsule_memory::vector::VectorIndex;
    use capsule_models::HashEmbedder;
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(VectorIndex::open(&dir.path().join("vectors"), 32).unwrap());
    let c = cortex(dir.path()).with_recall(Recall {
        embedder: Arc::new(HashEmbedder { dims: 32 }),
        index: index.clone(),
        k: 5,
    });
    c.think("agent:a", &think("first")).unwrap();
    let before = c.state().unwrap();
    let events = c.memory().count().unwrap();
    let vectors = index.len();
    // The records queue fine; the group write then fails, as a disk would.
    c.ledger().inject_write_failure("injected: the disk failed");
    let err = c.think("agent:a", &think("second")).unwrap_err();
    assert!(matches!(err, CortexError::Ledger(_)), "{err}");
    assert!(err.to_string().contains("the disk failed"), "{err}");
    assert_eq!(c.state().unwrap(), before);
    assert_eq!(c.memory().count().unwrap(), events);
    assert_eq!(index.len(), vectors);
}
