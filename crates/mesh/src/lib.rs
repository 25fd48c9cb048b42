//! Capsule's task mesh (SPEC T1–T3, M3, M4, N1, N2, N7, S6).
//!
//! **Owns:** tasks by content ID (`task.rs`), the node contract — messages
//! that carry IDs, never payloads, and node results with trace crumbs
//! (`contract.rs`) —, the router with one bounded queue per topic and the
//! dispatch switch (`router.rs`), the domain bots behind one trait
//! (`bots/`: calc, medical, kernel, general), classification of queries
//! without a domain (`classify.rs`), the task table that is the result
//! cache and the pattern table (`db.rs`), the pattern-memory rules
//! (`patterns.rs`), the fold guard (`fold.rs`), and the mesh that puts
//! them together (`mesh/`).
//!
//! **Never:** speaks HTTP (the server does), holds a payload in a message,
//! runs a task the policy engine did not let through, or grows a queue
//! past its capacity.
//!
//! # The path of one task
//!
//! `submit` validates the request, classifies it when no domain is given,
//! normalises it into a [`TaskSpec`] whose store ID is the task ID, and
//! asks the policy engine (`task.submit` on `task:<domain>`, in the lane).
//! Then, in order: a done result for that ID answers `cache_hit` (the
//! decision and the hit are one durable ledger entry); a task already
//! queued or running answers `queued` and runs once; a general question
//! close to a confident pattern reuses its result (`reused_from`);
//! otherwise a place in the topic's queue is reserved (503 when full,
//! before anything is written), the spec is stored, the row and the
//! decision record are written (the row commits only after the record is
//! durable) and the message is published. A held decision queues an
//! approval; on release the task is queued like any other. A worker takes
//! the message (only while dispatch is on), runs the bot, stores the
//! artifact (namespace RESULT), records `task.result` with the bot, result
//! ID, duration and verification, and writes the pattern through the fold
//! guard.

#![forbid(unsafe_code)]

pub mod bots;
pub mod classify;
pub mod contract;
pub mod db;
pub mod error;
pub mod fold;
pub mod mesh;
pub mod patterns;
pub mod router;
pub mod task;

pub use bots::{Artifact, Bot, BotContext, BotError, BotInfo, Verification};
pub use classify::{Classification, Classifier};
pub use error::{MeshError, Result};
pub use mesh::{LayerChange, Mesh, MeshConfig, MeshObserver, MeshParts, SubmitReply, TaskView};
pub use task::{TaskRequest, TaskSpec};
