//! Deletion stands only on a decision the policy engine made: re-decided
//! before it is acted on, refused while the kill switch is armed, each
//! decision once, and a held decision only with an approved approval. Every
//! refused delete leaves the object readable and writes no deletion entry.

use capsule_ledger::note::{KeySigner, NoteSigner};
use capsule_ledger::{Ledger, LedgerConfig, Record};
use capsule_policy::approvals::{approval_statement, ApprovalQueue, ApprovalRequest};
use capsule_policy::engine::{decision_record, evaluate, Circumstances};
use capsule_policy::killswitch::{disarm_statement, KillSwitch, OperatorSignature};
use capsule_policy::rules::DEFAULT_POLICIES;
use capsule_policy::{DecisionRequest, PolicyConfig, PolicyEngine, RuleSet};
use capsule_store::{
    DeleteAuthority, FileKeyring, HeldApproval, Kind, ObjectId, Store, StoreError,
};
use data_encoding::BASE64;
use ed25519_dalek::SigningKey;
use std::sync::Arc;

/// A policy that lets any agent or operator ask to delete any object.
const PERMIT_DELETE: &str =
    "@id(\"allow-delete\")\npermit(principal, action == Capsule::Action::\"object.delete\", resource);\n";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    store: Store,
    ledger: Arc<Ledger>,
    engine: PolicyEngine,
    approver: KeySigner,
    operator: KeySigner,
}

