//! `capsule policy …`, `capsule kill …`, `capsule approvals …`.

use anyhow::{bail, Context, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::keys::{create_key_file, load_key_file};
use capsule_ledger::note::NoteSigner;
use capsule_policy::approvals::{approval_statement, ApprovalQueue};
use capsule_policy::engine::{evaluate, Circumstances};
use capsule_policy::killswitch::{disarm_statement, KillSwitch, OperatorSignature, TRIGGER_FILE};
use capsule_policy::{DecisionRequest, Mode, PolicyConfig, RuleSet};
use capsule_server::data as data_dir;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct PolicyArgs {
    /// The data directory (default: $CAPSULE_DATA, else ./capsule-data).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse and validate the *.cedar files of DIR against the schema.
    Check { dir: PathBuf },
    /// Decide one request (nothing is recorded) and explain the decision.
    Eval(EvalArgs),
    /// Re-decide the decisions recorded in a ledger under the policies of NEW_DIR; print each that would change.
    Replay {
        new_dir: PathBuf,
        /// The ledger directory (default: DATA/ledger).
        #[arg(long)]
        ledger: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Make an operator or approver key: DIR/NAME.pem (0600) and DIR/NAME.pub.
    Keygen {
        name: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print the schema, the default policy set, or the risk and safety
    /// level of every action (the built-in table with DATA/policy/policy.json's overrides).
    Show {
        #[arg(value_parser = ["schema", "defaults", "levels"])]
        what: String,
        #[arg(long)]
        json: bool,
    },
    /// Switch modification actions (selfedit.*) on or off: written to
    /// DATA/policy/policy.json atomically; a running service reloads it and
    /// records the change; without one, the change is recorded here.
    Modification {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    principal: String,
    #[arg(long)]
    action: String,
    #[arg(long)]
    resource: String,
    /// More request fields as JSON: {"lane", "level", "affect": {"confidence", "empathy", "safety"}, "risk", "drift", "args"}.
    #[arg(long, default_value = "{}")]
    context: String,
    /// Policy directory (default: DATA/policy if it holds *.cedar files, else the defaults).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Autonomy mode (default: policy.json's, else semi_autonomous).
    #[arg(long)]
    mode: Option<String>,
    /// Record the decision in DATA/ledger and queue it in DATA/approvals.db when it needs approval.
    #[arg(long)]
    record: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(args: PolicyArgs) -> Result<ExitCode> {
    let data = data_dir::data_dir(args.data.as_deref());
    match args.command {
        PolicyCommand::Check { dir } => match RuleSet::load_dir(&dir) {
            Ok(rules) => {
                println!(
                    "ok: {} policies, version {}",
                    rules.policies().len(),
                    rules.version()
                );
                for p in rules.policies() {
                    println!("  {:<28} {:<6} {}:{}", p.id, p.effect, p.file, p.line);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("rejected: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        PolicyCommand::Eval(a) => eval(&data, a),
        PolicyCommand::Replay {
            new_dir,
            ledger,
            json,
        } => {
            let candidate = RuleSet::load_dir(&new_dir)?;
            let ledger = ledger.unwrap_or_else(|| data_dir::ledger(&data));
            let report = capsule_policy::replay::replay(&ledger, &candidate)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{} decisions of {} entries replayed under version {}: {} would change",
                    report.decisions,
                    report.entries,
                    report.candidate_version,
                    report.changes.len()
                );
                for c in &report.changes {
                    println!(
                        "  seq {:>8}  {} {} {}: {} → {} ({})",
                        c.seq,
                        c.request.principal,
                        c.request.action,
                        c.request.resource,
                        c.recorded.as_str(),
                        c.candidate.outcome.as_str(),
                        c.candidate.explanation
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Keygen { name, out } => {
            std::fs::create_dir_all(&out)?;
            let (private, public) = (
                out.join(format!("{name}.pem")),
                out.join(format!("{name}.pub")),
            );
            let signer = create_key_file(&private, &public, &name)?;
            println!("{}", signer.verifier());
            eprintln!(
                "private key: {} (mode 0600); add the line above to policy.json",
                private.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Show { what, json } if what == "levels" => {
            let config = PolicyConfig::load(&data_dir::policy(&data))?;
            let table = config.levels.table();
            if json {
                let rows: Vec<_> = table
                    .iter()
                    .map(|(a, r, l, s)| json!({"action": a, "risk": r, "value": r.value(), "level": l, "source": s}))
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<18} {:<13} {:>5}  {:<9} source",
                    "action", "risk", "", "level"
                );
                for (a, r, l, s) in table {
                    println!(
                        "{a:<18} {:<13} {:>5}  {:<9} {}",
                        r.as_str().to_uppercase(),
                        r.value(),
                        l.as_str().to_uppercase(),
                        match s {
                            capsule_policy::RiskSource::PolicyJson => "policy.json",
                            _ => "built in",
                        }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Show { what, .. } => {
            print!(
                "{}",
                if what == "schema" {
                    capsule_policy::rules::SCHEMA
                } else {
                    capsule_policy::rules::DEFAULT_POLICIES
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Modification { state } => modification(&data, state == "on"),
    }
}

fn modification(data: &Path, enabled: bool) -> Result<ExitCode> {
    let dir = data_dir::policy(data);
    let mut config = PolicyConfig::load(&dir)?;
    config.modification_enabled = enabled;
    // A running service holds the ledger; it sees the file change and
    // records the reload. Otherwise the change is recorded here.
    match data_dir::try_open_ledger(data)? {
        Some(ledger) => {
            config.save(&dir)?;
            let mut record = capsule_ledger::Record::new(&who(), "policy.modification", "ok");
            record.subject = "modification".into();
            record.reason = format!("modification_enabled set to {enabled}");
            record.meta = json!({"kind": "policy.modification", "persisted": true});
            let receipt = ledger.append(record)?;
            ledger.close()?;
            println!(
                "modification_enabled = {enabled} (policy.json written; ledger entry {})",
                receipt.seq
            );
        }
        None => {
            config.save(&dir)?;
            println!("modification_enabled = {enabled} (policy.json written; the running service reloads and records it)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(data: &Path, a: EvalArgs) -> Result<ExitCode> {
    let (rules, config) = match &a.dir {
        Some(dir) => (RuleSet::load_dir(dir)?, PolicyConfig::load(dir)?),
        None => data_dir::load_policy(data)?,
    };
    let mut fields: serde_json::Value =
        serde_json::from_str(&a.context).context("--context is not JSON")?;
    let obj = fields
        .as_object_mut()
        .context("--context must be a JSON object")?;
    for key in ["principal", "action", "resource"] {
        if obj.contains_key(key) {
            bail!("--context must not set {key}; use --{key}");
        }
    }
    obj.insert("principal".into(), json!(a.principal));
    obj.insert("action".into(), json!(a.action));
    obj.insert("resource".into(), json!(a.resource));
    let req: DecisionRequest = serde_json::from_value(fields).context("--context")?;
    let state = data_dir::state(data);
    let kill = capsule_policy::killswitch::read_state(&state)?.is_some_and(|s| s.armed)
        || state.join(TRIGGER_FILE).exists();
    let circumstances = Circumstances {
        kill_switch: kill,
        mode: match &a.mode {
            Some(m) => Mode::parse(m)?,
            None => config.mode,
        },
        modification_enabled: config.modification_enabled,
        guardian: config.guardian,
        levels: config.levels.clone(),
    };
    let d = evaluate(&rules, &circumstances, &req)?;
    let mut recorded = json!(null);
    if a.record {
        let ledger = data_dir::open_ledger(data)?;
        let receipt = ledger.append(capsule_policy::engine::decision_record(
            &req,
            &circumstances,
            &d,
        ))?;
        let mut approval = None;
        if d.outcome.needs_approval() {
            let queue = ApprovalQueue::open(&data_dir::approvals(data))?;
            let request = capsule_policy::approvals::ApprovalRequest {
                action: req.action.clone(),
                actor: req.principal.clone(),
                resource: req.resource.clone(),
                args: req.args.clone(),
                policy_version: d.policy_version.clone(),
            };
            approval = Some(queue.enqueue_for(
                &request,
                d.outcome.as_str(),
                config.approval_quorum,
                config.approval_ttl_s,
            )?);
        }
        ledger.close()?;
        recorded = json!({"ledger_seq": receipt.seq, "approval_id": approval});
    }
    if a.json {
        let mut v = serde_json::to_value(&d)?;
        if a.record {
            v["recorded"] = recorded;
        }
        println!("{v}");
    } else {
        if a.record {
            println!("recorded:   {recorded}");
        }
        println!("decision:   {}", d.outcome.as_str());
        println!("reason:     {}", d.reason);
        println!(
            "policies:   {}",
            if d.policies.is_empty() {
                "(none)".into()
            } else {
                d.policies.join(", ")
            }
        );
        println!(
            "autonomy:   {}",
            d.autonomy_rule
                .map_or("(not reached)".into(), |r| format!("rule {r}"))
        );
        println!("why:        {}", d.explanation);
        if let Some(w) = &d.would_pass {
            println!("would pass: {w}");
        }
        if let Some(x) = d.execution {
            println!(
                "execution:  {}",
                serde_json::to_value(x)?.as_str().unwrap_or_default()
            );
        }
        println!(
            "version:    {} (mode {})",
            d.policy_version,
            d.mode.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct KillArgs {
    /// The data directory (default: $CAPSULE_DATA, else ./capsule-data).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: KillCommand,
}

#[derive(Subcommand)]
enum KillCommand {
    /// Arm: every decision is blocked until an operator disarms.
    Arm {
        #[arg(long, default_value = "armed from the command line")]
        reason: String,
    },
    /// Disarm with operator key files (as many as the disarm quorum).
    Disarm {
        /// Operator private key files (NAME.pem from `capsule policy keygen`).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, default_value = "disarmed from the command line")]
        reason: String,
    },
    /// Show and confirm the state.
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

pub fn run_kill(args: KillArgs) -> Result<ExitCode> {
    let data = data_dir::data_dir(args.data.as_deref());
    let state = data_dir::state(&data);
    let Some(ledger) = data_dir::try_open_ledger(&data)? else {
        if let KillCommand::Arm { .. } = args.command {
            std::fs::create_dir_all(&state)?;
            std::fs::write(state.join(TRIGGER_FILE), format!("armed by {}\n", who()))?;
            println!(
                "a running service holds the ledger; wrote {} — it arms within one tick",
                state.join(TRIGGER_FILE).display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        bail!(
            "a running service holds the ledger in {}; use its API",
            data_dir::ledger(&data).display()
        );
    };
    let ks = KillSwitch::open(&state, ledger.clone())?;
    let code = match args.command {
        KillCommand::Arm { reason } => {
            let st = ks.arm(&who(), &reason)?;
            println!(
                "armed by {} (ledger entry {})",
                st.by,
                st.ledger_seq.map_or("-".into(), |s| s.to_string())
            );
            ExitCode::SUCCESS
        }
        KillCommand::Disarm { keys, reason } => {
            let (_, config) = data_dir::load_policy(&data)?;
            let nonce = ks.status()?.state.nonce;
            let signatures = keys
                .iter()
                .map(|path| {
                    let name = path
                        .file_stem()
                        .map_or("operator".into(), |s| s.to_string_lossy().into_owned());
                    let signer = load_key_file(path, &name)?;
                    Ok(OperatorSignature {
                        key: signer.verifier().to_string(),
                        signature: B64.encode(signer.sign(disarm_statement(&nonce).as_bytes())),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let st = ks.disarm(
                &signatures,
                &config.operator_keys()?,
                config.disarm_quorum as usize,
                &reason,
            )?;
            println!(
                "disarmed by {} (ledger entry {})",
                st.by,
                st.ledger_seq.map_or("-".into(), |s| s.to_string())
            );
            ExitCode::SUCCESS
        }
        KillCommand::Status { json } => {
            let status = ks.status()?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                let s = &status.state;
                println!(
                    "{} by {} ({}); trigger file {}",
                    if s.armed { "ARMED" } else { "disarmed" },
                    s.by,
                    s.reason,
                    if status.trigger_file_present {
                        "present"
                    } else {
                        "absent"
                    }
                );
            }
            ExitCode::SUCCESS
        }
    };
    ledger.close()?;
    Ok(code)
}

#[derive(Args)]
pub struct ApprovalsArgs {
    /// The data directory (default: $CAPSULE_DATA, else ./capsule-data).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// List approvals (pending ones unless --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one approval with its digest and signers.
    Show { id: i64 },
    /// Sign an approval with an approver key file. With a token (--token
    /// or $CAPSULE_TOKEN, an approver's) it signs through the running
    /// service, which runs the action once the quorum is complete;
    /// without one it signs in DATA/approvals.db (the service must be
    /// stopped; it runs approved actions when it starts).
    Sign {
        id: i64,
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        conn: crate::client::Connection,
    },
}

pub fn run_approvals(args: ApprovalsArgs) -> Result<ExitCode> {
    let data = data_dir::data_dir(args.data.as_deref());
    let mut queue = ApprovalQueue::open(&data_dir::approvals(&data))?;
    match args.command {
        ApprovalsCommand::List { all, json } => {
            let items = queue.list(if all { None } else { Some("pending") })?;
            for a in &items {
                if json {
                    println!("{}", serde_json::to_string(a)?);
                } else {
                    println!(
                        "{:>6}  {:<9} {}/{}  {} {} {} ({})",
                        a.id,
                        a.status,
                        a.approvers.len(),
                        a.quorum,
                        a.request.actor,
                        a.request.action,
                        a.request.resource,
                        a.outcome
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Show { id } => {
            println!("{}", serde_json::to_string_pretty(&queue.show(id)?)?);
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Sign { id, key, conn } => {
            let name = key
                .file_stem()
                .map_or("approver".into(), |s| s.to_string_lossy().into_owned());
            let signer = load_key_file(&key, &name)?;
            if conn.has_token() {
                return sign_through_service(id, &signer, conn);
            }
            let approval = queue.show(id)?;
            let signature =
                B64.encode(signer.sign(approval_statement(id, &approval.digest).as_bytes()));
            let (_, config) = data_dir::load_policy(&data)?;
            let ledger = data_dir::open_ledger(&data)?;
            let after = queue.sign(
                id,
                &signer.verifier().to_string(),
                &signature,
                &config.approver_keys()?,
                &ledger,
            )?;
            ledger.close()?;
            println!(
                "approval {id}: {} of {} signatures, {}",
                after.approvers.len(),
                after.quorum,
                after.status
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `capsule approvals sign` against a running service.
fn sign_through_service(
    id: i64,
    signer: &capsule_ledger::note::KeySigner,
    conn: crate::client::Connection,
) -> Result<ExitCode> {
    let client = conn.client()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let shown = client.get(&format!("/v1/approvals/{id}")).await?;
        if shown.status != 200 {
            bail!("approval {id}: HTTP {}: {}", shown.status, shown.body);
        }
        let digest = shown.body["digest"].as_str().context("digest")?;
        let body = json!({
            "key": signer.verifier().to_string(),
            "signature": B64.encode(signer.sign(approval_statement(id, digest).as_bytes())),
        });
        let r = client
            .post(&format!("/v1/approvals/{id}/sign"), &body)
            .await?;
        if r.status != 200 {
            bail!(
                "approval {id}: HTTP {} {}: {}",
                r.status,
                r.body["error"].as_str().unwrap_or("error"),
                r.body["reason"].as_str().unwrap_or("")
            );
        }
        println!(
            "approval {id}: {} of {} signatures, {}",
            r.body["approvers"].as_array().map_or(0, Vec::len),
            r.body["quorum"],
            r.body["status"].as_str().unwrap_or("?")
        );
        if let Some(rel) = r.body.get("released") {
            println!(
                "ran once: kernel step {} (ledger entries {} and {})",
                rel["result"]["step"], rel["ledger_seq"], rel["release_seq"]
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
