//! Decisions: the kill switch, the Cedar rules, the guardian, the autonomy
//! table and the lane guard, in that order, with an explanation, recorded
//! in the ledger.

use crate::affect::AffectState;
use crate::autonomy::{self, Affect, Mode, Outcome, SafetyLevel, Situation};
use crate::error::{PolicyError, Result};
use crate::guardian::{Guardian, GuardianRefusal};
use crate::lanes::{self, Execution, Lane};
use crate::levels::{Assessment, Levels, RiskSource};
use crate::rules::{Name, RuleSet};
use capsule_ledger::{Ledger, Receipt, Record, VerifierKey};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Settings of the engine (`policy.json` beside the policy files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub mode: Mode,
    pub modification_enabled: bool,
    pub guardian: Guardian,
    /// Distinct approver signatures an approval needs.
    pub approval_quorum: u32,
    /// Distinct operator signatures disarming the kill switch needs.
    pub disarm_quorum: u32,
    /// Approver keys, `<name>+<id>+<base64 key>`.
    pub approvers: Vec<String>,
    /// Operator keys, same form.
    pub operators: Vec<String>,
    /// Risk overrides per action (the built-in table otherwise).
    pub levels: Levels,
    /// Seconds a queued approval waits before it expires.
    pub approval_ttl_s: u64,
}

/// Default lifetime of a queued approval: 24 hours.
pub const DEFAULT_APPROVAL_TTL_S: u64 = 24 * 3600;

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: Mode::SemiAutonomous,
            modification_enabled: false,
            guardian: Guardian::default(),
            approval_quorum: 1,
            disarm_quorum: 1,
            approvers: Vec::new(),
            operators: Vec::new(),
            levels: Levels::default(),
            approval_ttl_s: DEFAULT_APPROVAL_TTL_S,
        }
    }
}

/// The name of the settings file in a policy directory.
pub const CONFIG_FILE: &str = "policy.json";

impl PolicyConfig {
    /// Read `dir/policy.json`; a missing file gives the defaults.
    pub fn load(dir: &Path) -> Result<PolicyConfig> {
        let path = dir.join(CONFIG_FILE);
        let config: PolicyConfig = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PolicyError::PolicyFile {
                file: path.display().to_string(),
                line: e.line(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PolicyConfig::default(),
            Err(e) => return Err(PolicyError::io(&path)(e)),
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        self.guardian.validate()?;
        for (field, q) in [
            ("approval_quorum", self.approval_quorum),
            ("disarm_quorum", self.disarm_quorum),
        ] {
            if q == 0 || q > 32 {
                return Err(PolicyError::invalid(
                    field,
                    format!("{q} is outside 1..=32"),
                ));
            }
        }
        self.approver_keys()?;
        self.operator_keys()?;
        self.levels.validate()?;
        if self.approval_ttl_s == 0 || self.approval_ttl_s > 366 * 24 * 3600 {
            return Err(PolicyError::invalid(
                "approval_ttl_s",
                format!("{} is outside 1..=31622400 (a year)", self.approval_ttl_s),
            ));
        }
        Ok(())
    }

    /// Write `dir/policy.json` atomically (a crash leaves the old or the
    /// new file, never a mix); refuses a configuration that does not validate.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.validate()?;
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| PolicyError::invalid("policy.json", e.to_string()))?;
        bytes.push(b'\n');
        crate::durable::replace_file(&dir.join(CONFIG_FILE), &bytes)
    }

    fn keys(field: &str, texts: &[String]) -> Result<Vec<VerifierKey>> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                VerifierKey::parse(t)
                    .map_err(|e| PolicyError::invalid(format!("{field}[{i}]"), e.to_string()))
            })
            .collect()
    }

    pub fn approver_keys(&self) -> Result<Vec<VerifierKey>> {
        Self::keys("approvers", &self.approvers)
    }

    pub fn operator_keys(&self) -> Result<Vec<VerifierKey>> {
        Self::keys("operators", &self.operators)
    }
}

