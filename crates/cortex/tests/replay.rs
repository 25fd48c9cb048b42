//! Replay over a real recorded session (kernel, ledger, policy engine and
//! event store in a temp dir; a hash planner and a model planner whose
//! chat model is a test double with a fixed reply), and over copies of it
//! with exactly one recorded value changed: the report names the entry
//! and the field.

use capsule_cortex::replay::{replay, Mismatch, ReplayReport};
use capsule_cortex::{
    ChatModel, ChatPrompt, Cortex, CortexConfig, HashPlanner, LlmPlanner, PlanError, ThinkRequest,
};
use capsule_kernel::{Kernel, KernelConfig};
use capsule_ledger::{AuditEntry, Ledger, LedgerConfig};
use capsule_memory::EventStore;
use capsule_models::HashEmbedder;
use capsule_policy::killswitch::KillSwitch;
use capsule_policy::{PolicyConfig, PolicyEngine, RuleSet};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

/// A chat model that always gives the same reply: the point is the
/// recorded reply, not the model.
struct FixedReply;

const REPLY: &str =
    r#"{"op": "brain.measure", "measure": true, "rationale": "The input asks for a check."}"#;

impl ChatModel for FixedReply {
    fn name(&self) -> &str {
        "fixed"
    }
    fn model_id(&self) -> String {
        "fixed-reply-v1".into()
    }
    fn complete(&self, _prompt: &ChatPrompt) -> Result<String, PlanError> {
        Ok(REPLY.into())
    }
}

fn new_ledger(dir: &Path) -> Arc<Ledger> {
    Arc::new(Ledger::create(dir, "test.local/replay", LedgerConfig::default()).unwrap())
}

fn cortex(dir: &Path) -> Cortex {
    let ledger = new_ledger(&dir.join("ledger"));
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
    let model = LlmPlanner::new(Arc::new(FixedReply), Arc::new(HashEmbedder { dims: 32 }));
    Cortex::new(CortexConfig::default(), kernel, policy, memory)
        .unwrap()
        .with_planner(Arc::new(HashPlanner))
        .with_planner(Arc::new(model))
}

fn think(text: &str) -> ThinkRequest {
    ThinkRequest {
        text: text.into(),
        ..ThinkRequest::default()
    }
}

/// The ledger entries of each kind of operation in the recorded session.
struct Session {
    ledger: Arc<Ledger>,
    hash_think: u64,
    model_think: u64,
    direct_step: u64,
}

/// A session of every kind of recorded operation: hash thinks (one with
/// the caller's measure, one with the caller's gw), a model think, a
/// direct kernel step and a reset.
fn record(dir: &Path) -> Session {
    let c = cortex(dir);
    c.record_session_start("test").unwrap();
    c.think("agent:a", &think("first thought")).unwrap();
    let hash_think = c.think("agent:a", &think("plan the migration")).unwrap();
    c.think(
        "agent:a",
        &ThinkRequest {
            measure: Some(false),
            ..think("the caller chooses")
        },
    )
    .unwrap();
    c.think(
        "agent:a",
        &ThinkRequest {
            gw: Some(vec![0.5, -0.5, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0]),
            ..think("the caller's vector")
        },
    )
    .unwrap();
    let model_think = c
        .think(
            "agent:a",
            &ThinkRequest {
                planner: Some("fixed".into()),
                ..think("check the backups")
            },
        )
        .unwrap();
    let direct_step = c
        .step(
            "agent:a",
            &[0.25, 0.25, -0.25, 0.5, 0.0, 0.1, 0.0, 0.0],
            false,
            None,
            None,
        )
        .unwrap();
    c.reset("operator:o").unwrap();
    c.think("agent:a", &think("after the reset")).unwrap();
    Session {
        ledger: c.ledger().clone(),
        hash_think: hash_think.ledger_seq,
        model_think: model_think.ledger_seq,
        direct_step: direct_step.ledger_seq,
    }
}

