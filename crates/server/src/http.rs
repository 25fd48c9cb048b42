//! The HTTP API under `/v1` (axum), plus `/healthz`, `/readyz`,
//! `/openapi.json` and `/docs`. Every `/v1` route needs a bearer token; the
//! role a route needs is in [`crate::openapi::ROUTES`]. Errors are JSON
//! `{error, field, reason}` with the status that says what to do.

use crate::auth::{Caller, Role};
pub use crate::extract::{parse_json, JsonBody};
use crate::extract::{ApiPath, ApiQuery, OptionalJsonBody};
use crate::openapi;
use crate::service::{Refusal, Service};
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, on, MethodFilter, MethodRouter};
use axum::{Extension, Json, Router};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_cortex::{CortexError, ThinkRequest};
use capsule_ledger::LedgerError;
use capsule_policy::killswitch::OperatorSignature;
use capsule_policy::{DecisionRequest, Mode, PolicyError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

pub(crate) type Svc = State<Arc<Service>>;

/// A JSON error reply.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub field: Option<String>,
    pub reason: String,
    /// More members of the error body, in order.
    pub extra: Vec<(String, Value)>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            field: None,
            reason: reason.into(),
            extra: Default::default(),
            retry_after: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extra.push((
            key.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        ));
        self
    }

    pub(crate) fn bad_request(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", reason).field(field)
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }

    fn killed() -> Self {
        ApiError::new(
            StatusCode::LOCKED,
            "kill_switch",
            "the kill switch is armed: mutating calls are refused until operators disarm it",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), json!(self.error));
        body.insert("field".into(), json!(self.field));
        body.insert("reason".into(), json!(self.reason));
        body.extend(self.extra);
        let mut resp = (self.status, Json(Value::Object(body))).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"capsule\""),
            );
        }
        resp
    }
}

impl From<CortexError> for ApiError {
    fn from(e: CortexError) -> Self {
        match e {
            CortexError::Invalid { field, reason } => ApiError::bad_request(field, reason),
            CortexError::Critic {
                rejection,
                ledger_seq,
            } => ApiError::new(StatusCode::BAD_REQUEST, "critic_rejected", rejection.reason)
                .field(rejection.field)
                .with("ledger_seq", ledger_seq),
            CortexError::Refused {
                decision,
                ledger_seq,
            } => {
                let (status, code) = match (decision.reason.as_str(), decision.outcome.as_str()) {
                    ("kill_switch", _) => (StatusCode::LOCKED, "kill_switch"),
                    (_, "pending_review" | "requires_human") => {
                        (StatusCode::FORBIDDEN, "approval_required")
                    }
                    _ => (StatusCode::FORBIDDEN, "policy_denied"),
                };
                ApiError::new(status, code, decision.explanation.clone())
                    .with("decision", &*decision)
                    .with("ledger_seq", ledger_seq)
            }
            CortexError::Halted {
                step,
                reason,
                ledger_seq,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "kernel_halted",
                format!("kernel halted at step {step}: {reason}; an operator must POST /v1/kernel/reset"),
            )
            .with("ledger_seq", ledger_seq),
            CortexError::Planner(e) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "planner_failed", e.to_string())
                    .field("planner")
            }
            CortexError::Ledger(e) => ledger_error(e),
            CortexError::Model(capsule_models::ModelError::Invalid { field, reason }) => {
                ApiError::bad_request(field, reason)
            }
            CortexError::Memory(capsule_memory::MemoryError::Invalid { field, reason }) => {
                ApiError::bad_request(field, reason)
            }
            CortexError::Kernel(capsule_kernel::KernelError::Parameter { field, reason }) => {
                ApiError::bad_request(field, reason)
            }
            CortexError::Policy(e) => policy_error(e),
            e @ CortexError::Snapshot { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "session_unavailable", e.to_string())
                    .field("session")
            }
            e => ApiError::internal(e),
        }
    }
}

pub(crate) fn ledger_error(e: LedgerError) -> ApiError {
    match e {
        LedgerError::Invalid { field, reason } => ApiError::bad_request(field, reason),
        e @ (LedgerError::Failed(_) | LedgerError::Closed) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_unavailable",
            e.to_string(),
        ),
        e => ApiError::internal(e),
    }
}

