//! The OpenAPI 3.1 document served at `/openapi.json`, built from one
//! route table (which is also the documentation of the roles each route
//! needs) and the table of what each route answers, and a docs page that
//! renders it without any external script. The router serves exactly the
//! routes of [`ROUTES`] (a test holds `http::endpoints` to that set), and
//! every status a route can answer is listed with its body schema: success
//! bodies from [`REPLIES`], errors as `{error, field, reason}`.

use serde_json::{json, Value};

/// One route: method, path (OpenAPI form), roles, summary, request schema.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub roles: &'static str,
    pub summary: &'static str,
    pub body: Option<&'static str>,
}

const fn r(
    method: &'static str,
    path: &'static str,
    roles: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
) -> Route {
    Route {
        method,
        path,
        roles,
        summary,
        body,
    }
}

pub const ROUTES: &[Route] = &[
    r("post", "/v1/think", "agent, operator", "Think: plan, drift, critic, policy, kernel step, memory, audit. Reply has entropy, measured_state, trace_error, valid, rationale, recall (top-k earlier thinks with scores), decision (with level, risk and their source, and drift) and ledger_seq. 202: held for approval (approval_id, digest, quorum, status pending); it runs once when the quorum signs. 400 critic_rejected names the field; 403 policy_denied explains; 423 kill_switch.", Some("ThinkRequest")),
    r("post", "/v1/memory/search", "any", "Semantic search of episodic memory: the k (1..=100, default 5) events nearest to query by embedding cosine, optionally filtered by kind and lane; each hit has event_id, score, kind, lane, glyph, ts and text.", Some("SearchRequest")),
    r("get", "/v1/state", "any", "Kernel observables, kill switch, mode, modification switch, drift per lane (EMA, alpha 0.2; warn above 0.20), policy version, ledger and memory sizes.", None),
    r("get", "/v1/kernel/state", "any", "Kernel observables (SPEC K4).", None),
    r("post", "/v1/kernel/step", "agent, operator", "One kernel step under gw, checked by policy and recorded; 202 when held for approval.", Some("StepRequest")),
    r("get", "/v1/sessions", "any", "The kernels by session (think and step take an optional session; main by default): name, steps, state (live or snapshotted), last_use (ns since the epoch), snapshot (store object of the latest eviction) and snapshot_seq (its ledger entry).", None),
    r("post", "/v1/kernel/reset", "operator", "Reset the kernel to its ground state (clears a halt); recorded. An optional body {session} names the session (default main).", Some("ResetRequest")),
    r("get", "/v1/kernel/dump", "operator", "The kernel snapshot (SPEC K7), base64.", None),
    r("get", "/v1/kill", "any", "Kill-switch state, confirmed against its state file.", None),
    r("post", "/v1/kill", "operator", "Arm the kill switch.", Some("ArmRequest")),
    r("delete", "/v1/kill", "operator", "Disarm with operator signatures over the arming's nonce (text: \"capsule kill disarm\\n<nonce>\\n\").", Some("DisarmRequest")),
    r("get", "/v1/audit", "any", "Ledger entries; query from (default: the last page) and limit (1..=audit_page_max).", None),
    r("get", "/v1/audit/checkpoint", "any", "A fresh signed checkpoint (C2SP signed note).", None),
    r("get", "/v1/audit/proof/{seq}", "any", "RFC 9162 inclusion proof of entry seq; query size (default: now).", None),
    r("get", "/v1/audit/consistency/{old}/{new}", "any", "RFC 9162 consistency proof between two tree sizes.", None),
    r("get", "/v1/objects/{id}", "any", "The verified bytes of a stored object.", None),
    r("get", "/v1/policy", "any", "Active policy version, mode, guardian, quorums and keys.", None),
    r("put", "/v1/policy/mode", "operator", "Set the autonomy mode (supervised, semi_autonomous, autonomous); written to policy.json and recorded.", Some("ModeRequest")),
    r("put", "/v1/policy/modification", "operator", "Switch modification actions (selfedit.*) on or off; written to policy.json and recorded.", Some("ModificationRequest")),
    r("get", "/v1/affect", "any", "The seven affect parameters with their thresholds and where each value came from (config, operator).", None),
    r("put", "/v1/affect", "operator", "Set affect parameters (the others stay); kept in state/affect.json and recorded.", Some("Affect")),
    r("post", "/v1/policy/evaluate", "agent, approver, operator", "Decide a request without recording it.", Some("DecisionRequest")),
    r("get", "/v1/approvals", "any", "Approvals; query status (pending by default, or all).", None),
    r("get", "/v1/approvals/{id}", "any", "One approval: request, signatures, status and, once run, the result and its ledger entries.", None),
    r("post", "/v1/approvals/{id}/sign", "approver, operator", "Sign an approval (Ed25519 over \"capsule approval v1\\n<id>\\n<digest>\\n\"); the signature that completes the quorum runs a held think or kernel step once, and the reply carries it (released).", Some("SignRequest")),
    r("post", "/v1/tasks", "agent, operator", "Submit a task (SPEC T1): query, optional domain (calc, medical, kernel, general; classified by MiniLM similarity with a keyword fallback when absent), class_path, params, user_id, lane. 202 with task_id (the content ID of domain, class_path, normalised query and params), status (queued, cache_hit, pending_approval, blocked), domain, classification {domain, confidence, method}, policy_decision, latency_ms and ledger_seq; a reused answer names reused_from. 503 queue_full with Retry-After when the topic's queue is full (nothing written).", Some("TaskRequest")),
    r("get", "/v1/tasks/{id}", "any", "A task by ID: status (queued, running, done, failed, blocked, pending_approval), domain, result_id, result (the stored artifact: answer, data, citations, verification, bot, model, label), pattern {layer, confidence, usage}, ledger (its entries), error, cache_hits, trace.", None),
    r("post", "/v1/tasks/{id}/feedback", "agent, operator", "Feedback on a done task's answer: success adds 0.05 to its pattern's confidence, failure takes 0.10; recorded. 409 when the task is not done or learning is off.", Some("FeedbackRequest")),
    r("get", "/v1/patterns", "any", "Pattern memory: task_id, domain, layer (immediate, pattern, archive), confidence, usage, last_used_ns, result_id; query domain and layer filter.", None),
    r("post", "/v1/patterns/maintain", "operator", "Run pattern maintenance now: promote (confidence >= 0.75, usage >= 3), archive (unused 90 days), prune (immediate, confidence < 0.2, usage < 2); each change is recorded.", None),
    r("get", "/v1/mesh", "any", "The mesh: dispatch, learning and external-action flags, workers, queue depth and capacity per topic, fold-guard trips.", None),
    r("put", "/v1/mesh/dispatch", "operator", "Switch dispatch on or off (off: log-only mode, tasks stay queued); recorded.", Some("DispatchRequest")),
    r("get", "/healthz", "none", "Liveness.", None),
    r("get", "/readyz", "none", "Readiness: 200 once serving, 503 before and while shutting down.", None),
    r("get", "/openapi.json", "none", "This document.", None),
    r("get", "/docs", "none", "This document as an HTML page.", None),
];

