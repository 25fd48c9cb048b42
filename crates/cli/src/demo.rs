//! `capsule demo`: the service end to end on embedded defaults. It makes a
//! data directory in a temporary folder, starts the service in-process on
//! free loopback ports, and talks to it over real HTTP and gRPC: scripted
//! thoughts, an allowed and a denied action with their explanations, the
//! kill switch armed and disarmed, then a graceful shutdown, the ledger
//! verified, an inclusion proof checked and the session replayed. Thoughts
//! are recalled by meaning (MiniLM) and one is planned by the local model
//! (SmolLM2); both are fetched first when missing, after saying so.

use crate::client::{ApiClient, Reply};
use anyhow::{bail, Context, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::keys::{create_key_file, load_key_file, KeyStore};
use capsule_ledger::merkle::{leaf_hash, verify_inclusion};
use capsule_ledger::{LogReader, NoteSigner};
use capsule_policy::killswitch::disarm_statement;
use capsule_server::auth::{Role, TokenFile};
use capsule_server::grpc::pb::brain_ai_client::BrainAiClient;
use capsule_server::grpc::pb::{GetStateRequest, StepRequest, StreamStepsRequest};
use capsule_server::service::Service;
use capsule_server::{data, Config};
use clap::Args;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the data directory here instead of a temporary one.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

const THOUGHTS: &[&str] = &[
    "Summarise the audit log for the last hour",
    "Plan the next step of the data migration",
    "Is the backup job healthy?",
    "Draft a reply to the on-call engineer",
];

fn expect(what: &str, r: &Reply, status: u16) -> Result<()> {
    if r.status != status {
        bail!(
            "{what}: expected HTTP {status}, got {}: {}",
            r.status,
            r.body
        );
    }
    Ok(())
}

fn authed<T>(token: &str, msg: T) -> Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

/// Section 7: a calc, a medical and a general task submitted and fetched
/// by ID, the same query again a cache hit, and feedback moving a
/// pattern's confidence.
async fn tasks_section(api: &ApiClient) -> Result<()> {
    use crate::task_cmd::wait_for;
    let wait = std::time::Duration::from_secs(120);
    let mut calc_id = String::new();
    for (query, domain) in [
        ("0.1 + 0.2", Some("calc")),
        ("BMI for 70 kg, 1.75 m", None),
        ("What is the capital of France?", None),
    ] {
        let mut body = json!({ "query": query });
        if let Some(d) = domain {
            body["domain"] = json!(d);
        }
        let r = api.post("/v1/tasks", &body).await?;
        expect("submit", &r, 202)?;
        let b = &r.body;
        let id = b["task_id"].as_str().context("task_id")?.to_string();
        println!(
            "   {query:?} → {} ({} by {}, confidence {:.2}), {} in {:.2} ms; task {id}",
            b["status"].as_str().unwrap_or("?"),
            b["domain"].as_str().unwrap_or("?"),
            b["classification"]["method"].as_str().unwrap_or("?"),
            b["classification"]["confidence"]
                .as_f64()
                .unwrap_or(f64::NAN),
            b["policy_decision"]["outcome"].as_str().unwrap_or("?"),
            b["latency_ms"].as_f64().unwrap_or(f64::NAN),
        );
        let done = wait_for(api, &id, wait).await?;
        expect("get task", &done, 200)?;
        let t = &done.body;
        let answer = t["result"]["answer"]
            .as_str()
            .or(t["error"].as_str())
            .unwrap_or("");
        let answer: String = answer.split_whitespace().collect::<Vec<_>>().join(" ");
        let shown: String = answer.chars().take(150).collect();
        println!(
            "     GET /v1/tasks/{{id}} → {} by the {} bot{} in {:.1} ms: {shown}{}",
            t["status"].as_str().unwrap_or("?"),
            t["result"]["bot"].as_str().unwrap_or("?"),
            t["result"]["model"]
                .as_str()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            t["duration_ms"].as_f64().unwrap_or(f64::NAN),
            if answer.chars().count() > 150 {
                "…"
            } else {
                ""
            }
        );
        if domain == Some("calc") {
            calc_id = id.clone();
            let again = api.post("/v1/tasks", &body).await?;
            expect("submit again", &again, 202)?;
            println!(
                "     the same query again → {} in {:.2} ms, no bot run (result {})",
                again.body["status"].as_str().unwrap_or("?"),
                again.body["latency_ms"].as_f64().unwrap_or(f64::NAN),
                again.body["result_id"].as_str().unwrap_or("?")
            );
        }
    }
    let before =
        api.get(&format!("/v1/tasks/{calc_id}")).await?.body["pattern"]["confidence"].as_f64();
    let r = api
        .post(
            &format!("/v1/tasks/{calc_id}/feedback"),
            &json!({ "outcome": "success" }),
        )
        .await?;
    expect("feedback", &r, 200)?;
    println!(
        "   feedback success on the calc task → its pattern's confidence {:.2} → {:.2} ({} layer, usage {})",
        before.unwrap_or(f64::NAN),
        r.body["pattern"]["confidence"].as_f64().unwrap_or(f64::NAN),
        r.body["pattern"]["layer"].as_str().unwrap_or("?"),
        r.body["pattern"]["usage"]
    );
    Ok(())
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let data = args.keep.unwrap_or_else(|| tmp.path().join("data"));
    println!("Capsule demo: a governed agent runtime, end to end on this machine.");
    println!("(The kernel is a numerical simulation of an open quantum system used as state;");
    println!(" nothing here thinks or feels.)\n");

    // The models live in the shared models directory, so demos and tests
    // fetch them once.
    let models = capsule_models::fetch::shared_models_dir();
    let missing: Vec<_> = capsule_models::registry::ALL
        .into_iter()
        .filter(|m| !capsule_models::status(m, &models).ready)
        .collect();
    if !missing.is_empty() {
        println!(
            "0. The local models are not there yet; running `capsule models fetch --models-dir {}`:",
            models.display()
        );
        crate::models_cmd::fetch_all(&missing, &models, None)?;
        println!();
    }

    let made = data::init(&data)?;
    let tokens_path = data.join("auth/tokens.json");
    let mut tokens = TokenFile::load(&tokens_path)?;
    let agent = tokens.add("demo-agent", Role::Agent)?;
    let guest = tokens.add("guest", Role::Agent)?;
    let approver_token = tokens.add("approvers", Role::Approver)?;
    tokens.save(&tokens_path)?;
    // Two approver keys and a quorum of two, for the held action.
    let keys_dir = data.join("keys");
    let mut policy_config = capsule_policy::PolicyConfig::load(&data::policy(&data))?;
    let mut approvers = Vec::new();
    for name in ["approver-ana", "approver-bo"] {
        let signer = create_key_file(
            &keys_dir.join(format!("{name}.pem")),
            &keys_dir.join(format!("{name}.pub")),
            name,
        )?;
        policy_config.approvers.push(signer.verifier().to_string());
        approvers.push(signer);
    }
    policy_config.approval_quorum = 2;
    policy_config.save(&data::policy(&data))?;
    // One extra rule so the demo can show a denial next to an allowance.
    std::fs::write(
        data::policy(&data).join("demo.cedar"),
        "// Demo rule: the guest agent may step the kernel but not measure it.\n\
         @id(\"guest-may-not-measure\")\n\
         forbid (principal == Capsule::Agent::\"guest\", action == Capsule::Action::\"brain.measure\", resource);\n",
    )?;
    println!(
        "1. capsule init {}: config, ledger keys, default policies, operator token;",
        data.display()
    );
    println!("   tokens for agents demo-agent and guest; one demo rule (guest-may-not-measure);");
    println!("   two approver keys in policy.json with an approval quorum of 2.");

    let env = [
        ("CAPSULE_SERVER__HTTP", "127.0.0.1:0"),
        ("CAPSULE_SERVER__GRPC", "127.0.0.1:0"),
        ("CAPSULE_SERVER__METRICS", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([(
        "CAPSULE_MEMORY__MODELS".to_string(),
        models.display().to_string(),
    )]);
    let config = Config::load(&data::config(&data), env)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (proven_seq, proof) = runtime.block_on(async {
        let server = capsule_server::start(Service::open(&data, config)?).await?;
        let bound = server.bound;
        println!(
            "2. capsule up (in-process): HTTP {}  gRPC {}  metrics {}\n",
            bound.http, bound.grpc, bound.metrics
        );
        let api = ApiClient::new(&format!("http://{}", bound.http), &agent)?;
        let ops = api.as_token(&made.operator_token);
        let guest_api = api.as_token(&guest);

        println!("3. Thoughts over HTTP (POST /v1/think, deterministic hash planner):");
        println!("   {:<44} {:<14} {:>5} {:>9} {:>9} {:>8}  ledger", "text", "op", "step", "entropy", "purity", "measured");
        let mut last = Value::Null;
        for text in THOUGHTS {
            let r = api.post("/v1/think", &json!({ "text": text })).await?;
            expect("think", &r, 200)?;
            let b = &r.body;
            println!(
                "   {:<44} {:<14} {:>5} {:>9.6} {:>9.6} {:>8}  #{}",
                text,
                b["op"].as_str().unwrap_or("?"),
                b["step"].as_u64().unwrap_or(0),
                b["entropy"].as_f64().unwrap_or(f64::NAN),
                b["purity"].as_f64().unwrap_or(f64::NAN),
                b["measured_state"].as_u64().map_or("-".into(), |i| format!("|{i}⟩")),
                b["ledger_seq"]
            );
            last = r.body;
        }
        println!("   policy on each: {}", last["decision"]["explanation"].as_str().unwrap_or(""));

        println!("\n   The local planner (SmolLM2-135M, decoding constrained to the plan schema) with recall (MiniLM):");
        let r = api
            .post("/v1/think", &json!({ "text": "Is the nightly backup healthy? Check it now.", "planner": "local" }))
            .await?;
        // A 135M model's rationale may stray from the request; the guardian
        // then refuses to act on the plan (drift > 0.35), and the demo says so.
        if r.status == 403 && r.body["decision"]["reason"] == "guardian_drift" {
            println!(
                "   local → HTTP 403: the guardian refused the plan: its rationale drifts {:.2} from the request (> 0.35); nothing ran",
                r.body["decision"]["drift"]["value"].as_f64().unwrap_or(f64::NAN)
            );
        } else {
            expect("think with the local planner", &r, 200)?;
            println!(
                "   {} → {} step {}; rationale: {:?} (drift {:.2})",
                r.body["planner"].as_str().unwrap_or("?"),
                r.body["op"].as_str().unwrap_or("?"),
                r.body["step"],
                r.body["rationale"].as_str().unwrap_or(""),
                r.body["decision"]["drift"]["value"].as_f64().unwrap_or(f64::NAN)
            );
            for h in r.body["recall"].as_array().into_iter().flatten().take(3) {
                println!("     recalled {:.3}  {}", h["score"].as_f64().unwrap_or(f64::NAN), h["text"].as_str().unwrap_or(""));
            }
        }
        let r = api
            .post("/v1/memory/search", &json!({ "query": "database move", "k": 1 }))
            .await?;
        expect("memory search", &r, 200)?;
        println!(
            "   POST /v1/memory/search \"database move\" → recalled {:.3}  {:?}",
            r.body["hits"][0]["score"].as_f64().unwrap_or(f64::NAN),
            r.body["hits"][0]["text"].as_str().unwrap_or("")
        );

        println!("\n4. The same kernel over gRPC (capsule.brain.v1.BrainAI):");
        let mut grpc = BrainAiClient::connect(format!("http://{}", bound.grpc)).await?;
        let mut stream = grpc
            .stream_steps(authed(&agent, StreamStepsRequest { limit: 1 })?)
            .await?
            .into_inner();
        let gw: Vec<f64> = (0..8).map(|j| (j as f64 * 0.7).sin() / 2.0).collect();
        let step = grpc
            .step(authed(&agent, StepRequest { global_workspace: gw, measure: false, session: None })?)
            .await?
            .into_inner();
        let streamed = stream.message().await?.context("StreamSteps ended early")?;
        let state = grpc.get_state(authed(&agent, GetStateRequest {})?).await?.into_inner();
        println!(
            "   Step → step {} entropy {:.6} trace error {:.1e} valid {}; StreamSteps saw step {}; GetState: d = {}, step {}",
            step.step, step.entropy, step.trace_error, step.is_valid, streamed.step, state.dimension, state.step
        );

        println!("\n5. An allowed and a denied action, with their explanations:");
        let r = api.post("/v1/think", &json!({ "text": "Check the sensor", "measure": true })).await?;
        expect("allowed measure", &r, 200)?;
        println!("   demo-agent brain.measure → {} ({})", r.body["decision"]["outcome"].as_str().unwrap_or("?"), r.body["decision"]["explanation"].as_str().unwrap_or(""));
        let proven_seq = r.body["ledger_seq"].as_u64().context("ledger_seq")?;
        let r = guest_api.post("/v1/think", &json!({ "text": "Check the sensor", "measure": true })).await?;
        expect("denied measure", &r, 403)?;
        println!("   guest brain.measure      → HTTP 403 {} ({})", r.body["decision"]["outcome"].as_str().unwrap_or("?"), r.body["reason"].as_str().unwrap_or(""));
        let r = api
            .post("/v1/policy/evaluate", &json!({ "principal": "agent:demo-agent", "action": "system.exec", "resource": "command:rm" }))
            .await?;
        expect("evaluate", &r, 200)?;
        println!("   demo-agent system.exec   → {} ({})", r.body["decision"]["outcome"].as_str().unwrap_or("?"), r.body["decision"]["explanation"].as_str().unwrap_or(""));
        let r = api.post("/v1/think", &json!({ "text": "x", "gw": vec![0.5; 61] })).await?;
        expect("critic", &r, 400)?;
        println!("   a plan with 61 workspace values → HTTP 400, field {}: {}", r.body["field"], r.body["reason"].as_str().unwrap_or(""));

        println!("\n6. A held action, approved by a quorum of two and then run once:");
        let r = ops.call(reqwest::Method::PUT, "/v1/policy/mode", Some(&json!({ "mode": "supervised" }))).await?;
        expect("supervised mode", &r, 200)?;
        let gw = vec![0.2, -0.1, 0.3];
        let r = api.post("/v1/kernel/step", &json!({ "gw": gw, "risk": 0.5 })).await?;
        expect("held step", &r, 202)?;
        let id = r.body["approval_id"].as_i64().context("approval_id")?;
        let digest = r.body["digest"].as_str().context("digest")?.to_string();
        println!(
            "   supervised mode; a kernel step stating risk 0.5 (MODERATE → level {}) → HTTP 202, approval {id}, quorum {}",
            r.body["decision"]["assessment"]["level"].as_str().unwrap_or("?").to_uppercase(),
            r.body["quorum"]
        );
        println!("   ({})", r.body["decision"]["explanation"].as_str().unwrap_or(""));
        let approver_api = api.as_token(&approver_token);
        let mut last = Value::Null;
        for signer in &approvers {
            let statement = capsule_policy::approvals::approval_statement(id, &digest);
            let body = json!({ "key": signer.verifier().to_string(), "signature": B64.encode(signer.sign(statement.as_bytes())) });
            let r = approver_api.post(&format!("/v1/approvals/{id}/sign"), &body).await?;
            expect("sign", &r, 200)?;
            println!("   {} signs → {} of {} signatures, status {}", signer.verifier().name(), r.body["approvers"].as_array().map_or(0, Vec::len), r.body["quorum"], r.body["status"].as_str().unwrap_or("?"));
            last = r.body;
        }
        if last["status"] != "released" {
            bail!("the approved step did not run: {last}");
        }
        println!(
            "   run once on release: kernel step {} (entropy {:.6}); ledger entries #{} (the step) and #{} (approval.release)",
            last["released"]["result"]["step"],
            last["released"]["result"]["entropy"].as_f64().unwrap_or(f64::NAN),
            last["released"]["ledger_seq"],
            last["released"]["release_seq"]
        );
        let r = ops.call(reqwest::Method::PUT, "/v1/policy/mode", Some(&json!({ "mode": "semi_autonomous" }))).await?;
        expect("semi_autonomous mode", &r, 200)?;

        println!("\n7. The task mesh (POST /v1/tasks; results fetched by content ID):");
        tasks_section(&api).await?;

        println!("\n8. The kill switch:");
        let r = ops.post("/v1/kill", &json!({ "reason": "demo: stop everything" })).await?;
        expect("arm", &r, 200)?;
        let before = api.get("/v1/kernel/state").await?.body["step"].clone();
        let r = api.post("/v1/think", &json!({ "text": "keep going" })).await?;
        expect("think while armed", &r, 423)?;
        let after = api.get("/v1/kernel/state").await?.body["step"].clone();
        println!("   armed by the operator; a think → HTTP 423 ({}); kernel step stays {before} → {after}", r.body["reason"].as_str().unwrap_or(""));
        let nonce = ops.get("/v1/kill").await?.body["nonce"].as_str().context("nonce")?.to_string();
        let signer = load_key_file(&made.operator_key, "operator")?;
        let body = json!({
            "signatures": [{ "key": signer.verifier().to_string(), "signature": B64.encode(signer.sign(disarm_statement(&nonce).as_bytes())) }],
            "reason": "demo: resume",
        });
        let r = ops.delete("/v1/kill", &body).await?;
        expect("disarm", &r, 200)?;
        let r = api.post("/v1/think", &json!({ "text": "resume work" })).await?;
        expect("think after disarm", &r, 200)?;
        println!("   disarmed with the operator key's signature over the arming nonce; thinking resumes at step {}", r.body["step"]);

        let r = api.get(&format!("/v1/audit/proof/{proven_seq}")).await?;
        expect("proof", &r, 200)?;
        let proof = r.body;
        server.stop().await?;
        println!("\n9. Graceful shutdown: requests drained, ledger flushed and checkpointed.");
        anyhow::Ok((proven_seq, proof))
    })?;

    let dir = data::ledger(&data);
    let reader = LogReader::open(&dir)?;
    let key = KeyStore::new(&dir.join("keys"), "ledger").load_public(1)?;
    let report = capsule_ledger::verify(&dir, &key)?;
    let decisions = (0..reader.size())
        .map(|s| reader.entry(s))
        .filter(|e| {
            e.as_ref()
                .map_or(true, |e| e.record.meta["kind"] == "policy.decision")
        })
        .count();
    let leaf = leaf_hash(&reader.entry(proven_seq)?.encode());
    let hex32 = |v: &Value| -> Result<[u8; 32]> {
        let mut h = [0u8; 32];
        hex::decode_to_slice(v.as_str().context("hash")?, &mut h)?;
        Ok(h)
    };
    let path = proof["path"]
        .as_array()
        .context("path")?
        .iter()
        .map(hex32)
        .collect::<Result<Vec<_>>>()?;
    let size = proof["tree_size"].as_u64().context("tree_size")?;
    let root = hex32(&proof["root"])?;
    let proof_ok = verify_inclusion(proven_seq, size, &leaf, &path, &root).is_ok()
        && reader.root(size)? == root;
    println!(
        "10. Ledger: {} entries ({} policy decisions), {} signed checkpoints; verified against {key}.",
        report.entries, decisions, report.checkpoints
    );
    println!(
        "    Inclusion proof of entry #{proven_seq} (the allowed measurement): {} hashes to the root of size {size}: {}.",
        path.len(),
        if proof_ok { "valid" } else { "INVALID" }
    );
    let replayed = capsule_cortex::replay::replay(size, 0, |seq| reader.entry(seq))?;
    println!(
        "11. Replay (capsule replay): {} kernel operations re-run from the ledger alone, {} model reply re-checked, no model loaded: {}.",
        replayed.steps.len(),
        replayed.model_replies,
        if replayed.matches() { "same plans, same kernel states bit for bit" } else { "DIFFERS" }
    );
    println!(
        "\nDone in {:.1} s. ledger verified",
        started.elapsed().as_secs_f64()
    );
    Ok(if proof_ok && replayed.matches() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