/// The reason `ApprovalQueue` gives for an id it does not hold.
const NO_SUCH_APPROVAL: &str = "no such approval";

pub(crate) fn policy_error(e: PolicyError) -> ApiError {
    match e {
        PolicyError::Invalid { field, reason } => ApiError::bad_request(field, reason),
        PolicyError::Approval { id, reason } if reason == NO_SUCH_APPROVAL => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("approval {id}: {reason}"),
        )
        .field("id"),
        e @ (PolicyError::Approval { .. } | PolicyError::KillSwitch(_)) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        PolicyError::Ledger(e) => ledger_error(e),
        e => ApiError::internal(e),
    }
}

pub(crate) fn require(caller: &Caller, roles: &[Role]) -> Result<(), ApiError> {
    if roles.contains(&caller.role) {
        return Ok(());
    }
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "the {} role may not do this; it needs {}",
            caller.role.as_str(),
            names.join(" or ")
        ),
    ))
}

pub(crate) fn refuse_if_killed(svc: &Service) -> Result<(), ApiError> {
    if svc.kill.is_armed() {
        return Err(ApiError::killed());
    }
    Ok(())
}

/// Runs blocking work (kernel steps, fsync) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Bearer authentication and the rate limit, for every `/v1` route.
async fn authenticate(State(svc): Svc, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let resp = match svc.admit(header) {
        Err(Refusal::NoToken) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <token>",
        )
        .field("authorization")
        .into_response(),
        Err(Refusal::UnknownToken) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")
                .field("authorization")
                .into_response()
        }
        Err(Refusal::RateLimited { retry_after_s }) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "over {} requests per minute for this token; retry in {retry_after_s} s",
                    svc.config.auth.rate_limit_per_minute
                ),
            );
            e.retry_after = Some(retry_after_s);
            e.into_response()
        }
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    };
    svc.metrics
        .requests
        .get_or_create(&vec![
            ("route".into(), route),
            ("status".into(), resp.status().as_u16().to_string()),
        ])
        .inc();
    resp
}

/// One route of the HTTP API: its method, its full path (in the OpenAPI
/// document's form) and its handler. [`router`] serves exactly
/// [`endpoints`], so the routes served and the routes listed are one set
/// (a test compares that set with [`openapi::ROUTES`]).
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    handler: MethodRouter<Arc<Service>>,
}

impl Endpoint {
    fn on<H, T>(method: &'static str, filter: MethodFilter, path: &'static str, h: H) -> Self
    where
        H: Handler<T, Arc<Service>>,
        T: 'static,
    {
        Endpoint {
            method,
            path,
            handler: on(filter, h),
        }
    }

    fn get<H: Handler<T, Arc<Service>>, T: 'static>(path: &'static str, h: H) -> Self {
        Self::on("get", MethodFilter::GET, path, h)
    }

    fn post<H: Handler<T, Arc<Service>>, T: 'static>(path: &'static str, h: H) -> Self {
        Self::on("post", MethodFilter::POST, path, h)
    }

    fn put<H: Handler<T, Arc<Service>>, T: 'static>(path: &'static str, h: H) -> Self {
        Self::on("put", MethodFilter::PUT, path, h)
    }

    fn delete<H: Handler<T, Arc<Service>>, T: 'static>(path: &'static str, h: H) -> Self {
        Self::on("delete", MethodFilter::DELETE, path, h)
    }
}

