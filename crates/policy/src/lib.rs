//! `capsule-policy`: nothing in Capsule acts without a decision from here
//! (SPEC section P).
//!
//! **Owns:** the Cedar schema of Capsule's principals, actions and
//! resources and the default policy set ([`rules`]); the autonomy table
//! ([`autonomy`]); the risk and safety level of every action ([`levels`]);
//! the affect parameters as state ([`affect`]); the guardian's risk and
//! drift limits ([`guardian`]);
//! lanes and the dry-run guard ([`lanes`]); the decision pipeline and its
//! explanations, recorded in the ledger ([`engine`]); the kill switch
//! ([`killswitch`]); the durable approval queue, its exactly-once release
//! and expiry ([`approvals`]); re-deciding a recorded decision before it is
//! acted on ([`redecide`]); shadow replay of recorded decisions under a
//! candidate set ([`replay`]).
//!
//! **Must never:** allow what no policy permits (default deny); let a
//! permit override a forbid; decide anything but `blocked` while the kill
//! switch is armed; let a request lower its action's risk or level, or
//! raise an affect parameter; disarm without operator signatures; release an approved
//! action twice, or at all once anything it covers has changed; replace the
//! active rules with a set that fails to parse or validate; know about HTTP.
//!
//! **Invariants:** every decision carries the deciding policy ids, the
//! autonomy rule that produced it (when reached) and, for a refusal or a
//! wait, what would have let it pass; a decision is a pure function of the
//! rule set, the recorded circumstances and the request, which is what
//! makes replay exact.
//!
//! The policy language is Cedar (`cedar-policy`); approvals live in SQLite
//! (`rusqlite`); signatures are Ed25519 with the ledger's key format.

#![forbid(unsafe_code)]

pub mod affect;
pub mod approvals;
pub mod autonomy;
mod durable;
pub mod engine;
pub mod error;
pub mod guardian;
pub mod killswitch;
pub mod lanes;
pub mod levels;
pub mod redecide;
pub mod replay;
pub mod reserved;
pub mod rules;

pub use autonomy::{Affect, Mode, Outcome, SafetyLevel};
pub use engine::{Circumstances, Decision, DecisionRequest, PolicyConfig, PolicyEngine};
pub use error::{PolicyError, Result};
pub use lanes::Lane;
pub use levels::{Assessment, Levels, Risk, RiskSource};
pub use rules::RuleSet;
