//! The default policy set decides exactly as SPEC P1 says.

mod common;
use common::request;

use capsule_policy::engine::{evaluate, Circumstances};
use capsule_policy::{DecisionRequest, Lane, Mode, Outcome, RuleSet};

fn circumstances() -> Circumstances {
    Circumstances {
        kill_switch: false,
        mode: Mode::SemiAutonomous,
        modification_enabled: false,
        guardian: Default::default(),
        levels: Default::default(),
    }
}

#[test]
fn the_default_set_allows_and_denies_as_specified() {
    let rules = RuleSet::defaults();
    let cases: &[(&str, &str, bool, &str)] = &[
        ("brain.step", "kernel:main", true, "allow-core"),
        ("brain.measure", "kernel:main", true, "allow-core"),
        ("memory.append", "memory:episodic", true, "allow-core"),
        ("plan.explain", "plan:p1", true, "allow-core"),
        ("task.submit", "task:t1", true, "allow-core"),
        ("system.exec", "command:/bin/ls", false, "deny-system-exec"),
        ("net.open", "domain:example.com", false, "deny-net-open"),
        ("fs.write", "path:/etc/passwd", false, "deny-fs-write"),
        ("fs.write", "path:/tmp/x.log", false, "deny-fs-write"),
        (
            "fs.write",
            "path:/var/log/capsule/run.log",
            true,
            "allow-capsule-logs",
        ),
        (
            "fs.write",
            "path:/var/log/capsule/./run.log",
            true,
            "allow-capsule-logs",
        ),
        (
            "fs.write",
            "path:/var/log/capsule/run.txt",
            false,
            "deny-fs-write",
        ),
        (
            "fs.write",
            "path:/var/log/capsule/sub/run.log",
            false,
            "deny-fs-write",
        ),
        (
            "fs.write",
            "path:/var/log/capsule/../../etc/passwd",
            false,
            "deny-fs-write",
        ),
        (
            "fs.write",
            "path:/var/log/capsule/../../etc/evil.log",
            false,
            "deny-fs-write",
        ),
        (
            "fs.write",
            "path:/var/log/capsule/x/../../capsule/ok.log",
            true,
            "allow-capsule-logs",
        ),
        // Not named by P1: default deny, no policy decides.
        ("fs.read", "path:/etc/hosts", false, ""),
        ("bus.publish", "topic:events", false, ""),
        ("selfedit.propose", "edit:e1", false, ""),
    ];
    for &(action, resource, allowed, policy) in cases {
        let d = evaluate(&rules, &circumstances(), &request(action, resource)).unwrap();
        assert_eq!(d.outcome.allows(), allowed, "{action} on {resource}: {d:?}");
        let want: Vec<String> = if policy.is_empty() {
            vec![]
        } else {
            vec![policy.to_string()]
        };
        assert_eq!(d.policies, want, "{action} on {resource}");
        if allowed {
            assert_eq!(d.outcome, Outcome::AutoApproved);
            assert_eq!(d.autonomy_rule, Some(6));
        } else {
            assert_eq!(d.outcome, Outcome::Blocked);
            assert!(d.would_pass.is_some(), "a denial says what would pass");
            let reason = if policy.is_empty() {
                "policy_no_permit"
            } else {
                "policy_forbid"
            };
            assert_eq!(d.reason, reason, "{action} on {resource}");
        }
    }
}

#[test]
fn experimental_lane_turns_allowed_external_actions_into_dry_runs() {
    let rules = RuleSet::defaults();
    let mut req = request("fs.write", "path:/var/log/capsule/run.log");
    req.lane = Lane::Experimental;
    let d = evaluate(&rules, &circumstances(), &req).unwrap();
    assert_eq!(d.execution, Some(capsule_policy::lanes::Execution::DryRun));
    req.lane = Lane::Candidate;
    let d = evaluate(&rules, &circumstances(), &req).unwrap();
    assert_eq!(d.execution, Some(capsule_policy::lanes::Execution::Run));
}