/// Every route the HTTP listener serves. Routes under `/v1/` need a bearer
/// token; the others are open. A new route is one line here and one in
/// [`openapi::ROUTES`].
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::post("/v1/think", think),
        Endpoint::get("/v1/state", state),
        Endpoint::post("/v1/memory/search", memory_search),
        Endpoint::get("/v1/kernel/state", kernel_state),
        Endpoint::post("/v1/kernel/step", kernel_step),
        Endpoint::post("/v1/kernel/reset", kernel_reset),
        Endpoint::get("/v1/kernel/dump", kernel_dump),
        Endpoint::get("/v1/sessions", sessions),
        Endpoint::post("/v1/tasks", crate::mesh_http::submit),
        Endpoint::get("/v1/tasks/{id}", crate::mesh_http::task),
        Endpoint::post("/v1/tasks/{id}/feedback", crate::mesh_http::feedback),
        Endpoint::get("/v1/patterns", crate::mesh_http::patterns),
        Endpoint::post("/v1/patterns/maintain", crate::mesh_http::maintain),
        Endpoint::get("/v1/mesh", crate::mesh_http::mesh_state),
        Endpoint::put("/v1/mesh/dispatch", crate::mesh_http::dispatch),
        Endpoint::get("/v1/kill", kill_status),
        Endpoint::post("/v1/kill", kill_arm),
        Endpoint::delete("/v1/kill", kill_disarm),
        Endpoint::get("/v1/audit", audit),
        Endpoint::get("/v1/audit/checkpoint", audit_checkpoint),
        Endpoint::get("/v1/audit/proof/{seq}", audit_proof),
        Endpoint::get("/v1/audit/consistency/{old}/{new}", audit_consistency),
        Endpoint::get("/v1/objects/{id}", object),
        Endpoint::get("/v1/policy", policy),
        Endpoint::put("/v1/policy/mode", policy_mode),
        Endpoint::post("/v1/policy/evaluate", policy_evaluate),
        Endpoint::get("/v1/approvals", approvals),
        Endpoint::get("/v1/approvals/{id}", approval_show),
        Endpoint::post("/v1/approvals/{id}/sign", approval_sign),
        Endpoint::get("/v1/affect", affect_show),
        Endpoint::put("/v1/affect", affect_set),
        Endpoint::put("/v1/policy/modification", policy_modification),
        Endpoint::get("/healthz", healthz),
        Endpoint::get("/readyz", readyz),
        Endpoint::get("/openapi.json", openapi_document),
        Endpoint::get("/docs", docs),
    ]
}

pub fn router(svc: Arc<Service>) -> Router {
    let (v1, open): (Vec<Endpoint>, Vec<Endpoint>) = endpoints()
        .into_iter()
        .partition(|e| e.path.starts_with("/v1/"));
    let add = |router: Router<Arc<Service>>, e: Endpoint| router.route(e.path, e.handler);
    let v1 = v1
        .into_iter()
        .fold(Router::new(), add)
        .route_layer(middleware::from_fn_with_state(svc.clone(), authenticate));
    open.into_iter()
        .fold(Router::new(), add)
        .merge(v1)
        .fallback(crate::extract::not_found)
        .layer(middleware::from_fn(crate::extract::json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(
            svc.config.limits.max_body_bytes,
        ))
        .with_state(svc)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn openapi_document() -> Json<Value> {
    Json(openapi::document())
}

async fn docs() -> Html<&'static str> {
    Html(openapi::DOCS_PAGE)
}

/// The metrics listener's router (kept apart so it can stay on loopback).
pub fn metrics_router(svc: Arc<Service>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(svc): Svc| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    {
                        svc.metrics.observe_mesh(&svc.mesh);
                        svc.metrics.render(svc.ledger.size())
                    },
                )
            }),
        )
        .with_state(svc)
}

