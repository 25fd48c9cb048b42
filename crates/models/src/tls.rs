//! TLS for Capsule's HTTPS clients (model downloads, remote planners):
//! rustls with the *ring* crypto provider. reqwest's own default provider
//! (aws-lc-rs) builds C code with cmake; ring needs only a C compiler, so
//! a fresh machine with the Rust toolchain and gcc builds Capsule.
//!
//! reqwest built without a provider panics when a client is made before
//! one is installed as the process default: every place that makes a
//! client calls [`install_crypto_provider`] first (it is idempotent).

use std::sync::Once;

/// Install ring as the process-wide rustls provider, once; a provider
/// installed earlier by someone else is left in place.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already the default: that one
        // serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