/// One question for the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `agent:NAME`, `operator:NAME`, `approver:NAME`.
    pub principal: String,
    /// An action of the schema, e.g. `brain.step`.
    pub action: String,
    /// `kind:name`, e.g. `path:/var/log/capsule/a.log`.
    pub resource: String,
    #[serde(default = "default_lane")]
    pub lane: Lane,
    /// A level the step states; the action's own level from the table is
    /// a floor (a lower one is refused).
    #[serde(default)]
    pub level: Option<SafetyLevel>,
    #[serde(default)]
    pub affect: Affect,
    /// A risk the step states, in [0, 1]; the table's is a floor.
    #[serde(default)]
    pub risk: Option<f64>,
    /// 1 − cos(intent, action) of the step, in [0, 1].
    #[serde(default)]
    pub drift: Option<f64>,
    /// The action's arguments (an object): what approvals sign.
    #[serde(default = "empty_object")]
    pub args: serde_json::Value,
}

fn default_lane() -> Lane {
    Lane::Prod
}
fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// The answer, with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// When allowed: run, or dry run (experimental lane, external action).
    pub execution: Option<Execution>,
    /// A short code: kill_switch, policy_forbid, policy_no_permit,
    /// policy_error, guardian_risk, guardian_drift, autonomy.
    pub reason: String,
    /// The Cedar policies that decided (permits when allowed, forbids when denied).
    pub policies: Vec<String>,
    /// The autonomy-table rule (1..=7) that produced the outcome, if it was reached.
    pub autonomy_rule: Option<u8>,
    pub explanation: String,
    /// For a refusal or a wait: what would have let it pass.
    pub would_pass: Option<String>,
    pub policy_version: String,
    pub mode: Mode,
    /// The level and risk the decision was made at, and where they came from.
    pub assessment: Assessment,
}

/// The inputs besides the request that a decision depends on; recorded
/// with each decision so a replay can hold them fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Circumstances {
    pub kill_switch: bool,
    pub mode: Mode,
    pub modification_enabled: bool,
    pub guardian: Guardian,
    /// `policy.json`'s risk overrides in force (empty: the built-in table).
    #[serde(default)]
    pub levels: Levels,
}

/// The risk and level of `req` under `levels`: the table's entry, raised
/// (never lowered) by what the step states.
pub fn assess(levels: &Levels, req: &DecisionRequest) -> Result<Assessment> {
    let mut a = levels.assess(&req.action, req.risk)?;
    if let Some(stated) = req.level {
        if stated < a.level {
            return Err(PolicyError::invalid(
                "level",
                format!(
                    "{} is below {}'s level {}; a step may state a higher level, never a lower one",
                    stated.as_str(),
                    req.action,
                    a.level.as_str()
                ),
            ));
        }
        if stated > a.level {
            a.level = stated;
            a.source = RiskSource::Stated;
        }
    }
    Ok(a)
}