#[test]
fn the_guardian_holds_risky_steps_for_people_and_blocks_drifting_ones() {
    let rules = RuleSet::defaults();
    let mut req = request("brain.step", "kernel:main");
    req.risk = Some(0.51);
    let d = evaluate(&rules, &circumstances(), &req).unwrap();
    assert_eq!(
        (d.outcome, d.reason.as_str()),
        (Outcome::RequiresHuman, "guardian_risk")
    );
    assert_eq!(
        d.would_pass.as_deref(),
        Some("approver signatures (quorum), or risk ≤ 0.5")
    );
    assert_eq!(d.assessment.level, capsule_policy::SafetyLevel::High);
    req.risk = Some(0.5);
    let d = evaluate(&rules, &circumstances(), &req).unwrap();
    assert_eq!(
        d.outcome,
        Outcome::AutoApproved,
        "0.5 is MEDIUM: semi_autonomous runs it"
    );
    req.drift = Some(0.36);
    let d = evaluate(&rules, &circumstances(), &req).unwrap();
    assert_eq!(
        (d.outcome, d.reason.as_str()),
        (Outcome::Blocked, "guardian_drift")
    );
    // A blocked outcome is not turned into a wait by its risk.
    let mut req = request("brain.step", "kernel:main");
    req.risk = Some(0.9);
    req.affect.safety = Some(0.1);
    let d = evaluate(&rules, &circumstances(), &req).unwrap();
    assert_eq!((d.outcome, d.autonomy_rule), (Outcome::Blocked, Some(3)));
}

#[test]
fn the_table_sets_each_action_s_level_and_a_request_cannot_lower_it() {
    let rules = RuleSet::defaults();
    let permit = RuleSet::from_sources(&[(
        "p.cedar".to_string(),
        "@id(\"del\")\npermit (principal, action == Capsule::Action::\"object.delete\", resource);\n".to_string(),
    )])
    .unwrap();
    let req = request(
        "object.delete",
        "object:BLOB_20260101_aaaaaaaaaaaaaaaaaaaaaaaaaa",
    );
    let d = evaluate(&permit, &circumstances(), &req).unwrap();
    assert_eq!(
        (d.outcome, d.assessment.risk, d.assessment.level),
        (
            Outcome::RequiresHuman,
            0.75,
            capsule_policy::SafetyLevel::High
        )
    );
    let mut low = request("brain.step", "kernel:main");
    low.level = Some(capsule_policy::SafetyLevel::Minimal);
    let err = evaluate(&rules, &circumstances(), &low)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("level: minimal is below brain.step's level low"),
        "{err}"
    );
    let mut c = circumstances();
    c.levels = serde_json::from_str(r#"{"brain.step": "moderate"}"#).unwrap();
    c.mode = Mode::Supervised;
    let d = evaluate(&rules, &c, &request("brain.step", "kernel:main")).unwrap();
    assert_eq!(d.outcome, Outcome::PendingReview);
    assert_eq!(d.assessment.source, capsule_policy::RiskSource::PolicyJson);
}

#[test]
fn bad_requests_are_refused_with_the_field() {
    let rules = RuleSet::defaults();
    let mut req = request("brain.step", "kernel:main");
    req.principal = "robot:x".into();
    let err = evaluate(&rules, &circumstances(), &req)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("principal: unknown kind"), "{err}");
    let mut req = request("brain.step", "kernel:main");
    req.affect.confidence = Some(7.0);
    let err = evaluate(&rules, &circumstances(), &req)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("affect.confidence"), "{err}");
    let json = r#"{"principal":"agent:a","action":"brain.step","resource":"kernel:k","levle":3}"#;
    assert!(serde_json::from_str::<DecisionRequest>(json)
        .unwrap_err()
        .to_string()
        .contains("levle"));
}
