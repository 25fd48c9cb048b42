//! The engine with its ledger: the kill switch by file, API and signal,
//! disarming with operator keys, approvals with quorum, voiding and
//! exactly-once release, hot reload that keeps the old set on error, and
//! shadow replay over more than 10 000 recorded decisions.

mod common;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::note::{KeySigner, NoteSigner};
use capsule_ledger::{Ledger, LedgerConfig, VerifierKey};
use capsule_policy::approvals::{approval_statement, ApprovalQueue, ApprovalRequest};
use capsule_policy::engine::{decision_record, evaluate, Circumstances};
use capsule_policy::killswitch::{disarm_statement, KillSwitch, OperatorSignature};
use capsule_policy::{
    DecisionRequest, Mode, Outcome, PolicyConfig, PolicyEngine, RuleSet, SafetyLevel,
};
use ed25519_dalek::SigningKey;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn signer(name: &str, seed: u8) -> KeySigner {
    KeySigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

fn ledger(dir: &Path) -> Arc<Ledger> {
    Arc::new(
        Ledger::create(
            &dir.join("ledger"),
            "capsule.test/policy",
            LedgerConfig::default(),
        )
        .unwrap(),
    )
}

fn step() -> DecisionRequest {
    let mut req = common::request("brain.step", "kernel:main");
    req.args = serde_json::json!({"gw": [0.1, 0.2]});
    req
}

fn engine(dir: &Path, config: PolicyConfig) -> PolicyEngine {
    let ledger = ledger(dir);
    let kill = KillSwitch::open(&dir.join("state"), ledger.clone()).unwrap();
    PolicyEngine::new(RuleSet::defaults(), config, kill, ledger).unwrap()
}

fn operator_config(ops: &[&KeySigner], quorum: u32) -> PolicyConfig {
    PolicyConfig {
        operators: ops.iter().map(|s| s.verifier().to_string()).collect(),
        disarm_quorum: quorum,
        ..PolicyConfig::default()
    }
}

fn disarm_sig(s: &KeySigner, nonce: &str) -> OperatorSignature {
    OperatorSignature {
        key: s.verifier().to_string(),
        signature: B64.encode(s.sign(disarm_statement(nonce).as_bytes())),
    }
}

/// Poll `done` every 10 ms for up to 2 s; whether it became true.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

fn entries(ledger: &Ledger) -> Vec<capsule_ledger::AuditEntry> {
    (0..ledger.size())
        .map(|i| ledger.entry(i).unwrap())
        .collect()
}

#[test]
fn arming_by_api_blocks_the_next_decision_and_disarm_needs_an_operator_quorum() {
    let tmp = tempfile::tempdir().unwrap();
    let (op1, op2, stranger) = (signer("op1", 1), signer("op2", 2), signer("x", 3));
    let config = operator_config(&[&op1, &op2], 2);
    let e = engine(tmp.path(), config.clone());
    assert!(e.decide(&step()).unwrap().outcome.allows());
    let ks = e.kill_switch().clone();
    ks.arm("operator:alice", "maintenance").unwrap();
    let d = e.decide_and_record(&step()).unwrap().0;
    assert_eq!(
        (d.outcome, d.reason.as_str(), d.autonomy_rule),
        (Outcome::Blocked, "kill_switch", Some(1))
    );
    let nonce = ks.status().unwrap().state.nonce;
    let ops = config.operator_keys().unwrap();
    // One operator is not a quorum of two; the same operator twice is still one.
    let err = ks
        .disarm(
            &[disarm_sig(&op1, &nonce), disarm_sig(&op1, &nonce)],
            &ops,
            2,
            "done",
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("needs 2 distinct operator signatures, got 1"),
        "{err}"
    );
    let err = ks
        .disarm(&[disarm_sig(&stranger, &nonce)], &ops, 1, "done")
        .unwrap_err();
    assert!(err.to_string().contains("is not an operator key"), "{err}");
    // A signature over another arming's nonce does not disarm this one.
    let err = ks
        .disarm(
            &[disarm_sig(&op1, "00"), disarm_sig(&op2, &nonce)],
            &ops,
            2,
            "done",
        )
        .unwrap_err();
    assert!(err.to_string().contains("nonce"), "{err}");
    assert!(ks.is_armed());
    ks.disarm(
        &[disarm_sig(&op1, &nonce), disarm_sig(&op2, &nonce)],
        &ops,
        2,
        "maintenance over",
    )
    .unwrap();
    assert!(e.decide(&step()).unwrap().outcome.allows());
    let log = entries(e.ledger());
    let arm = log.iter().find(|x| x.record.action == "kill.arm").unwrap();
    assert_eq!(arm.record.actor, "operator:alice");
    let blocked = log
        .iter()
        .find(|x| x.record.action == "brain.step")
        .unwrap();
    assert_eq!(blocked.record.decision, "blocked");
    let disarm = log
        .iter()
        .find(|x| x.record.action == "kill.disarm")
        .unwrap();
    assert_eq!(disarm.record.actor, "operator:op1,operator:op2");
    let status = ks.status().unwrap();
    assert!(!status.state.armed && status.state.ledger_seq == Some(disarm.seq));
}

#[test]
fn a_trigger_file_arms_within_a_tick_and_deleting_it_does_not_disarm() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(tmp.path(), PolicyConfig::default());
    let ks = e.kill_switch().clone();
    let _watch = ks.watch_trigger(Duration::from_millis(33));
    std::fs::write(ks.trigger_path(), b"stop\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(e.decide(&step()).unwrap().reason, "kill_switch");
    std::fs::remove_file(ks.trigger_path()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(ks.is_armed());
    let arm = entries(e.ledger())
        .into_iter()
        .find(|x| x.record.action == "kill.arm")
        .unwrap();
    assert!(
        arm.record.actor.starts_with("file:") && arm.record.actor.ends_with("/KILL"),
        "{}",
        arm.record.actor
    );
    // The state survives a restart of the process.
    let ks2 = KillSwitch::open(&tmp.path().join("state"), e.ledger().clone()).unwrap();
    assert!(ks2.is_armed() && ks2.status().unwrap().state.armed);
}

#[test]
fn sigusr1_arms_and_names_the_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(tmp.path(), PolicyConfig::default());
    let _listener = e.kill_switch().listen_sigusr1().unwrap();
    signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
    wait_for(|| e.kill_switch().is_armed());
    assert_eq!(e.decide(&step()).unwrap().reason, "kill_switch");
    // Decisions are refused first; the ledger entry follows within moments.
    let find_arm = || {
        entries(e.ledger())
            .into_iter()
            .find(|x| x.record.action == "kill.arm")
    };
    assert!(wait_for(|| find_arm().is_some()), "the arming is recorded");
    let arm = find_arm().unwrap();
    assert!(
        arm.record
            .actor
            .starts_with(&format!("signal:SIGUSR1 from pid {}", std::process::id())),
        "{}",
        arm.record.actor
    );
}

fn approval(args: serde_json::Value) -> ApprovalRequest {
    ApprovalRequest {
        action: "fs.write".into(),
        actor: "agent:alice".into(),
        resource: "path:/var/log/capsule/a.log".into(),
        args,
        policy_version: RuleSet::defaults().version().into(),
    }
}

/// `signer` signs approval `id` (whose digest is `digest`) and submits it.
fn sign_as(
    q: &mut ApprovalQueue,
    signer: &KeySigner,
    id: i64,
    digest: &str,
    allowed: &[VerifierKey],
    ledger: &Ledger,
) -> capsule_policy::Result<capsule_policy::approvals::Approval> {
    q.sign(
        id,
        &signer.verifier().to_string(),
        &sign_approval(signer, id, digest),
        allowed,
        ledger,
    )
}

fn sign_approval(s: &KeySigner, id: i64, digest: &str) -> String {
    B64.encode(s.sign(approval_statement(id, digest).as_bytes()))
}

#[test]
fn quorum_two_needs_two_distinct_approvers_and_a_changed_argument_voids() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger(tmp.path());
    let (a1, a2, outsider) = (signer("ann", 11), signer("bob", 12), signer("eve", 13));
    let allowed: Vec<VerifierKey> = vec![a1.verifier().clone(), a2.verifier().clone()];
    let mut q = ApprovalQueue::open(&tmp.path().join("approvals.db")).unwrap();
    let req = approval(serde_json::json!({"bytes": 12, "mode": "append"}));
    let id = q.enqueue(&req, "pending_review", 2).unwrap();
    let digest = req.digest();
    let after = sign_as(&mut q, &a1, id, &digest, &allowed, &ledger).unwrap();
    assert_eq!(after.status, "pending");
    let after = sign_as(&mut q, &a1, id, &digest, &allowed, &ledger).unwrap();
    assert_eq!(
        (after.status.as_str(), after.approvers.len()),
        ("pending", 1),
        "the same key twice counts once"
    );
    let err = sign_as(&mut q, &outsider, id, &digest, &allowed, &ledger).unwrap_err();
    assert!(err.to_string().contains("not an approver key"), "{err}");
    let err = sign_as(&mut q, &a2, id, "00", &allowed, &ledger).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert!(q
        .release(id, &req, &ledger)
        .unwrap_err()
        .to_string()
        .contains("not approved"));
    let after = sign_as(&mut q, &a2, id, &digest, &allowed, &ledger).unwrap();
    assert_eq!(after.status, "approved");
    // One argument changed after approval: void, and it stays void.
    let changed = approval(serde_json::json!({"bytes": 13, "mode": "append"}));
    let err = q.release(id, &changed, &ledger).unwrap_err().to_string();
    assert!(err.contains("void: args changed"), "{err}");
    assert_eq!(q.show(id).unwrap().status, "void");
    assert!(q.release(id, &req, &ledger).is_err());
}

