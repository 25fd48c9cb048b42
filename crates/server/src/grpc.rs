//! The gRPC front end: `capsule.brain.v1.BrainAI` generated from
//! `proto/capsule/brain/v1/brain.proto`, with the standard health service
//! and server reflection beside it. Authentication, roles and the rate
//! limit are the HTTP API's; errors map to the status codes the .proto
//! documents.

use crate::auth::{Caller, Role};
use crate::service::{Refusal, Service};
use capsule_cortex::{CortexError, SessionName, StepEvent};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("capsule.brain.v1");
}

/// The encoded descriptor set, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/brain_descriptor.bin"));

use pb::brain_ai_server::BrainAi;
pub use pb::brain_ai_server::BrainAiServer;

pub struct BrainService {
    svc: Arc<Service>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl BrainService {
    pub fn new(svc: Arc<Service>, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        BrainService { svc, shutdown }
    }

    fn caller<T>(&self, req: &Request<T>, roles: &[Role]) -> Result<Caller, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let caller = self.svc.admit(header).map_err(|r| match r {
            Refusal::NoToken => {
                Status::unauthenticated("send authorization: Bearer <token> metadata")
            }
            Refusal::UnknownToken => Status::unauthenticated("unknown token"),
            Refusal::RateLimited { retry_after_s } => {
                Status::resource_exhausted(format!("rate limit; retry in {retry_after_s} s"))
            }
        })?;
        if !roles.contains(&caller.role) {
            return Err(Status::permission_denied(format!(
                "the {} role may not call this",
                caller.role.as_str()
            )));
        }
        Ok(caller)
    }
}

fn status(e: CortexError) -> Status {
    match e {
        CortexError::Invalid { field, reason } => {
            Status::invalid_argument(format!("{field}: {reason}"))
        }
        CortexError::Critic { rejection, .. } => {
            Status::invalid_argument(format!("{}: {}", rejection.field, rejection.reason))
        }
        CortexError::Refused { decision, .. } if decision.reason == "kill_switch" => {
            Status::failed_precondition(format!("kill switch armed: {}", decision.explanation))
        }
        CortexError::Refused { decision, .. } => Status::permission_denied(format!(
            "policy {}: {}",
            decision.outcome, decision.explanation
        )),
        e @ CortexError::Halted { .. } => Status::failed_precondition(e.to_string()),
        // gRPC has no 202: a held step is a precondition (approval) not yet
        // met; the message names the approval to sign.
        CortexError::Held(h) => Status::failed_precondition(format!(
            "held for approval: approval_id {} digest {} quorum {} ({}); sign it with POST /v1/approvals/{}/sign or `capsule approvals sign`",
            h.approval_id, h.digest, h.quorum, h.decision.explanation, h.approval_id
        )),
        e => Status::internal(e.to_string()),
    }
}

fn reply(e: &StepEvent) -> pb::StepReply {
    let r = &e.result;
    pb::StepReply {
        entropy: r.entropy,
        measured_state: r.measured_state.map(|i| i as i64),
        trace_error: r.trace_error,
        is_valid: r.valid,
        purity: r.purity,
        step: r.step,
        t: r.t,
        dt: r.dt,
        ledger_seq: e.ledger_seq,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

/// Decrements the subscriber count when a stream ends.
struct Subscription(Arc<Service>);
impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::SeqCst);
    }
}

type StepStream = Pin<Box<dyn Stream<Item = Result<pb::StepReply, Status>> + Send>>;

#[tonic::async_trait]
impl BrainAi for BrainService {
    async fn step(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepReply>, Status> {
        let caller = self.caller(&request, &[Role::Agent, Role::Operator])?;
        let req = request.into_inner();
        let svc = self.svc.clone();
        let session = match req.session.as_deref() {
            Some(name) => SessionName::parse(name).map_err(status)?,
            None => SessionName::default(),
        };
        let done = blocking(move || {
            svc.cortex
                .step_in(
                    &session,
                    &caller.principal(),
                    &req.global_workspace,
                    req.measure,
                    None,
                    None,
                )
                .map_err(status)
        })
        .await?;
        Ok(Response::new(reply(&StepEvent {
            result: done.result,
            ledger_seq: done.ledger_seq,
        })))
    }

    async fn get_state(
        &self,
        request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::StateReply>, Status> {
        self.caller(&request, &Role::ALL)?;
        let svc = self.svc.clone();
        let s = blocking(move || svc.cortex.state().map_err(status)).await?;
        Ok(Response::new(pb::StateReply {
            dimension: s.dimension as u32,
            entropy: s.entropy,
            purity: s.purity,
            step: s.step,
            t: s.t,
            trace_error: s.trace_error,
            is_valid: s.valid,
            halted_reason: s.halted.unwrap_or_default(),
        }))
    }

    type StreamStepsStream = StepStream;

    async fn stream_steps(
        &self,
        request: Request<pb::StreamStepsRequest>,
    ) -> Result<Response<StepStream>, Status> {
        self.caller(&request, &Role::ALL)?;
        let limit = request.into_inner().limit;
        let max = self.svc.config.limits.max_stream_subscribers;
        if self.svc.subscribers.fetch_add(1, Ordering::SeqCst) >= max {
            self.svc.subscribers.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::resource_exhausted(format!(
                "{max} StreamSteps subscribers already (limits.max_stream_subscribers)"
            )));
        }
        let guard = Subscription(self.svc.clone());
        let mut shutdown = self.shutdown.clone();
        let stopped = async move {
            // Ends when shutdown is signalled or its sender is gone.
            let _ = shutdown.wait_for(|s| *s).await;
        };
        let steps = BroadcastStream::new(self.svc.steps.subscribe())
            .map(move |item| {
                let _keep = &guard;
                match item {
                    Ok(e) => Ok(reply(&e)),
                    // tonic ends the stream after sending an error status.
                    Err(BroadcastStreamRecvError::Lagged(n)) => Err(Status::resource_exhausted(
                        format!("this subscriber fell {n} steps behind; reconnect"),
                    )),
                }
            })
            .take(if limit == 0 {
                usize::MAX
            } else {
                limit as usize
            });
        let steps = futures_util::StreamExt::take_until(steps, Box::pin(stopped));
        Ok(Response::new(Box::pin(steps)))
    }

    async fn dump_state(
        &self,
        request: Request<pb::DumpStateRequest>,
    ) -> Result<Response<pb::DumpStateReply>, Status> {
        self.caller(&request, &[Role::Operator])?;
        let svc = self.svc.clone();
        let (snapshot, s) = blocking(move || {
            Ok((
                svc.cortex.snapshot().map_err(status)?,
                svc.cortex.state().map_err(status)?,
            ))
        })
        .await?;
        Ok(Response::new(pb::DumpStateReply {
            snapshot,
            step: s.step,
            t: s.t,
        }))
    }
}
