//! Every kernel test vector (copied byte for byte from the project's shared
//! test data) is recomputed and matches within its file's tolerance.

use capsule_kernel::testvector::check_vector;
use std::path::Path;

#[test]
fn every_kernel_test_vector_matches_within_its_tolerance() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("vector directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 18, "all 18 vector files are present");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable file");
        let report = check_vector(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            report.passed(),
            "{}: error {:.3e} exceeds tolerance {:.1e}",
            path.display(),
            report.max_error,
            report.tolerance
        );
    }
}

#[test]
fn a_hand_edited_expected_value_fails_the_check() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/kraus_apply_d2.json");
    let text = std::fs::read_to_string(path).expect("readable file");
    let edited = text.replacen(
        "\"expected_rho\": {\"re\": [[0.4",
        "\"expected_rho\": {\"re\": [[0.5",
        1,
    );
    assert_ne!(text, edited);
    let report = check_vector(&edited).expect("still well-formed");
    assert!(!report.passed());
}

#[test]
fn malformed_vector_files_are_rejected_naming_the_field() {
    let err = check_vector(r#"{"kind": "kraus_apply", "tolerance": 1e-12}"#).expect_err("no rho");
    assert!(err.to_string().contains("kraus"), "{err}");
    let err =
        check_vector(r#"{"kind": "teleport", "tolerance": 1e-12}"#).expect_err("unknown kind");
    assert!(err.to_string().contains("teleport"), "{err}");
    assert!(check_vector("not json").is_err());
}