/// The session re-appended to a new ledger in `dir`, with `change` applied
/// to every entry (a ledger cannot be edited in place).
fn copy_with(src: &Ledger, dir: &Path, change: impl Fn(&mut AuditEntry)) -> Arc<Ledger> {
    let dst = new_ledger(dir);
    for seq in 0..src.size() {
        let mut e = src.entry(seq).unwrap();
        change(&mut e);
        assert_eq!(dst.append(e.record).unwrap().seq, seq);
    }
    dst
}

fn replay_all(ledger: &Ledger) -> ReplayReport {
    replay(ledger.size(), 0, |seq| ledger.entry(seq)).unwrap()
}

fn mismatches(report: &ReplayReport) -> Vec<&Mismatch> {
    report.mismatches().collect()
}

#[test]
fn a_recorded_session_and_its_faithful_copy_replay_without_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |_| {});
    for ledger in [&s.ledger, &copy] {
        let report = replay_all(ledger);
        assert!(report.matches(), "{:#?}", mismatches(&report));
        // 6 thinks, 1 direct step, 1 reset; 5 hash plans, 1 model reply.
        assert_eq!(report.steps.len(), 8);
        assert_eq!((report.plans_recomputed, report.model_replies), (5, 1));
    }
}

#[test]
fn a_changed_gw_value_in_a_hash_plan_is_named_by_entry_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let original = s.ledger.entry(s.hash_think).unwrap().record.meta["plan"]["gw"][3].clone();
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if e.seq == s.hash_think {
            e.record.meta["plan"]["gw"][3] = json!(0.25);
        }
    });
    let report = replay_all(&copy);
    let found = mismatches(&report);
    assert_eq!(
        found[0].to_string(),
        format!(
            "seq {}: plan.gw[3]: recorded 0.25, replayed {original}",
            s.hash_think
        )
    );
    // The replay steps under the recomputed plan, so only that entry differs.
    assert!(found.iter().all(|m| m.seq == s.hash_think), "{found:#?}");
}

#[test]
fn a_changed_state_digest_is_the_one_mismatch_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let original = s.ledger.entry(s.hash_think).unwrap().record.meta["result"]["state_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let changed = format!("{}0", &original[..original.len() - 1]);
    let changed = if changed == original {
        format!("{}1", &original[..original.len() - 1])
    } else {
        changed
    };
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if e.seq == s.hash_think {
            e.record.meta["result"]["state_digest"] = json!(changed);
        }
    });
    let report = replay_all(&copy);
    let found: Vec<String> = mismatches(&report).iter().map(|m| m.to_string()).collect();
    assert_eq!(
        found,
        [format!(
            "seq {}: result.state_digest: recorded {changed:?}, replayed {original:?}",
            s.hash_think
        )]
    );
}

#[test]
fn a_changed_rationale_in_a_model_reply_is_named_as_the_plans_rationale() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if e.seq == s.model_think {
            let reply = REPLY.replace("asks for a check", "asks for a guess");
            e.record.meta["model"]["reply"] = json!(reply);
        }
    });
    let report = replay_all(&copy);
    let found: Vec<String> = mismatches(&report).iter().map(|m| m.to_string()).collect();
    assert_eq!(
        found,
        [format!(
            "seq {}: plan.rationale: recorded \"The input asks for a check.\", replayed \"The input asks for a guess.\"",
            s.model_think
        )]
    );
}

#[test]
fn a_changed_measure_in_a_model_reply_is_named_as_the_plans_op_and_measure() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if e.seq == s.model_think {
            let reply = REPLY
                .replace("brain.measure", "brain.step")
                .replace("true", "false");
            e.record.meta["model"]["reply"] = json!(reply);
        }
    });
    let report = replay_all(&copy);
    let at: Vec<&str> = mismatches(&report)
        .iter()
        .filter(|m| m.seq == s.model_think)
        .map(|m| m.field.as_str())
        .collect();
    assert_eq!(at[..2], ["plan.op", "plan.measure"], "{at:?}");
}