#[test]
fn a_crash_between_approval_and_release_releases_exactly_once_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger(tmp.path());
    let a1 = signer("ann", 11);
    let allowed = vec![a1.verifier().clone()];
    let db = tmp.path().join("approvals.db");
    let req = approval(serde_json::json!({"n": 1}));
    let id = {
        let mut q = ApprovalQueue::open(&db).unwrap();
        let id = q.enqueue(&req, "requires_human", 1).unwrap();
        sign_as(&mut q, &a1, id, &req.digest(), &allowed, &ledger).unwrap();
        id
        // dropped here without releasing: the process "crashes"
    };
    // After restart, two releasers race on separate connections.
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (db, req, ledger) = (&db, &req, &ledger);
                s.spawn(move || {
                    ApprovalQueue::open(db)
                        .unwrap()
                        .release(id, req, ledger)
                        .is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    let mut q = ApprovalQueue::open(&db).unwrap();
    assert!(q
        .release(id, &req, &ledger)
        .unwrap_err()
        .to_string()
        .contains("already released"));
    let releases = entries(&ledger)
        .into_iter()
        .filter(|e| e.record.action == "approval.release")
        .count();
    assert_eq!(releases, 1);
}

#[test]
fn a_bad_policy_file_is_rejected_with_its_line_and_the_old_set_keeps_deciding() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(tmp.path(), PolicyConfig::default());
    let version = e.rules().version().to_string();
    let dir = tmp.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("a.cedar"),
        "@id(\"p\")\npermit(principal, action, resource);\nforbid(principal,, action, resource);\n",
    )
    .unwrap();
    let err = e.reload(&dir, "operator:ops").unwrap_err().to_string();
    assert!(err.contains("a.cedar line 3"), "{err}");
    std::fs::write(
        dir.join("a.cedar"),
        "forbid(principal, action == Capsule::Action::\"brain.step\", resource)\nwhen { resource.path == \"/x\" };\n",
    )
    .unwrap();
    let err = e.reload(&dir, "operator:ops").unwrap_err().to_string();
    assert!(
        err.contains("a.cedar line 1") || err.contains("a.cedar line 2"),
        "{err}"
    );
    assert_eq!(e.rules().version(), version);
    assert!(e.decide(&step()).unwrap().outcome.allows());
    let rejected = entries(e.ledger())
        .into_iter()
        .filter(|x| x.record.action == "policy.reload")
        .collect::<Vec<_>>();
    assert_eq!(rejected.len(), 2);
    assert!(rejected.iter().all(|x| x.record.decision == "rejected"));
    // A good file replaces the set.
    std::fs::write(dir.join("a.cedar"), "@id(\"only-measure\") permit(principal, action == Capsule::Action::\"brain.measure\", resource);\n").unwrap();
    e.reload(&dir, "operator:ops").unwrap();
    let d = e.decide(&step()).unwrap();
    assert_eq!(
        (d.outcome, d.reason.as_str()),
        (Outcome::Blocked, "policy_no_permit")
    );
}