async fn readyz(State(svc): Svc) -> Response {
    let ready = svc.is_ready();
    let body = json!({
        "ready": ready,
        "kill_switch_armed": svc.kill.is_armed(),
        "ledger_entries": svc.ledger.size(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// A cortex call's reply: 200 with the result, or 202 with the approval
/// that holds the action (`{approval_id, digest, quorum, status, decision,
/// ledger_seq}`), or the error.
fn held_or<T: Serialize>(r: Result<T, CortexError>) -> Result<Response, ApiError> {
    match r {
        Ok(v) => Ok(Json(v).into_response()),
        Err(CortexError::Held(h)) => Ok((StatusCode::ACCEPTED, Json(*h)).into_response()),
        Err(e) => Err(e.into()),
    }
}

async fn think(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<ThinkRequest>,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Agent, Role::Operator])?;
    let started = Instant::now();
    let metrics = svc.metrics.clone();
    let reply = blocking(move || held_or(svc.cortex.think(&caller.principal(), &req))).await;
    metrics
        .think_seconds
        .observe(started.elapsed().as_secs_f64());
    reply
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    query: String,
    #[serde(default = "default_search_k")]
    k: usize,
    #[serde(default)]
    filter: SearchFilter,
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchFilter {
    kind: Option<String>,
    lane: Option<String>,
}

fn default_search_k() -> usize {
    5
}

async fn memory_search(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
    JsonBody(body): JsonBody<SearchBody>,
) -> Result<Json<Value>, ApiError> {
    let filter = capsule_memory::vector::Filter {
        kind: body.filter.kind,
        lane: body.filter.lane,
    };
    let hits =
        blocking(move || Ok(svc.cortex.search_memory(&body.query, body.k, &filter)?)).await?;
    Ok(Json(json!({ "hits": hits })))
}

async fn state(State(svc): Svc, Extension(_): Extension<Caller>) -> Result<Json<Value>, ApiError> {
    let s = svc.clone();
    let kernel = blocking(move || s.cortex.state().map_err(ApiError::from)).await?;
    Ok(Json(json!({
        "kernel": kernel,
        "kill_switch_armed": svc.kill.is_armed(),
        "mode": svc.policy.config().mode,
        "policy_version": svc.policy.rules().version(),
        "modification_enabled": svc.policy.config().modification_enabled,
        "drift": svc.cortex.drift(),
        "ledger_entries": svc.ledger.size(),
        "memory_events": svc.cortex.memory().count().map_err(ApiError::internal)?,
        "planners": svc.cortex.planner_names(),
        "mesh": svc.mesh.state(),
    })))
}

async fn kernel_state(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
) -> Result<Json<capsule_cortex::KernelState>, ApiError> {
    blocking(move || svc.cortex.state().map_err(ApiError::from))
        .await
        .map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepBody {
    #[serde(default)]
    gw: Vec<f64>,
    #[serde(default)]
    measure: bool,
    #[serde(default)]
    affect: Option<capsule_policy::Affect>,
    #[serde(default)]
    risk: Option<f64>,
    #[serde(default)]
    session: Option<capsule_cortex::SessionName>,
}

async fn kernel_step(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<StepBody>,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Agent, Role::Operator])?;
    blocking(move || {
        held_or(svc.cortex.step_in(
            &body.session.unwrap_or_default(),
            &caller.principal(),
            &body.gw,
            body.measure,
            body.affect,
            body.risk,
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    #[serde(default)]
    session: Option<capsule_cortex::SessionName>,
}

async fn kernel_reset(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    OptionalJsonBody(body): OptionalJsonBody<ResetBody>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Operator])?;
    refuse_if_killed(&svc)?;
    let session = body.and_then(|b| b.session).unwrap_or_default();
    let seq = blocking(move || Ok(svc.cortex.reset_in(&session, &caller.principal())?)).await?;
    Ok(Json(json!({ "reset": true, "ledger_seq": seq })))
}

async fn kernel_dump(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Operator])?;
    let bytes = blocking(move || Ok(svc.cortex.snapshot()?)).await?;
    Ok(Json(json!({ "snapshot": B64.encode(bytes) })))
}

async fn sessions(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let max_live = svc.config.sessions.max_live;
    let (list, live) = blocking(move || {
        let list = svc.cortex.sessions();
        let live = list.iter().filter(|s| s.state == "live").count();
        Ok((list, live))
    })
    .await?;
    Ok(Json(
        json!({ "sessions": list, "live": live, "max_live": max_live }),
    ))
}

async fn kill_status(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let status = svc.kill.status().map_err(policy_error)?;
    Ok(Json(
        serde_json::to_value(status).map_err(ApiError::internal)?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArmBody {
    #[serde(default = "default_arm_reason")]
    reason: String,
}

fn default_arm_reason() -> String {
    "armed through the API".into()
}

async fn kill_arm(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    OptionalJsonBody(body): OptionalJsonBody<ArmBody>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Operator])?;
    let reason = body.map_or_else(default_arm_reason, |b| b.reason);
    let st = blocking(move || {
        svc.kill
            .arm(&caller.principal(), &reason)
            .map_err(policy_error)
    })
    .await?;
    Ok(Json(serde_json::to_value(st).map_err(ApiError::internal)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisarmBody {
    signatures: Vec<OperatorSignature>,
    #[serde(default = "default_disarm_reason")]
    reason: String,
}

fn default_disarm_reason() -> String {
    "disarmed through the API".into()
}

async fn kill_disarm(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<DisarmBody>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Operator])?;
    let st = blocking(move || {
        let config = svc.policy.config();
        let operators = config.operator_keys().map_err(policy_error)?;
        svc.kill
            .disarm(
                &body.signatures,
                &operators,
                config.disarm_quorum as usize,
                &body.reason,
            )
            .map_err(policy_error)
    })
    .await?;
    Ok(Json(serde_json::to_value(st).map_err(ApiError::internal)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
}

async fn audit(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let max = svc.config.limits.audit_page_max;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "limit",
            format!("{limit} is outside 1..={max}"),
        ));
    }
    blocking(move || {
        let size = svc.ledger.size();
        let from = q.from.unwrap_or_else(|| size.saturating_sub(limit));
        let to = from.saturating_add(limit).min(size);
        let entries = (from..to)
            .map(|seq| svc.ledger.entry(seq))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ledger_error)?;
        Ok(Json(
            json!({ "size": size, "from": from, "entries": entries }),
        ))
    })
    .await
}

async fn audit_checkpoint(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let cp = blocking(move || svc.ledger.checkpoint().map_err(ledger_error)).await?;
    Ok(Json(json!({
        "size": cp.size(),
        "root": hex::encode(cp.root()),
        "note": cp.text(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofQuery {
    #[serde(default)]
    size: Option<u64>,
}

async fn audit_proof(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
    ApiPath(seq): ApiPath<u64>,
    ApiQuery(q): ApiQuery<ProofQuery>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let current = svc.ledger.size();
        let size = q.size.unwrap_or(current);
        if size <= current && seq >= size {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("entry {seq} is not in the tree of size {size}"),
            )
            .field("seq"));
        }
        let p = svc
            .ledger
            .inclusion_proof(seq, size)
            .map_err(ledger_error)?;
        Ok(Json(json!({
            "index": p.index,
            "tree_size": p.tree_size,
            "leaf_hash": hex::encode(p.leaf_hash),
            "root": hex::encode(p.root),
            "path": p.path.iter().map(hex::encode).collect::<Vec<_>>(),
        })))
    })
    .await
}

async fn audit_consistency(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
    ApiPath((old, new)): ApiPath<(u64, u64)>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        // The ledger names its arguments old_size and "new size"; the
        // caller wrote them as the path parameters old and new.
        let at_params = |e: LedgerError| {
            let mut e = ledger_error(e);
            e.field = match e.field.as_deref() {
                Some("old_size") => Some("old".into()),
                Some("new size" | "size") => Some("new".into()),
                _ => e.field,
            };
            e
        };
        let proof = svc.ledger.consistency_proof(old, new).map_err(at_params)?;
        let old_root = svc.ledger.root(old).map_err(at_params)?;
        let new_root = svc.ledger.root(new).map_err(at_params)?;
        Ok(Json(json!({
            "old_size": old,
            "new_size": new,
            "old_root": hex::encode(old_root),
            "new_root": hex::encode(new_root),
            "path": proof.iter().map(hex::encode).collect::<Vec<_>>(),
        })))
    })
    .await
}

async fn object(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id: capsule_store::ObjectId = id
        .parse()
        .map_err(|e: capsule_store::StoreError| ApiError::bad_request("id", e.to_string()))?;
    blocking(move || {
        let info = svc.store.stat(&id).map_err(store_error)?;
        let bytes = svc.store.get(&id).map_err(store_error)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{:?}", info.kind).to_lowercase()) {
            headers.insert("x-capsule-kind", v);
        }
        Ok((headers, bytes).into_response())
    })
    .await
}

fn store_error(e: capsule_store::StoreError) -> ApiError {
    use capsule_store::StoreError as E;
    match e {
        E::Invalid { field, reason } => ApiError::bad_request(field, reason),
        e @ E::NotFound { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()).field("id")
        }
        E::Ledger(e) => ledger_error(e),
        e => ApiError::internal(e),
    }
}