#[test]
fn a_model_reply_that_no_longer_parses_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if e.seq == s.model_think {
            e.record.meta["model"]["reply"] = json!("I think you should measure.");
        }
    });
    let report = replay_all(&copy);
    let found = mismatches(&report);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (found[0].seq, found[0].field.as_str()),
        (s.model_think, "model.reply")
    );
    assert!(found[0].replayed.contains("not JSON"), "{}", found[0]);
}

#[test]
fn a_changed_gw_value_in_a_model_plan_is_caught_without_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if e.seq == s.model_think {
            let x = e.record.meta["plan"]["gw"][3].as_f64().unwrap();
            e.record.meta["plan"]["gw"][3] = json!(x + 0.25);
        }
    });
    let report = replay_all(&copy);
    let at: Vec<String> = mismatches(&report)
        .iter()
        .filter(|m| m.seq == s.model_think)
        .map(|m| m.to_string())
        .collect();
    // Not a projection (norm ≠ 1), and not the gw the decision allowed.
    assert!(
        at.iter().any(|m| m.contains("plan.gw: recorded norm")),
        "{at:#?}"
    );
    assert!(
        at.iter().any(|m| m.contains("plan.gw: recorded gw_digest")
            && m.contains(&format!("the decision at seq {}", s.model_think - 1))),
        "{at:#?}"
    );
}

#[test]
fn a_changed_rationale_of_a_direct_step_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if e.seq == s.direct_step {
            e.record.meta["plan"]["rationale"] = json!("the model said so");
        }
    });
    let report = replay_all(&copy);
    let found: Vec<String> = mismatches(&report).iter().map(|m| m.to_string()).collect();
    assert_eq!(
        found,
        [format!(
            "seq {}: plan.rationale: recorded \"the model said so\", replayed \"direct kernel step\"",
            s.direct_step
        )]
    );
}

#[test]
fn a_changed_caller_measure_is_named_at_the_hash_plan() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    // That think's caller asked for measure = false; a record that says
    // the caller left it to the planner gives another plan.
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if e.record.meta["text"] == "the caller chooses" {
            e.record.meta["caller"]["measure"] = json!(null);
        }
    });
    let seq = (0..copy.size())
        .find(|&q| copy.entry(q).unwrap().record.meta["text"] == "the caller chooses")
        .unwrap();
    let report = replay_all(&copy);
    let found = mismatches(&report);
    assert_eq!(found[0].seq, seq, "{found:#?}");
    assert!(
        found
            .iter()
            .any(|m| m.seq == seq && m.field == "plan.rationale"),
        "{found:#?}"
    );
}

#[test]
fn records_without_caller_inputs_still_replay_from_their_plans() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if let Some(meta) = e.record.meta.as_object_mut() {
            meta.remove("caller");
        }
    });
    let report = replay_all(&copy);
    assert!(report.matches(), "{:#?}", mismatches(&report));
    assert_eq!(report.plans_recomputed, 5);
}

#[test]
fn replay_from_the_middle_reports_only_what_follows_unless_earlier_entries_differ() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let report = replay(s.ledger.size(), s.model_think, |seq| s.ledger.entry(seq)).unwrap();
    assert!(report.matches());
    assert_eq!(report.steps[0].seq, s.model_think);
    assert_eq!(report.warmup, 4);
    let copy = copy_with(&s.ledger, &dir.path().join("copy"), |e| {
        if e.seq == s.hash_think {
            e.record.meta["plan"]["rationale"] = json!("changed");
        }
    });
    let report = replay(copy.size(), s.model_think, |seq| copy.entry(seq)).unwrap();
    assert!(!report.matches());
    assert_eq!(report.steps[0].seq, s.hash_think);
    assert!(report.steps[0].warmup);
}

#[test]
fn a_from_beyond_the_ledger_is_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let s = record(dir.path());
    let size = s.ledger.size();
    let err = replay(size, size + 5, |seq| s.ledger.entry(seq)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("entry {}: the ledger has {size} entries", size + 5)
    );
}
