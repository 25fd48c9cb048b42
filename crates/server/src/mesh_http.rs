//! The task mesh over HTTP: `/v1/tasks`, `/v1/patterns`, `/v1/mesh`.
//! Thin: parse, check the role, call the mesh on a blocking thread, map
//! its errors (invalid → 400 naming the field, unknown → 404, a full
//! queue → 503 with Retry-After, wrong state → 409).

use crate::auth::{Caller, Role};
use crate::extract::{ApiPath, ApiQuery, JsonBody};
use crate::http::{blocking, ledger_error, policy_error, require, ApiError, Svc};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use capsule_mesh::{MeshError, TaskRequest};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn mesh_error(e: MeshError) -> ApiError {
    match e {
        MeshError::Invalid { field, reason } => ApiError::bad_request(field, reason),
        MeshError::NotFound { what } => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", what).field("id")
        }
        MeshError::Full {
            topic,
            capacity,
            retry_after_s,
        } => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!(
                    "the queue of topic {topic} holds {capacity} tasks; nothing was written, retry after {retry_after_s} s"
                ),
            )
            .field("domain");
            e.retry_after = Some(retry_after_s);
            e
        }
        MeshError::Conflict(reason) => ApiError::new(StatusCode::CONFLICT, "conflict", reason),
        MeshError::Policy(e) => policy_error(e),
        MeshError::Ledger(e) => ledger_error(e),
        e => ApiError::internal(e),
    }
}

pub(crate) async fn submit(
    axum::extract::State(svc): Svc,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<TaskRequest>,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Agent, Role::Operator])?;
    let reply = blocking(move || {
        svc.mesh
            .submit(&caller.principal(), &req)
            .map_err(mesh_error)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(reply)).into_response())
}

pub(crate) async fn task(
    axum::extract::State(svc): Svc,
    Extension(_): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let view = svc.mesh.get(&id).map_err(mesh_error)?;
        serde_json::to_value(view)
            .map(Json)
            .map_err(ApiError::internal)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedbackBody {
    outcome: String,
}

pub(crate) async fn feedback(
    axum::extract::State(svc): Svc,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<FeedbackBody>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Agent, Role::Operator])?;
    blocking(move || {
        svc.mesh
            .feedback(&caller.principal(), &id, &body.outcome)
            .map(|p| Json(json!({ "pattern": p })))
            .map_err(mesh_error)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatternsQuery {
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    layer: Option<String>,
}

pub(crate) async fn patterns(
    axum::extract::State(svc): Svc,
    Extension(_): Extension<Caller>,
    ApiQuery(q): ApiQuery<PatternsQuery>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        svc.mesh
            .patterns(q.domain.as_deref(), q.layer.as_deref())
            .map(|p| Json(json!({ "patterns": p })))
            .map_err(mesh_error)
    })
    .await
}

pub(crate) async fn maintain(
    axum::extract::State(svc): Svc,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Operator])?;
    blocking(move || {
        svc.mesh
            .maintain(&caller.principal())
            .map(|c| Json(json!({ "changes": c })))
            .map_err(mesh_error)
    })
    .await
}

pub(crate) async fn mesh_state(
    axum::extract::State(svc): Svc,
    Extension(_): Extension<Caller>,
) -> Json<Value> {
    Json(svc.mesh.state())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DispatchBody {
    enabled: bool,
}

pub(crate) async fn dispatch(
    axum::extract::State(svc): Svc,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<DispatchBody>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, &[Role::Operator])?;
    blocking(move || {
        let seq = svc
            .mesh
            .set_dispatch(body.enabled, &caller.principal())
            .map_err(mesh_error)?;
        Ok(Json(
            json!({ "dispatch_enabled": body.enabled, "ledger_seq": seq }),
        ))
    })
    .await
}