async fn policy(State(svc): Svc, Extension(_): Extension<Caller>) -> Json<Value> {
    let config = svc.policy.config();
    let rules = svc.policy.rules();
    Json(json!({
        "version": rules.version(),
        "mode": config.mode,
        "modification_enabled": config.modification_enabled,
        "guardian": config.guardian,
        "approval_quorum": config.approval_quorum,
        "disarm_quorum": config.disarm_quorum,
        "approvers": config.approvers,
        "operators": config.operators,
        "kill_switch_armed": svc.kill.is_armed(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: String,
}

async fn policy_mode(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ModeBody>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Operator])?;
    refuse_if_killed(&svc)?;
    let mode = Mode::parse(&body.mode).map_err(policy_error)?;
    blocking(move || {
        svc.policy
            .set_mode(mode, &caller.principal())
            .map_err(policy_error)
    })
    .await?;
    Ok(Json(json!({ "mode": mode })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModificationBody {
    enabled: bool,
}

async fn policy_modification(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ModificationBody>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Operator])?;
    refuse_if_killed(&svc)?;
    blocking(move || {
        svc.policy
            .set_modification(body.enabled, &caller.principal())
            .map_err(policy_error)
    })
    .await?;
    Ok(Json(json!({ "modification_enabled": body.enabled })))
}

fn affect_json(params: &[capsule_policy::affect::Parameter]) -> Value {
    json!({ "parameters": params })
}

async fn affect_show(State(svc): Svc, Extension(_): Extension<Caller>) -> Json<Value> {
    Json(affect_json(&svc.policy.affect()))
}

async fn affect_set(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    JsonBody(update): JsonBody<capsule_policy::Affect>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Operator])?;
    refuse_if_killed(&svc)?;
    if update.values().iter().all(Option::is_none) {
        return Err(ApiError::bad_request(
            "body",
            "name at least one of confidence, empathy, curiosity, safety, urgency, optimism, caution",
        ));
    }
    let params = blocking(move || {
        svc.policy
            .set_affect(&update, &caller.principal())
            .map_err(policy_error)
    })
    .await?;
    Ok(Json(affect_json(&params)))
}

async fn policy_evaluate(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<DecisionRequest>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Agent, Role::Operator, Role::Approver])?;
    let decision = svc.policy.decide(&req).map_err(policy_error)?;
    Ok(Json(json!({ "decision": decision, "recorded": false })))
}