#[test]
fn the_policy_directory_is_reloaded_when_a_file_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Arc::new(engine(tmp.path(), PolicyConfig::default()));
    let dir = tmp.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    let _watch = e.watch_policy_dir(&dir, Duration::from_millis(20));
    let before = e.rules().version().to_string();
    std::thread::sleep(Duration::from_millis(60));
    std::fs::write(dir.join("a.cedar"), "@id(\"measure-only\") permit(principal, action == Capsule::Action::\"brain.measure\", resource);\n").unwrap();
    let reloaded = wait_for(|| e.rules().version() != before);
    assert!(reloaded, "the watcher did not pick up the new file");
    assert_eq!(e.decide(&step()).unwrap().reason, "policy_no_permit");
    // A broken edit is rejected and the set loaded above keeps deciding.
    let good = e.rules().version().to_string();
    std::fs::write(
        dir.join("a.cedar"),
        "permit(principal,, action, resource);\n",
    )
    .unwrap();
    wait_for(|| {
        entries(e.ledger())
            .iter()
            .any(|x| x.record.action == "policy.reload" && x.record.decision == "rejected")
    });
    assert_eq!(e.rules().version(), good);
    let rejected = entries(e.ledger())
        .into_iter()
        .find(|x| x.record.decision == "rejected")
        .unwrap();
    assert!(
        rejected.record.reason.contains("a.cedar line 1"),
        "{}",
        rejected.record.reason
    );
}