/// Decide `req` under `rules` and `c`. Pure: no I/O, no clock.
pub fn evaluate(rules: &RuleSet, c: &Circumstances, req: &DecisionRequest) -> Result<Decision> {
    req.affect.validate()?;
    if !req.args.is_object() {
        return Err(PolicyError::invalid("args", "must be a JSON object"));
    }
    let principal = Name::principal(&req.principal)?;
    let resource = Name::resource(&req.resource)?;
    let assessment = assess(&c.levels, req)?;
    let decision =
        |outcome, reason: &str, policies, rule, explanation: String, would_pass| Decision {
            outcome,
            execution: None,
            reason: reason.into(),
            policies,
            autonomy_rule: rule,
            explanation,
            would_pass,
            policy_version: rules.version().into(),
            mode: c.mode,
            assessment,
        };
    // A refusal before the autonomy table: no rule number, and always a way to pass.
    let refused = |reason: &str, policies, explanation: String, would_pass: String| {
        decision(
            Outcome::Blocked,
            reason,
            policies,
            None,
            explanation,
            Some(would_pass),
        )
    };
    if c.kill_switch {
        let r = autonomy::decide(&Situation {
            emergency_stop: true,
            modification: false,
            modification_enabled: false,
            affect: req.affect,
            level: assessment.level,
            mode: c.mode,
        });
        return Ok(decision(
            r.outcome,
            "kill_switch",
            Vec::new(),
            Some(r.rule),
            r.why,
            r.would_pass,
        ));
    }
    let answer = rules.evaluate(&principal, &req.action, &resource, req.lane)?;
    if !answer.allowed {
        let (reason, explanation, would_pass) = if !answer.policies.is_empty() {
            (
                "policy_forbid",
                format!(
                    "{} on {} by {} is forbidden by {}",
                    req.action,
                    resource,
                    principal,
                    answer.policies.join(", ")
                ),
                format!(
                    "no forbid policy matching it ({} would have to not apply)",
                    answer.policies.join(", ")
                ),
            )
        } else if !answer.errors.is_empty() {
            (
                "policy_error",
                format!("policies failed to evaluate: {}", answer.errors.join("; ")),
                "policies that evaluate without error".to_string(),
            )
        } else {
            (
                "policy_no_permit",
                format!(
                    "no policy permits {} on {} by {} (default deny)",
                    req.action, resource, principal
                ),
                format!("a permit policy for {} on {}", req.action, resource.kind()),
            )
        };
        return Ok(refused(reason, answer.policies, explanation, would_pass));
    }
    if let Some(GuardianRefusal::Drift { drift, max }) = c.guardian.check_drift(req.drift)? {
        return Ok(refused(
            "guardian_drift",
            answer.policies,
            format!("drift {drift} exceeds the guardian's max_drift {max}: the step does not follow from its intent"),
            format!("drift ≤ {max}"),
        ));
    }
    let ruling = autonomy::decide(&Situation {
        emergency_stop: false,
        modification: req.action.starts_with("selfedit."),
        modification_enabled: c.modification_enabled,
        affect: req.affect,
        level: assessment.level,
        mode: c.mode,
    });
    let permitted = format!("permitted by {}", answer.policies.join(", "));
    let mut d = decision(
        ruling.outcome,
        "autonomy",
        answer.policies,
        Some(ruling.rule),
        format!("{permitted}; autonomy rule {}: {}", ruling.rule, ruling.why),
        ruling.would_pass,
    );
    let unattended = matches!(
        d.outcome,
        Outcome::Approved | Outcome::AutoApproved | Outcome::PendingReview
    );
    if unattended && c.guardian.needs_people(assessment.risk) {
        d.outcome = Outcome::RequiresHuman;
        d.reason = "guardian_risk".into();
        d.explanation.push_str(&format!(
            "; guardian: risk {} exceeds max_risk {}, so it never runs without people: held for the approval quorum",
            assessment.risk, c.guardian.max_risk
        ));
        d.would_pass = Some(format!(
            "approver signatures (quorum), or risk ≤ {}",
            c.guardian.max_risk
        ));
    }
    if d.outcome.allows() {
        let execution = lanes::guard(req.lane, &req.action);
        if execution == Execution::DryRun {
            d.explanation
                .push_str("; experimental lane: external action runs as a dry run");
        }
        d.execution = Some(execution);
    }
    Ok(d)
}

/// The ledger record of a decision: actor = principal, action, subject =
/// resource, decision = outcome, reason = explanation; meta holds the
/// request, the circumstances and the deciding ids, so it can be replayed.
pub fn decision_record(req: &DecisionRequest, c: &Circumstances, d: &Decision) -> Record {
    let mut record = Record::new(&req.principal, &req.action, d.outcome.as_str());
    record.subject = req.resource.clone();
    record.reason = d.explanation.chars().take(4000).collect();
    record.meta = serde_json::json!({
        "kind": "policy.decision",
        "request": req,
        "circumstances": c,
        "decision": {
            "reason": d.reason,
            "policies": d.policies,
            "autonomy_rule": d.autonomy_rule,
            "policy_version": d.policy_version,
            "execution": d.execution,
            "would_pass": d.would_pass,
            "assessment": d.assessment,
        },
    });
    record
}

type Fingerprint = Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)>;