/// The states an approval can be in (the `status` query of `/v1/approvals`).
const APPROVAL_STATUSES: [&str; 4] = ["pending", "approved", "released", "void"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsQuery {
    #[serde(default)]
    status: Option<String>,
}

async fn approvals(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
    ApiQuery(q): ApiQuery<ApprovalsQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None => Some("pending"),
        Some("all") => None,
        Some(s) => APPROVAL_STATUSES.iter().copied().find(|known| *known == s),
    };
    let status = match (status, q.status) {
        (None, Some(other)) if other != "all" => {
            return Err(ApiError::bad_request(
                "status",
                format!(
                    "{other:?} is not one of {}, all",
                    APPROVAL_STATUSES.join(", ")
                ),
            ))
        }
        (status, _) => status,
    };
    blocking(move || {
        let list = svc.approvals().list(status).map_err(policy_error)?;
        Ok(Json(json!({ "approvals": list })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    key: String,
    signature: String,
}

async fn approval_show(
    State(svc): Svc,
    Extension(_): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let a = svc.approvals().show(id).map_err(policy_error)?;
        Ok(Json(serde_json::to_value(a).map_err(ApiError::internal)?))
    })
    .await
}

/// Sign; when the signature completes the quorum and the service can run
/// the action (a held think or kernel step), it runs it now, once, and the
/// reply carries the outcome (`released`).
async fn approval_sign(
    State(svc): Svc,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
    JsonBody(body): JsonBody<SignBody>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Approver, Role::Operator])?;
    refuse_if_killed(&svc)?;
    blocking(move || {
        let keys = svc.policy.config().approver_keys().map_err(policy_error)?;
        let after = svc
            .approvals()
            .sign(id, &body.key, &body.signature, &keys, &svc.ledger)
            .map_err(policy_error)?;
        let mut reply = serde_json::to_value(&after).map_err(ApiError::internal)?;
        if after.status == "approved" {
            let released = if svc.cortex.runs(&after) {
                Some(serde_json::to_value(svc.cortex.release(id)?).map_err(ApiError::internal)?)
            } else if svc.mesh.runs(&after) {
                Some(svc.mesh.release(id).map_err(crate::mesh_http::mesh_error)?)
            } else {
                None
            };
            if let Some(released) = released {
                svc.metrics.approvals_released.inc();
                reply = serde_json::to_value(svc.approvals().show(id).map_err(policy_error)?)
                    .map_err(ApiError::internal)?;
                reply["released"] = released;
            }
        }
        Ok(Json(reply))
    })
    .await
}