/// A success body: JSON of a named schema, or another media type.
#[derive(Clone, Copy)]
pub enum Body {
    Json(&'static str),
    Media(&'static str),
}

/// What one route answers besides errors: its success statuses and
/// bodies, and the error statuses particular to it. The statuses every
/// route of its kind can answer are added by [`error_statuses`].
pub struct Reply {
    pub method: &'static str,
    pub path: &'static str,
    pub ok: &'static [(u16, Body)],
    pub errors: &'static [u16],
}

const fn reply(
    method: &'static str,
    path: &'static str,
    ok: &'static [(u16, Body)],
    errors: &'static [u16],
) -> Reply {
    Reply {
        method,
        path,
        ok,
        errors,
    }
}

use Body::{Json as J, Media};

/// One line per route of [`ROUTES`]: 404 unknown id, 409 conflict (halted
/// kernel, approval or kill switch not in the right state), 423 kill
/// switch armed, 502 planner failed upstream, 503 ledger unavailable.
pub const REPLIES: &[Reply] = &[
    reply(
        "post",
        "/v1/think",
        &[(200, J("ThinkReply")), (202, J("Held"))],
        &[409, 423, 502, 503],
    ),
    reply("post", "/v1/memory/search", &[(200, J("SearchReply"))], &[]),
    reply("get", "/v1/state", &[(200, J("State"))], &[]),
    reply("get", "/v1/kernel/state", &[(200, J("KernelState"))], &[]),
    reply(
        "post",
        "/v1/kernel/step",
        &[(200, J("StepReply")), (202, J("Held"))],
        &[409, 423, 503],
    ),
    reply(
        "post",
        "/v1/kernel/reset",
        &[(200, J("ResetReply"))],
        &[423, 503],
    ),
    reply("get", "/v1/kernel/dump", &[(200, J("KernelDump"))], &[]),
    reply("get", "/v1/sessions", &[(200, J("Sessions"))], &[]),
    reply("get", "/v1/kill", &[(200, J("KillStatus"))], &[409]),
    reply("post", "/v1/kill", &[(200, J("KillState"))], &[409, 503]),
    reply("delete", "/v1/kill", &[(200, J("KillState"))], &[409, 503]),
    reply("get", "/v1/audit", &[(200, J("AuditPage"))], &[]),
    reply(
        "get",
        "/v1/audit/checkpoint",
        &[(200, J("Checkpoint"))],
        &[503],
    ),
    reply(
        "get",
        "/v1/audit/proof/{seq}",
        &[(200, J("InclusionProof"))],
        &[404],
    ),
    reply(
        "get",
        "/v1/audit/consistency/{old}/{new}",
        &[(200, J("ConsistencyProof"))],
        &[],
    ),
    reply(
        "get",
        "/v1/objects/{id}",
        &[(200, Media("application/octet-stream"))],
        &[404],
    ),
    reply("get", "/v1/policy", &[(200, J("Policy"))], &[]),
    reply(
        "put",
        "/v1/policy/mode",
        &[(200, J("ModeReply"))],
        &[423, 503],
    ),
    reply(
        "post",
        "/v1/policy/evaluate",
        &[(200, J("Evaluation"))],
        &[],
    ),
    reply("get", "/v1/approvals", &[(200, J("Approvals"))], &[]),
    reply("get", "/v1/approvals/{id}", &[(200, J("Approval"))], &[404]),
    reply(
        "put",
        "/v1/policy/modification",
        &[(200, J("ModificationReply"))],
        &[423, 503],
    ),
    reply("get", "/v1/affect", &[(200, J("AffectReply"))], &[]),
    reply("put", "/v1/affect", &[(200, J("AffectReply"))], &[423, 503]),
    reply(
        "post",
        "/v1/approvals/{id}/sign",
        &[(200, J("Approval"))],
        &[404, 409, 423, 502, 503],
    ),
    reply("post", "/v1/tasks", &[(202, J("TaskSubmitted"))], &[503]),
    reply("get", "/v1/tasks/{id}", &[(200, J("Task"))], &[404]),
    reply(
        "post",
        "/v1/tasks/{id}/feedback",
        &[(200, J("Feedback"))],
        &[404, 409, 503],
    ),
    reply("get", "/v1/patterns", &[(200, J("Patterns"))], &[]),
    reply(
        "post",
        "/v1/patterns/maintain",
        &[(200, J("Maintenance"))],
        &[503],
    ),
    reply("get", "/v1/mesh", &[(200, J("MeshState"))], &[]),
    reply(
        "put",
        "/v1/mesh/dispatch",
        &[(200, J("DispatchReply"))],
        &[503],
    ),
    reply("get", "/healthz", &[(200, Media("text/plain"))], &[]),
    reply(
        "get",
        "/readyz",
        &[(200, J("Readiness")), (503, J("Readiness"))],
        &[],
    ),
    reply("get", "/openapi.json", &[(200, J("OpenApi"))], &[]),
    reply("get", "/docs", &[(200, Media("text/html"))], &[]),
];

/// The names of a route's path parameters, in order.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
}

/// The query parameters a route reads (the server refuses any other).
fn query_params(method: &str, path: &str) -> Vec<Value> {
    let q = |name: &str, schema: Value, description: &str| json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": description });
    let count = json!({ "type": "integer", "minimum": 0 });
    match (method, path) {
        ("get", "/v1/audit") => vec![
            q(
                "from",
                count.clone(),
                "First entry (default: the last page).",
            ),
            q(
                "limit",
                json!({ "type": "integer", "minimum": 1 }),
                "Entries, 1..=limits.audit_page_max (default 100).",
            ),
        ],
        ("get", "/v1/audit/proof/{seq}") => {
            vec![q(
                "size",
                count,
                "Tree size (default: the ledger's size now).",
            )]
        }
        ("get", "/v1/approvals") => vec![q(
            "status",
            json!({ "enum": ["pending", "approved", "released", "void", "all"] }),
            "Which approvals (default pending).",
        )],
        _ => Vec::new(),
    }
}

/// The schema of a path parameter of `path`.
fn path_param_schema(path: &str, name: &str) -> Value {
    match name {
        "seq" | "old" | "new" => json!({ "type": "integer", "minimum": 0 }),
        "id" if path.starts_with("/v1/approvals/") => json!({ "type": "integer" }),
        "id" if path.starts_with("/v1/objects/") => json!({
            "type": "string", "maxLength": 64,
            "description": "NAMESPACE_YYYYMMDD_HASH (SPEC S1)",
            "examples": ["notes_20250101_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]
        }),
        _ => json!({ "type": "string" }),
    }
}

/// Every error status `route` can answer: those of its kind (token and
/// rate limit under `/v1`, role, bad input, body size, server fault) and
/// its own.
pub fn error_statuses(route: &Route, own: &[u16]) -> Vec<u16> {
    let mut codes = own.to_vec();
    if route.path.starts_with("/v1/") {
        codes.extend([401, 429, 500]);
    }
    if !matches!(route.roles, "any" | "none") {
        codes.push(403);
    }
    let has_params = path_params(route.path).next().is_some()
        || !query_params(route.method, route.path).is_empty();
    if has_params {
        codes.push(400);
    }
    if route.body.is_some() {
        codes.extend([400, 413]);
    }
    codes.sort_unstable();
    codes.dedup();
    codes
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad request: the field named is wrong",
        401 => "No or unknown bearer token",
        403 => "The role may not do this, or policy refused",
        404 => "No such route, entry or object",
        409 => "Conflict with the present state",
        413 => "Body over limits.max_body_bytes",
        423 => "The kill switch is armed",
        429 => "Over the rate limit; see Retry-After",
        500 => "Server fault",
        502 => "The planner's upstream failed",
        503 => "Unavailable",
        _ => "See the error body",
    }
}

fn schemas() -> Value {
    let unit = json!({ "type": "number", "minimum": 0, "maximum": 1 });
    let affect = json!({
        "type": "object", "additionalProperties": false,
        "description": "Affect parameters (SPEC O8); in a request each may lower the current value (GET /v1/affect), never raise it",
        "properties": {
            "confidence": unit, "empathy": unit, "curiosity": unit, "safety": unit,
            "urgency": unit, "optimism": unit, "caution": unit
        }
    });
    let risk = json!({ "type": "number", "minimum": 0, "maximum": 1, "description": "A risk the step states; at least its action's risk from the table (GET levels with capsule policy show levels)" });
    let session = json!({ "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "description": "The session whose kernel steps (default main)" });
    let num_array = json!({ "type": "array", "items": { "type": "number", "minimum": -10, "maximum": 10 }, "maxItems": 60 });
    let mut requests = json!({
        "ThinkRequest": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "text": { "type": "string", "maxLength": 8192 },
                "gw": num_array,
                "measure": { "type": "boolean" },
                "lane": { "enum": ["experimental", "candidate", "prod"] },
                "planner": { "enum": ["hash", "local", "openai", "anthropic"] },
                "affect": affect,
                "risk": risk,
                "session": session
            }
        },
        "SearchRequest": {
            "type": "object", "additionalProperties": false, "required": ["query"],
            "properties": {
                "query": { "type": "string", "minLength": 1, "maxLength": 8192 },
                "k": { "type": "integer", "minimum": 1, "maximum": 100 },
                "filter": {
                    "type": "object", "additionalProperties": false,
                    "properties": { "kind": { "type": "string" }, "lane": { "type": "string" } }
                }
            }
        },
        "StepRequest": {
            "type": "object", "additionalProperties": false,
            "properties": { "gw": num_array, "measure": { "type": "boolean" }, "affect": affect, "risk": risk, "session": session }
        },
        "Affect": affect,
        "ResetRequest": {
            "type": "object", "additionalProperties": false,
            "properties": { "session": session }
        },
        "ModificationRequest": {
            "type": "object", "additionalProperties": false, "required": ["enabled"],
            "properties": { "enabled": { "type": "boolean" } }
        },
        "ArmRequest": {
            "type": "object", "additionalProperties": false,
            "properties": { "reason": { "type": "string" } }
        },
        "DisarmRequest": {
            "type": "object", "additionalProperties": false, "required": ["signatures"],
            "properties": {
                "signatures": { "type": "array", "items": {
                    "type": "object", "required": ["key", "signature"],
                    "properties": { "key": { "type": "string" }, "signature": { "type": "string", "contentEncoding": "base64" } }
                }},
                "reason": { "type": "string" }
            }
        },
        "ModeRequest": {
            "type": "object", "additionalProperties": false, "required": ["mode"],
            "properties": { "mode": { "enum": ["supervised", "semi_autonomous", "autonomous"] } }
        },
        "DecisionRequest": {
            "type": "object", "additionalProperties": false, "required": ["principal", "action", "resource"],
            "properties": {
                "principal": { "type": "string", "examples": ["agent:alice"] },
                "action": { "type": "string", "examples": ["fs.write"] },
                "resource": { "type": "string", "examples": ["path:/etc/passwd"] },
                "lane": { "enum": ["experimental", "candidate", "prod"] },
                "level": { "enum": ["minimal", "low", "medium", "high", "critical"] },
                "affect": { "type": "object" },
                "risk": { "type": "number" },
                "drift": { "type": "number" },
                "args": { "type": "object" }
            }
        },
        "TaskRequest": {
            "type": "object", "additionalProperties": false, "required": ["query"],
            "properties": {
                "query": { "type": "string", "minLength": 1, "maxLength": 4096 },
                "domain": { "enum": ["calc", "medical", "kernel", "general"] },
                "class_path": { "type": "string", "pattern": "^[A-Za-z0-9_./-]{1,128}$" },
                "params": { "type": "object" },
                "user_id": { "type": "string", "minLength": 1, "maxLength": 128 },
                "lane": { "enum": ["experimental", "candidate", "prod"] }
            }
        },
        "FeedbackRequest": {
            "type": "object", "additionalProperties": false, "required": ["outcome"],
            "properties": { "outcome": { "enum": ["success", "failure"] } }
        },
        "DispatchRequest": {
            "type": "object", "additionalProperties": false, "required": ["enabled"],
            "properties": { "enabled": { "type": "boolean" } }
        },
        "SignRequest": {
            "type": "object", "additionalProperties": false, "required": ["key", "signature"],
            "properties": { "key": { "type": "string" }, "signature": { "type": "string" } }
        },
        "Error": {
            "type": "object", "required": ["error", "field", "reason"],
            "description": "Every rejection: a code, the field or parameter at fault (null when none), and the reason in words; some add members (decision, ledger_seq).",
            "properties": {
                "error": { "type": "string" },
                "field": { "type": ["string", "null"] },
                "reason": { "type": "string" }
            }
        }
    });
    if let (Value::Object(all), Value::Object(replies)) = (&mut requests, reply_schemas()) {
        all.extend(replies);
    }
    requests
}

/// The schemas of success bodies.
fn reply_schemas() -> Value {
    let int = json!({ "type": "integer" });
    let num = json!({ "type": "number" });
    let string = json!({ "type": "string" });
    let boolean = json!({ "type": "boolean" });
    let strings = json!({ "type": "array", "items": string });
    let obj = |required: &[&str], properties: Value| json!({ "type": "object", "required": required, "properties": properties });
    let step_result = json!({
        "step": int, "t": num, "dt": num, "entropy": num, "purity": num,
        "trace_error": num, "valid": boolean,
        "measured_state": { "type": ["integer", "null"] },
        "positivity_correction": num, "state_digest": string
    });
    let step_required = [
        "step",
        "t",
        "dt",
        "entropy",
        "purity",
        "trace_error",
        "valid",
        "measured_state",
        "positivity_correction",
        "state_digest",
    ];
    let with = |base: &Value, more: Value| {
        let mut m = base.as_object().cloned().unwrap_or_default();
        if let Value::Object(more) = more {
            m.extend(more);
        }
        Value::Object(m)
    };
    let assessment = obj(
        &["risk", "level", "source"],
        json!({
            "risk": num,
            "level": { "enum": ["minimal", "low", "medium", "high", "critical"] },
            "source": { "enum": ["built_in", "policy_json", "stated"] }
        }),
    );
    let decision = obj(
        &[
            "outcome",
            "reason",
            "policies",
            "autonomy_rule",
            "explanation",
            "would_pass",
            "mode",
            "assessment",
            "drift",
        ],
        json!({
            "outcome": string, "reason": string, "policies": strings,
            "autonomy_rule": { "type": ["integer", "null"] }, "explanation": string,
            "would_pass": { "type": ["string", "null"] }, "mode": string,
            "assessment": assessment.clone(),
            "drift": obj(&["value", "source"], json!({
                "value": num, "source": { "enum": ["embedding", "text_only", "no_text"] }
            }))
        }),
    );
    let ref_ = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let think_required: Vec<&str> = step_required
        .iter()
        .copied()
        .chain([
            "op",
            "rationale",
            "planner",
            "gw_dim",
            "decision",
            "ledger_seq",
            "event_id",
            "glyph",
            "recall",
        ])
        .collect();
    let step_reply_required: Vec<&str> = step_required
        .iter()
        .copied()
        .chain(["decision", "ledger_seq"])
        .collect();
    let kill_props = json!({
        "armed": boolean, "by": string, "reason": string, "since": int,
        "nonce": string, "ledger_seq": { "type": ["integer", "null"] }
    });
    let kill_required = ["armed", "by", "reason", "since", "nonce", "ledger_seq"];
    let kill_state = obj(&kill_required, kill_props.clone());
    let kill_status_required: Vec<&str> = kill_required
        .iter()
        .copied()
        .chain(["trigger_file_present"])
        .collect();
    let kill_status = obj(
        &kill_status_required,
        with(&kill_props, json!({ "trigger_file_present": boolean })),
    );
    let approval = obj(
        &[
            "id",
            "status",
            "outcome",
            "quorum",
            "digest",
            "request",
            "approvers",
            "created_ns",
        ],
        json!({
            "id": int,
            "status": { "enum": ["pending", "approved", "running", "released", "void", "expired"] },
            "outcome": string, "quorum": int, "digest": string,
            "request": { "type": "object" }, "approvers": strings, "created_ns": int,
            "signatures": { "type": "array", "items": obj(&["approver", "signature"], json!({ "approver": string, "signature": string })) },
            "expires_ns": int,
            "result": { "type": ["object", "null"] },
            "ledger_seqs": { "type": "array", "items": int },
            "released": { "type": "object", "description": "On the sign that ran the action: its step result and ledger entries." }
        }),
    );
    json!({
        "Decision": decision,
        "Held": obj(&["approval_id", "digest", "quorum", "status", "decision", "ledger_seq"], json!({
            "approval_id": int, "digest": string, "quorum": int,
            "status": { "enum": ["pending"] }, "decision": ref_("Decision"), "ledger_seq": int
        })),
        "ModificationReply": obj(&["modification_enabled"], json!({ "modification_enabled": boolean })),
        "AffectReply": obj(&["parameters"], json!({
            "parameters": { "type": "array", "items": obj(&["name", "value", "threshold", "source"], json!({
                "name": string, "value": num, "threshold": { "type": ["number", "null"] },
                "source": { "enum": ["config", "operator", "request"] }
            })) }
        })),
        "ThinkReply": obj(&think_required, with(&step_result, json!({
            "op": { "enum": ["brain.step", "brain.measure"] }, "rationale": string,
            "planner": string, "gw_dim": int, "decision": ref_("Decision"),
            "ledger_seq": int, "event_id": int, "glyph": string,
            "recall": { "type": "array", "items": obj(&["event_id", "score", "text", "glyph"], json!({
                "event_id": int, "score": num, "text": string, "glyph": string
            })) }
        }))),
        "StepReply": obj(&step_reply_required, with(&step_result, json!({
            "decision": ref_("Decision"), "ledger_seq": int
        }))),
        "SearchReply": obj(&["hits"], json!({
            "hits": { "type": "array", "items": obj(
                &["event_id", "score", "kind", "lane", "glyph", "ts", "text"],
                json!({
                    "event_id": int, "score": num, "kind": string, "lane": string,
                    "glyph": string, "ts": int, "text": { "type": ["string", "null"] }
                }),
            ) }
        })),
        "KernelState": obj(
            &["dimension", "workspace_dim", "step", "t", "dt", "entropy", "purity", "trace_error",
              "hermiticity_error", "lambda_min", "valid", "halted", "positivity_projections"],
            json!({
                "dimension": int, "workspace_dim": int, "step": int, "t": num, "dt": num,
                "entropy": num, "purity": num, "trace_error": num, "hermiticity_error": num,
                "lambda_min": num, "valid": boolean, "halted": { "type": ["string", "null"] },
                "positivity_projections": int
            }),
        ),
        "State": obj(
            &["kernel", "kill_switch_armed", "mode", "modification_enabled", "drift", "policy_version", "ledger_entries", "memory_events", "planners", "mesh"],
            json!({
                "mesh": ref_("MeshState"),
                "kernel": ref_("KernelState"), "kill_switch_armed": boolean,
                "modification_enabled": boolean,
                "drift": { "type": "object", "additionalProperties": obj(&["ema", "last", "steps", "warn"], json!({
                    "ema": num, "last": num, "steps": int, "warn": boolean
                })) },
                "mode": { "enum": ["supervised", "semi_autonomous", "autonomous"] },
                "policy_version": string, "ledger_entries": int, "memory_events": int,
                "planners": strings
            }),
        ),
        "ResetReply": obj(&["reset", "ledger_seq"], json!({ "reset": boolean, "ledger_seq": int })),
        "KernelDump": obj(&["snapshot"], json!({ "snapshot": { "type": "string", "contentEncoding": "base64" } })),
        "KillState": kill_state,
        "KillStatus": kill_status,
        "AuditPage": obj(&["size", "from", "entries"], json!({
            "size": int, "from": int,
            "entries": { "type": "array", "items": obj(
                &["seq", "ts", "actor", "action", "subject", "decision", "reason", "meta"],
                json!({
                    "seq": int, "ts": int, "actor": string, "action": string,
                    "subject": string, "decision": string, "reason": string,
                    "meta": { "type": "object" }
                }),
            ) }
        })),
        "Checkpoint": obj(&["size", "root", "note"], json!({ "size": int, "root": string, "note": string })),
        "InclusionProof": obj(&["index", "tree_size", "leaf_hash", "root", "path"], json!({
            "index": int, "tree_size": int, "leaf_hash": string, "root": string, "path": strings
        })),
        "ConsistencyProof": obj(&["old_size", "new_size", "old_root", "new_root", "path"], json!({
            "old_size": int, "new_size": int, "old_root": string, "new_root": string, "path": strings
        })),
        "Policy": obj(
            &["version", "mode", "modification_enabled", "guardian", "approval_quorum",
              "disarm_quorum", "approvers", "operators", "kill_switch_armed"],
            json!({
                "version": string, "mode": { "enum": ["supervised", "semi_autonomous", "autonomous"] },
                "modification_enabled": boolean, "guardian": { "type": "object" },
                "approval_quorum": int, "disarm_quorum": int, "approvers": strings,
                "operators": strings, "kill_switch_armed": boolean
            }),
        ),
        "ModeReply": obj(&["mode"], json!({ "mode": { "enum": ["supervised", "semi_autonomous", "autonomous"] } })),
        "Evaluation": obj(&["decision", "recorded"], json!({
            "decision": obj(&["outcome", "reason", "policies", "explanation", "policy_version", "mode"], json!({
                "outcome": string, "reason": string, "policies": strings,
                "explanation": string, "policy_version": string, "mode": string
            })),
            "recorded": boolean
        })),
        "Approval": approval,
        "Approvals": obj(&["approvals"], json!({ "approvals": { "type": "array", "items": ref_("Approval") } })),
        "Sessions": obj(&["sessions", "live", "max_live"], json!({
            "live": int, "max_live": int,
            "sessions": { "type": "array", "items": obj(
                &["name", "steps", "state", "last_use", "snapshot", "snapshot_seq"],
                json!({
                    "name": string, "steps": int, "state": { "enum": ["live", "snapshotted"] },
                    "last_use": int, "snapshot": { "type": ["string", "null"] },
                    "snapshot_seq": { "type": ["integer", "null"] }
                })
            ) }
        })),
        "TaskSubmitted": obj(
            &["task_id", "status", "domain", "classification", "policy_decision", "latency_ms", "ledger_seq"],
            json!({
                "task_id": string,
                "status": { "enum": ["queued", "cache_hit", "pending_approval", "blocked"] },
                "domain": string,
                "classification": obj(&["domain", "confidence", "method"], json!({
                    "domain": string, "confidence": num,
                    "method": { "enum": ["given", "embedding", "keyword", "default"] }
                })),
                "policy_decision": obj(&["outcome", "reason", "explanation"], json!({
                    "outcome": string, "reason": string, "explanation": string
                })),
                "latency_ms": num, "ledger_seq": int,
                "result_id": string, "reused_from": string, "approval_id": int
            }),
        ),
        "Task": obj(
            &["task_id", "status", "domain", "result_id", "result", "pattern", "ledger", "error", "cache_hits"],
            json!({
                "task_id": string,
                "status": { "enum": ["queued", "running", "done", "failed", "blocked", "pending_approval"] },
                "domain": string,
                "result_id": { "type": ["string", "null"] },
                "result": { "oneOf": [{ "type": "null" }, obj(
                    &["answer", "data", "citations", "verification", "bot"],
                    json!({
                        "answer": string, "data": {}, "citations": { "type": "array" },
                        "verification": obj(&["method", "passed"], json!({
                            "method": string, "passed": { "type": ["boolean", "null"] }
                        })),
                        "bot": string, "model": string, "label": string
                    }),
                )] },
                "pattern": { "oneOf": [{ "type": "null" }, obj(&["layer", "confidence", "usage"], json!({
                    "layer": { "enum": ["immediate", "pattern", "archive"] }, "confidence": num, "usage": int
                }))] },
                "ledger": { "type": "array", "items": int },
                "error": { "type": ["string", "null"] },
                "reused_from": { "type": ["string", "null"] },
                "approval_id": { "type": ["integer", "null"] },
                "duration_ms": { "type": ["number", "null"] },
                "cache_hits": int,
                "trace": {}
            }),
        ),
        "Feedback": obj(&["pattern"], json!({ "pattern": ref_("Pattern") })),
        "Pattern": obj(&["task_id", "domain", "layer", "confidence", "usage", "last_used_ns", "result_id"], json!({
            "task_id": string, "domain": string,
            "layer": { "enum": ["immediate", "pattern", "archive"] },
            "confidence": num, "usage": int, "last_used_ns": int, "result_id": string
        })),
        "Patterns": obj(&["patterns"], json!({ "patterns": { "type": "array", "items": ref_("Pattern") } })),
        "Maintenance": obj(&["changes"], json!({ "changes": { "type": "array", "items": obj(
            &["task_id", "from", "to", "reason", "ledger_seq"],
            json!({
                "task_id": string, "from": string, "to": { "type": ["string", "null"] },
                "reason": string, "ledger_seq": int
            }),
        ) } })),
        "MeshState": obj(
            &["dispatch_enabled", "learning_enabled", "ext_actions_enabled", "workers", "queues", "breaker_trips"],
            json!({
                "dispatch_enabled": boolean, "learning_enabled": boolean, "ext_actions_enabled": boolean,
                "workers": int, "breaker_trips": int,
                "queues": { "type": "array", "items": obj(&["topic", "queued", "reserved", "capacity", "published"], json!({
                    "topic": string, "queued": int, "reserved": int, "capacity": int, "published": int
                })) }
            }),
        ),
        "DispatchReply": obj(&["dispatch_enabled", "ledger_seq"], json!({ "dispatch_enabled": boolean, "ledger_seq": int })),
        "Readiness": obj(&["ready", "kill_switch_armed", "ledger_entries"], json!({
            "ready": boolean, "kill_switch_armed": boolean, "ledger_entries": int
        })),
        "OpenApi": obj(&["openapi", "info", "paths"], json!({ "openapi": string, "info": { "type": "object" }, "paths": { "type": "object" } }))
    })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let reply = REPLIES
            .iter()
            .find(|r| r.method == route.method && r.path == route.path);
        let mut responses = serde_json::Map::new();
        for (code, body) in reply.map_or(&[(200, Body::Json("Any"))][..], |r| r.ok) {
            let content = match body {
                Body::Json(name) if *name == "Any" => {
                    json!({ "application/json": { "schema": {} } })
                }
                Body::Json(name) => {
                    json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{name}") } } })
                }
                Body::Media(media) => {
                    json!({ media.to_string(): { "schema": { "type": "string" } } })
                }
            };
            responses.insert(
                code.to_string(),
                json!({ "description": reason_phrase(*code), "content": content }),
            );
        }
        for code in error_statuses(route, reply.map_or(&[][..], |r| r.errors)) {
            responses
                .entry(code.to_string())
                .or_insert_with(|| json!({
                    "description": reason_phrase(code),
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }));
        }
        let mut op = json!({
            "summary": route.summary,
            "description": format!("Roles: {}.", route.roles),
            "responses": responses,
        });
        if route.roles != "none" {
            op["security"] = json!([{ "bearer": [] }]);
        }
        if let Some(schema) = route.body {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
            });
        }
        let params: Vec<Value> = path_params(route.path)
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": path_param_schema(route.path, name) }))
            .chain(query_params(route.method, route.path))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Capsule API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A governed runtime for AI agents: every kernel step is checked by policy and recorded in a signed Merkle ledger. The kernel is a numerical simulation of an open quantum system used as state; it does not think or feel."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