fn signer(name: &str, seed: u8) -> KeySigner {
    KeySigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

/// A store and an engine on one ledger; the rules are the defaults plus
/// [`PERMIT_DELETE`] (or the defaults alone), one approver and one operator.
fn fixture_with(permit_delete: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ledger = Arc::new(
        Ledger::create(
            &dir.join("ledger"),
            "capsule.test/delete",
            LedgerConfig::default(),
        )
        .unwrap(),
    );
    let keys = Arc::new(FileKeyring::create(&dir.join("keyring.json"), &[]).unwrap());
    let store = Store::open(&dir.join("store"), keys, ledger.clone()).unwrap();
    let mut sources = vec![("default.cedar".to_string(), DEFAULT_POLICIES.to_string())];
    if permit_delete {
        sources.push(("delete.cedar".into(), PERMIT_DELETE.into()));
    }
    let rules = RuleSet::from_sources(&sources).unwrap();
    let (approver, operator) = (signer("ann", 21), signer("ops", 22));
    // object.delete is SEVERE by default (always held for people); these
    // tests lower it to MINOR so that a `low` request runs without review
    // and a `high` one waits, as a deployment's policy.json may.
    let config = PolicyConfig {
        approvers: vec![approver.verifier().to_string()],
        operators: vec![operator.verifier().to_string()],
        levels: serde_json::from_str(r#"{"object.delete": "minor"}"#).unwrap(),
        ..PolicyConfig::default()
    };
    let kill = KillSwitch::open(&dir.join("state"), ledger.clone()).unwrap();
    let engine = PolicyEngine::new(rules, config, kill, ledger.clone()).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        store,
        ledger,
        engine,
        approver,
        operator,
    }
}

fn fixture() -> Fixture {
    fixture_with(true)
}

/// `agent:alice` asks to delete `id` at `level` (`low` is allowed without
/// review in semi-autonomous mode, `high` waits for approval).
fn request(id: &ObjectId, level: &str) -> DecisionRequest {
    serde_json::from_value(serde_json::json!({
        "principal": "agent:alice",
        "action": "object.delete",
        "resource": format!("object:{id}"),
        "level": level,
        "affect": {"confidence": 0.9, "empathy": 0.9, "safety": 0.99},
        "args": {"why": "cleanup"},
    }))
    .unwrap()
}

/// What `capsule policy eval --record` queues for a held `req`.
fn approval_request(req: &DecisionRequest, policy_version: &str) -> ApprovalRequest {
    ApprovalRequest {
        action: req.action.clone(),
        actor: req.principal.clone(),
        resource: req.resource.clone(),
        args: req.args.clone(),
        policy_version: policy_version.into(),
    }
}

impl Fixture {
    /// Ask the engine and record its decision; returns (outcome, ledger seq).
    fn decide(&self, req: &DecisionRequest) -> (String, u64) {
        let (d, receipt) = self.engine.decide_and_record(req).unwrap();
        (d.outcome.as_str().to_string(), receipt.seq)
    }

    fn delete(&self, id: &ObjectId, seq: u64) -> Result<(), StoreError> {
        self.store.delete(
            id,
            DeleteAuthority {
                engine: &self.engine,
                decision_seq: seq,
                approval: None,
            },
        )
    }

    fn delete_approved(
        &self,
        id: &ObjectId,
        seq: u64,
        queue: &mut ApprovalQueue,
        approval: i64,
    ) -> Result<(), StoreError> {
        self.store.delete(
            id,
            DeleteAuthority {
                engine: &self.engine,
                decision_seq: seq,
                approval: Some(HeldApproval {
                    queue,
                    id: approval,
                }),
            },
        )
    }

    /// How many deletions the ledger records.
    fn deletion_entries(&self) -> usize {
        (0..self.ledger.size())
            .filter(|&i| self.ledger.entry(i).unwrap().record.action == "store.delete")
            .count()
    }

    /// The refusal of a delete that must fail, after checking that it
    /// changed nothing: the object reads back and no deletion was recorded.
    fn refused(&self, id: &ObjectId, result: Result<(), StoreError>, content: &[u8]) -> String {
        let before = self.deletion_entries();
        let err = result.expect_err("the delete must be refused").to_string();
        assert_eq!(self.store.get(id).unwrap(), content, "{err}");
        assert_eq!(self.deletion_entries(), before, "{err}");
        err
    }

    fn queue(&self) -> ApprovalQueue {
        ApprovalQueue::open(&self.dir.join("approvals.db")).unwrap()
    }

    fn approve(&self, queue: &mut ApprovalQueue, approval: i64) {
        let digest = queue.show(approval).unwrap().digest;
        let signature = BASE64.encode(
            &self
                .approver
                .sign(approval_statement(approval, &digest).as_bytes()),
        );
        let after = queue
            .sign(
                approval,
                &self.approver.verifier().to_string(),
                &signature,
                &self.engine.config().approver_keys().unwrap(),
                &self.ledger,
            )
            .unwrap();
        assert_eq!(after.status, "approved");
    }
}

#[test]
fn an_engine_decision_deletes_once_and_a_second_use_is_refused() {
    let f = fixture();
    let id = f.store.put("plain", Kind::Blob, b"to be deleted").unwrap();
    let keep = f.store.put("plain", Kind::Blob, b"to be kept").unwrap();
    let (outcome, seq) = f.decide(&request(&id, "low"));
    assert_eq!(outcome, "auto_approved");
    let (_, about_keep) = f.decide(&request(&keep, "low"));
    let err = f.refused(&id, f.delete(&id, about_keep), b"to be deleted");
    assert!(err.contains(&format!("not object:{id}")), "{err}");
    let err = f.refused(&id, f.delete(&id, 10_000), b"to be deleted");
    assert!(err.contains("ledger entry 10000: no such entry"), "{err}");

    f.delete(&id, seq).unwrap();
    assert!(matches!(f.store.get(&id), Err(StoreError::NotFound(_))));
    assert_eq!(f.store.get(&keep).unwrap(), b"to be kept");
    assert_eq!(f.deletion_entries(), 1);
    let entry = f.ledger.entry(f.ledger.size() - 1).unwrap().record;
    assert_eq!(
        (entry.actor.as_str(), entry.subject.as_str()),
        ("agent:alice", id.to_string().as_str())
    );
    assert_eq!(entry.meta["decision_seq"], seq);

    f.store.put("plain", Kind::Blob, b"to be deleted").unwrap();
    let err = f.refused(&id, f.delete(&id, seq), b"to be deleted");
    assert!(err.contains("already used"), "{err}");
}

#[test]
fn a_blocked_decision_deletes_nothing() {
    let f = fixture_with(false);
    let id = f.store.put("plain", Kind::Blob, b"kept").unwrap();
    let (outcome, seq) = f.decide(&request(&id, "low"));
    assert_eq!(outcome, "blocked");
    let err = f.refused(&id, f.delete(&id, seq), b"kept");
    assert!(err.contains("was blocked, not an approval"), "{err}");
    assert!(err.contains("no policy permits object.delete"), "{err}");
}

#[test]
fn a_forged_decision_with_changed_circumstances_is_refused_naming_the_difference() {
    let f = fixture();
    let id = f.store.put("plain", Kind::Blob, b"precious").unwrap();
    // A forger who claims autonomous mode gets an allowing decision for a
    // request the engine would hold, and records it through the ledger
    // library in exactly the engine's shape.
    let req = request(&id, "high");
    let mut claimed = serde_json::to_value(f.engine.circumstances()).unwrap();
    claimed["mode"] = "autonomous".into();
    let claimed: Circumstances = serde_json::from_value(claimed).unwrap();
    let forged = evaluate(&f.engine.rules(), &claimed, &req).unwrap();
    assert!(forged.outcome.allows(), "{forged:?}");
    let seq = f
        .ledger
        .append(decision_record(&req, &claimed, &forged))
        .unwrap()
        .seq;
    let err = f.refused(&id, f.delete(&id, seq), b"precious");
    assert!(
        err.contains(
            "meta.circumstances.mode: recorded \"autonomous\", re-decided \"semi_autonomous\""
        ),
        "{err}"
    );
    assert!(
        err.starts_with(&format!("decision: ledger entry {seq}:")),
        "{err}"
    );
}

#[test]
fn a_forged_outcome_is_refused_naming_the_difference() {
    let f = fixture();
    let id = f.store.put("plain", Kind::Blob, b"precious").unwrap();
    let req = request(&id, "high");
    let c = f.engine.circumstances();
    let d = evaluate(&f.engine.rules(), &c, &req).unwrap();
    assert_eq!(d.outcome.as_str(), "pending_review");
    let mut record = decision_record(&req, &c, &d);
    record.decision = "auto_approved".into();
    let seq = f.ledger.append(record).unwrap().seq;
    let err = f.refused(&id, f.delete(&id, seq), b"precious");
    assert!(
        err.contains("decision: recorded \"auto_approved\", re-decided \"pending_review\""),
        "{err}"
    );
}

#[test]
fn an_entry_in_the_old_trusted_shape_is_not_a_decision() {
    let f = fixture();
    let id = f.store.put("plain", Kind::Blob, b"precious").unwrap();
    let mut record = Record::new("operator:ops", "object.delete", "approved");
    record.subject = format!("object:{id}");
    let bare = f.ledger.append(record.clone()).unwrap().seq;
    let err = f.refused(&id, f.delete(&id, bare), b"precious");
    assert!(err.contains("is not a policy decision"), "{err}");
    record.meta = serde_json::json!({"kind": "policy.decision"});
    let kind_only = f.ledger.append(record).unwrap().seq;
    let err = f.refused(&id, f.delete(&id, kind_only), b"precious");
    assert!(err.contains("meta.request is unreadable: absent"), "{err}");
}

#[test]
fn a_delete_while_the_kill_switch_is_armed_is_refused_and_the_object_stays_readable() {
    let f = fixture();
    let id = f.store.put("plain", Kind::Blob, b"still here").unwrap();
    let (outcome, seq) = f.decide(&request(&id, "low"));
    assert_eq!(outcome, "auto_approved");
    let kill = f.engine.kill_switch();
    let nonce = kill.arm("operator:ops", "test").unwrap().nonce;
    let err = f.refused(&id, f.delete(&id, seq), b"still here");
    assert!(err.contains("the kill switch is armed"), "{err}");
    // Disarmed, the same decision stands again.
    let signature = OperatorSignature {
        key: f.operator.verifier().to_string(),
        signature: BASE64.encode(&f.operator.sign(disarm_statement(&nonce).as_bytes())),
    };
    kill.disarm(
        &[signature],
        &f.engine.config().operator_keys().unwrap(),
        1,
        "test over",
    )
    .unwrap();
    f.delete(&id, seq).unwrap();
    assert!(!f.store.exists(&id).unwrap());
}

#[test]
fn a_held_decision_deletes_exactly_once_with_an_approved_quorum_and_not_without() {
    let f = fixture();
    let id = f.store.put("plain", Kind::Blob, b"held").unwrap();
    let req = request(&id, "high");
    let (d, receipt) = f.engine.decide_and_record(&req).unwrap();
    assert_eq!(d.outcome.as_str(), "pending_review");
    let seq = receipt.seq;
    let err = f.refused(&id, f.delete(&id, seq), b"held");
    assert!(
        err.contains("was pending_review: the delete waits for an approved approval"),
        "{err}"
    );

    let mut queue = f.queue();
    let covering = queue
        .enqueue(
            &approval_request(&req, &d.policy_version),
            "pending_review",
            1,
        )
        .unwrap();
    let err = f.refused(
        &id,
        f.delete_approved(&id, seq, &mut queue, covering),
        b"held",
    );
    assert!(err.contains("is pending, not approved"), "{err}");

    // An approval for another request (other arguments) does not cover it.
    let mut other = approval_request(&req, &d.policy_version);
    other.args = serde_json::json!({"why": "something else"});
    let elsewhere = queue.enqueue(&other, "pending_review", 1).unwrap();
    f.approve(&mut queue, elsewhere);
    let err = f.refused(
        &id,
        f.delete_approved(&id, seq, &mut queue, elsewhere),
        b"held",
    );
    assert!(err.contains("void: args changed"), "{err}");

    f.approve(&mut queue, covering);
    f.delete_approved(&id, seq, &mut queue, covering).unwrap();
    assert!(!f.store.exists(&id).unwrap());
    assert_eq!(queue.show(covering).unwrap().status, "released");
    assert_eq!(f.deletion_entries(), 1);

    f.store.put("plain", Kind::Blob, b"held").unwrap();
    let err = f.refused(
        &id,
        f.delete_approved(&id, seq, &mut queue, covering),
        b"held",
    );
    assert!(err.contains("already used"), "{err}");
}

#[test]
fn an_approval_is_not_spent_on_a_decision_that_needs_none() {
    let f = fixture();
    let id = f.store.put("plain", Kind::Blob, b"free").unwrap();
    let req = request(&id, "low");
    let (d, receipt) = f.engine.decide_and_record(&req).unwrap();
    assert_eq!(d.outcome.as_str(), "auto_approved");
    let mut queue = f.queue();
    let approval = queue
        .enqueue(
            &approval_request(&req, &d.policy_version),
            "pending_review",
            1,
        )
        .unwrap();
    f.approve(&mut queue, approval);
    let err = f.refused(
        &id,
        f.delete_approved(&id, receipt.seq, &mut queue, approval),
        b"free",
    );
    assert!(err.contains("needs no approval"), "{err}");
    assert_eq!(queue.show(approval).unwrap().status, "approved");
}
