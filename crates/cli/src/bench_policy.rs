//! `capsule bench policy`: decision latency (kill switch, Cedar rules,
//! guardian, autonomy table, lane guard; no ledger append) with the default
//! set and with 100 rules, and decisions per second on one core.

use crate::bench::percentile;
use anyhow::Result;
use capsule_policy::engine::{evaluate, Circumstances};
use capsule_policy::{Affect, DecisionRequest, Lane, Mode, RuleSet};
use clap::Args;
use serde_json::json;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct PolicyBenchArgs {
    /// One JSON object per line: {"name", "value", "unit"}.
    #[arg(long)]
    json: bool,
    /// Decisions timed per rule set.
    #[arg(long, default_value_t = 200_000)]
    decisions: usize,
}

/// The default set plus 95 generated rules (100 in all) of the kinds a
/// deployment adds: per-principal forbids, per-topic permits, per-path forbids.
pub fn hundred_rules() -> RuleSet {
    let mut text = capsule_policy::rules::DEFAULT_POLICIES.to_string();
    for i in 0..40 {
        text.push_str(&format!(
            "@id(\"block-agent-{i}\") forbid(principal == Capsule::Agent::\"blocked{i}\", action, resource);\n"
        ));
    }
    for i in 0..30 {
        text.push_str(&format!(
            "@id(\"publish-{i}\") permit(principal, action == Capsule::Action::\"bus.publish\", resource == Capsule::Topic::\"topic{i}\");\n"
        ));
    }
    for i in 0..25 {
        text.push_str(&format!(
            "@id(\"protect-{i}\") forbid(principal, action == Capsule::Action::\"fs.write\", resource is Capsule::Path) when {{ resource.path like \"/srv/data{i}/*\" }};\n"
        ));
    }
    let rules =
        RuleSet::from_sources(&[("hundred.cedar".into(), text)]).expect("generated rules validate");
    assert_eq!(rules.policies().len(), 100);
    rules
}

fn requests() -> Vec<DecisionRequest> {
    let base = DecisionRequest {
        principal: "agent:alice".into(),
        action: String::new(),
        resource: String::new(),
        lane: Lane::Prod,
        level: None,
        affect: Affect {
            confidence: Some(0.9),
            empathy: Some(0.8),
            safety: Some(0.99),
            ..Affect::default()
        },
        risk: None,
        drift: Some(0.05),
        args: json!({}),
    };
    [
        ("brain.step", "kernel:main"),
        ("net.open", "domain:example.com"),
        ("fs.write", "path:/var/log/capsule/run.log"),
        ("fs.write", "path:/var/log/capsule/../../etc/passwd"),
        ("bus.publish", "topic:topic7"),
        ("memory.append", "memory:episodic"),
    ]
    .into_iter()
    .map(|(a, r)| DecisionRequest {
        action: a.into(),
        resource: r.into(),
        ..base.clone()
    })
    .collect()
}

pub fn run(args: PolicyBenchArgs) -> Result<ExitCode> {
    let n = args.decisions.max(100);
    let c = Circumstances {
        kill_switch: false,
        mode: Mode::SemiAutonomous,
        modification_enabled: false,
        guardian: Default::default(),
        levels: Default::default(),
    };
    let reqs = requests();
    let emit = |name: &str, value: f64, unit: &str| {
        if args.json {
            println!("{}", json!({"name": name, "value": value, "unit": unit}));
        } else {
            println!("{name:<40} {value:>12.3} {unit}");
        }
    };
    for (label, rules) in [
        ("default", RuleSet::defaults()),
        ("100_rules", hundred_rules()),
    ] {
        for r in reqs.iter().cycle().take(2000) {
            evaluate(&rules, &c, r)?;
        }
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for r in reqs.iter().cycle().take(n) {
            let t = Instant::now();
            std::hint::black_box(evaluate(&rules, &c, r)?);
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let total = start.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        emit(
            &format!("decision_latency_{label}_p50"),
            percentile(&lat, 0.5),
            "us",
        );
        emit(
            &format!("decision_latency_{label}_p99"),
            percentile(&lat, 0.99),
            "us",
        );
        emit(
            &format!("decisions_per_s_per_core_{label}"),
            n as f64 / total,
            "decisions/s",
        );
    }
    Ok(ExitCode::SUCCESS)
}