/// `/docs`: renders `/openapi.json` as a table; no external resources.
pub const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Capsule API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;vertical-align:top;text-align:left}
code{background:#f4f4f4;padding:0 .2rem}.m{font-weight:600;text-transform:uppercase}
</style></head><body>
<h1>Capsule API</h1><p id="desc"></p>
<p>The machine-readable document is <a href="/openapi.json">/openapi.json</a>. Send <code>Authorization: Bearer &lt;token&gt;</code> on every <code>/v1</code> call; errors are JSON <code>{error, field, reason}</code>.</p>
<table><thead><tr><th>method</th><th>path</th><th>what it does</th></tr></thead><tbody id="rows"></tbody></table>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  document.getElementById('desc').textContent=doc.info.description;
  const rows=document.getElementById('rows');
  for(const [path,ops] of Object.entries(doc.paths)){
    for(const [method,op] of Object.entries(ops)){
      const tr=document.createElement('tr');
      for(const [cls,text] of [['m',method],['',path],['',op.summary+' '+op.description]]){
        const td=document.createElement('td');td.className=cls;
        if(cls===''&&text===path){const c=document.createElement('code');c.textContent=text;td.appendChild(c);}else{td.textContent=text;}
        tr.appendChild(td);
      }
      rows.appendChild(tr);
    }
  }
});
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_method() {
        let doc = document();
        for route in ROUTES {
            assert!(
                doc["paths"][route.path][route.method].is_object(),
                "{} {}",
                route.method,
                route.path
            );
        }
    }

    #[test]
    fn every_referenced_schema_exists() {
        let doc = document();
        for route in ROUTES {
            if let Some(s) = route.body {
                assert!(doc["components"]["schemas"][s].is_object(), "{s}");
            }
        }
    }
}
