//! Helpers shared by the CLI tests.

use std::process::Output;

/// The stdout of a command that must have succeeded (else fail showing both streams).
pub fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}