/// What the watcher compares: the name, size and modification time of
/// every `*.cedar` file (`cedar`) or of `policy.json` (not `cedar`).
fn fingerprint(dir: &Path, cedar: bool) -> Fingerprint {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let p = e.path();
            if cedar {
                p.extension().is_some_and(|x| x == "cedar")
            } else {
                p.file_name().is_some_and(|n| n == CONFIG_FILE)
            }
        })
        .map(|e| {
            let meta = e.metadata().ok();
            (
                e.path(),
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    out.sort();
    out
}

/// The engine: the active rules and settings, the kill switch, the ledger.
pub struct PolicyEngine {
    rules: RwLock<Arc<RuleSet>>,
    config: RwLock<PolicyConfig>,
    kill: Arc<crate::killswitch::KillSwitch>,
    ledger: Arc<Ledger>,
    /// Where `policy.json` is kept; operator changes are written there.
    dir: Option<std::path::PathBuf>,
    affect: RwLock<AffectState>,
}

impl PolicyEngine {
    pub fn new(
        rules: RuleSet,
        config: PolicyConfig,
        kill: Arc<crate::killswitch::KillSwitch>,
        ledger: Arc<Ledger>,
    ) -> Result<Self> {
        config.validate()?;
        Ok(PolicyEngine {
            rules: RwLock::new(Arc::new(rules)),
            config: RwLock::new(config),
            kill,
            ledger,
            dir: None,
            affect: RwLock::new(AffectState::in_memory(crate::affect::built_in_defaults())?),
        })
    }

    /// Keep operator changes of mode, modification switch and levels in
    /// `dir/policy.json` (they survive a restart).
    pub fn with_policy_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// The affect parameters decisions use.
    pub fn with_affect(mut self, affect: AffectState) -> Self {
        self.affect = RwLock::new(affect);
        self
    }

    /// The affect parameters now, with thresholds and sources.
    pub fn affect(&self) -> Vec<crate::affect::Parameter> {
        self.affect
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .parameters()
    }

    /// The affect a decision uses when the request states `requested`
    /// (which may lower values, never raise them).
    pub fn affect_for(
        &self,
        requested: Option<&Affect>,
    ) -> Result<(Affect, Vec<crate::affect::Parameter>)> {
        self.affect
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .for_request(requested)
    }

    /// An operator sets affect parameters (recorded, kept on disk).
    pub fn set_affect(&self, update: &Affect, by: &str) -> Result<Vec<crate::affect::Parameter>> {
        update.validate()?;
        let mut state = self.affect.write().unwrap_or_else(|p| p.into_inner());
        let mut record = Record::new(by, "policy.affect", "ok");
        record.subject = "affect".into();
        record.reason = format!(
            "affect set: {}",
            serde_json::to_string(update).unwrap_or_default()
        );
        record.meta = serde_json::json!({ "kind": "policy.affect", "set": update });
        let before = state.clone();
        state.set(update)?;
        if let Err(e) = self.ledger.append(record) {
            *state = before;
            return Err(e.into());
        }
        Ok(state.parameters())
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn config(&self) -> PolicyConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn kill_switch(&self) -> &Arc<crate::killswitch::KillSwitch> {
        &self.kill
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn circumstances(&self) -> Circumstances {
        let config = self.config.read().unwrap_or_else(|p| p.into_inner());
        Circumstances {
            kill_switch: self.kill.is_armed(),
            mode: config.mode,
            modification_enabled: config.modification_enabled,
            guardian: config.guardian,
            levels: config.levels.clone(),
        }
    }

    /// Decide without recording (for dry questions such as `policy eval`).
    pub fn decide(&self, req: &DecisionRequest) -> Result<Decision> {
        evaluate(&self.rules(), &self.circumstances(), req)
    }

    /// Decide and append the decision to the ledger.
    pub fn decide_and_record(&self, req: &DecisionRequest) -> Result<(Decision, Receipt)> {
        let c = self.circumstances();
        let d = evaluate(&self.rules(), &c, req)?;
        let receipt = self.ledger.append(decision_record(req, &c, &d))?;
        Ok((d, receipt))
    }

    /// Load `dir/policy.json` as the new settings, if it differs from the
    /// active ones. On any error the active settings stay and the rejection
    /// is recorded.
    pub fn reload_config(&self, dir: &Path, by: &str) -> Result<bool> {
        let mut record = Record::new(by, "policy.reload", "ok");
        record.subject = dir.join(CONFIG_FILE).display().to_string();
        match PolicyConfig::load(dir) {
            Ok(config) if config == self.config() => Ok(false),
            Ok(config) => {
                record.reason = format!(
                    "policy.json reloaded: mode {}, modification_enabled {}",
                    config.mode.as_str(),
                    config.modification_enabled
                );
                self.ledger.append(record)?;
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
                Ok(true)
            }
            Err(e) => {
                record.decision = "rejected".into();
                record.reason = format!("kept the active policy.json settings: {e}");
                self.ledger.append(record)?;
                Err(e)
            }
        }
    }

    /// Load `dir` as the new rule set. On any error the active set stays
    /// and the rejection is recorded; returns the new version.
    pub fn reload(&self, dir: &Path, by: &str) -> Result<String> {
        let mut record = Record::new(by, "policy.reload", "ok");
        record.subject = dir.display().to_string();
        match RuleSet::load_dir(dir) {
            Ok(rules) => {
                let version = rules.version().to_string();
                record.reason = format!("active policy version {version}");
                self.ledger.append(record)?;
                *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
                Ok(version)
            }
            Err(e) => {
                record.decision = "rejected".into();
                record.reason = format!("kept version {}: {e}", self.rules().version());
                self.ledger.append(record)?;
                Err(e)
            }
        }
    }

    /// Reload `dir` whenever its `*.cedar` files or its `policy.json` change
    /// (names, sizes or modification times), checking every `interval`, for
    /// as long as the engine lives. A rejected set is recorded and the
    /// active one stays.
    pub fn watch_policy_dir(
        self: &Arc<Self>,
        dir: &Path,
        interval: std::time::Duration,
    ) -> std::thread::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            let mut seen = (fingerprint(&dir, true), fingerprint(&dir, false));
            loop {
                std::thread::sleep(interval);
                let Some(engine) = weak.upgrade() else { return };
                let now = (fingerprint(&dir, true), fingerprint(&dir, false));
                if now.0 != seen.0 {
                    let _ = engine.reload(&dir, "policy:file-watch");
                }
                if now.1 != seen.1 {
                    let _ = engine.reload_config(&dir, "policy:file-watch");
                }
                seen = now;
            }
        })
    }

    /// Reload `dir` on SIGHUP, on a background thread.
    pub fn reload_on_sighup(self: &Arc<Self>, dir: &Path) -> Result<std::thread::JoinHandle<()>> {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
            .map_err(|e| {
                PolicyError::invalid("signal", format!("cannot listen for SIGHUP: {e}"))
            })?;
        let weak = Arc::downgrade(self);
        let dir = dir.to_path_buf();
        Ok(std::thread::spawn(move || {
            for _ in signals.forever() {
                let Some(engine) = weak.upgrade() else { return };
                let _ = engine.reload(&dir, "policy:sighup");
                let _ = engine.reload_config(&dir, "policy:sighup");
            }
        }))
    }

    /// Apply `change` to the settings: written to `policy.json` first (when
    /// the engine has a directory), then recorded, then in force. If the
    /// record cannot be written the old file is put back.
    fn change_config(
        &self,
        by: &str,
        subject: &str,
        reason: String,
        change: impl FnOnce(&mut PolicyConfig),
    ) -> Result<PolicyConfig> {
        let mut active = self.config.write().unwrap_or_else(|p| p.into_inner());
        let mut next = active.clone();
        change(&mut next);
        next.validate()?;
        if let Some(dir) = &self.dir {
            next.save(dir)?;
        }
        let mut record = Record::new(by, &format!("policy.{subject}"), "ok");
        record.subject = subject.into();
        record.reason = reason;
        record.meta = serde_json::json!({ "kind": format!("policy.{subject}"), "persisted": self.dir.is_some() });
        if let Err(e) = self.ledger.append(record) {
            if let Some(dir) = &self.dir {
                let _ = active.save(dir);
            }
            return Err(e.into());
        }
        *active = next.clone();
        Ok(next)
    }

    /// Change the autonomy mode (kept in policy.json, recorded).
    pub fn set_mode(&self, mode: Mode, by: &str) -> Result<()> {
        self.change_config(by, "mode", format!("mode set to {}", mode.as_str()), |c| {
            c.mode = mode
        })
        .map(|_| ())
    }

    /// Switch modification actions on or off (kept in policy.json, recorded).
    pub fn set_modification(&self, enabled: bool, by: &str) -> Result<()> {
        self.change_config(
            by,
            "modification",
            format!("modification_enabled set to {enabled}"),
            |c| c.modification_enabled = enabled,
        )
        .map(|_| ())
    }
}