/// 12 000 recorded decisions over several actions, modes and levels; the
/// candidate set forbids brain.measure and permits bus.publish. Replay
/// must report exactly the decisions those two changes flip.
#[test]
fn shadow_replay_reports_exactly_the_flipped_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = ledger(tmp.path());
    let rules = RuleSet::defaults();
    let actions = [
        ("brain.step", "kernel:main"),
        ("brain.measure", "kernel:main"),
        ("bus.publish", "topic:events"),
        ("fs.write", "path:/var/log/capsule/a.log"),
        ("net.open", "domain:example.com"),
    ];
    let mut records = Vec::new();
    let mut expected = Vec::new();
    for i in 0..12_000u64 {
        let (action, resource) = actions[(i % 5) as usize];
        let mut req = step();
        req.args = serde_json::json!({"i": i});
        req.action = action.into();
        req.resource = resource.into();
        // A stated level at or above the action's own (the table is a floor).
        let floor = capsule_policy::Levels::default()
            .assess(action, None)
            .unwrap()
            .level;
        req.level = Some(SafetyLevel::ALL[(i / 5 % 5) as usize].max(floor));
        let c = Circumstances {
            kill_switch: i % 97 == 0,
            mode: Mode::ALL[(i / 25 % 3) as usize],
            modification_enabled: false,
            guardian: Default::default(),
            levels: Default::default(),
        };
        let d = evaluate(&rules, &c, &req).unwrap();
        // What the candidate changes: measure becomes forbidden, publish permitted.
        let flips = !c.kill_switch
            && ((action == "brain.measure" && d.outcome != Outcome::Blocked)
                || action == "bus.publish");
        if flips {
            expected.push(i);
        }
        records.push(decision_record(&req, &c, &d));
    }
    ledger.append_batch(records).unwrap();
    ledger.close().unwrap();
    let candidate = RuleSet::from_sources(&[(
        "candidate.cedar".into(),
        format!(
            "{}\n@id(\"forbid-measure\") forbid(principal, action == Capsule::Action::\"brain.measure\", resource);\n\
             @id(\"allow-publish\") permit(principal, action == Capsule::Action::\"bus.publish\", resource);\n",
            capsule_policy::rules::DEFAULT_POLICIES
        ),
    )])
    .unwrap();
    let report = capsule_policy::replay::replay(&tmp.path().join("ledger"), &candidate).unwrap();
    assert_eq!(report.decisions, 12_000);
    let got: Vec<u64> = report.changes.iter().map(|c| c.seq).collect();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    let publish = report
        .changes
        .iter()
        .find(|c| c.request.action == "bus.publish")
        .unwrap();
    assert_eq!(publish.recorded, Outcome::Blocked);
    assert_eq!(publish.candidate.policies, ["allow-publish"]);
}
