//! Property tests of the kernel's invariants (SPEC K1, K5, K7).

use capsule_kernel::linalg::{self, c64};
use capsule_kernel::{
    restore, snapshot, DensityMatrix, Kernel, KernelConfig, KernelError, KrausChannel, Lindbladian,
};
use faer::Mat;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn gaussian(d: usize, rng: &mut ChaCha8Rng) -> Mat<c64> {
    linalg::random_gaussian(d, rng)
}

fn random_state(d: usize, rank: usize, rng: &mut ChaCha8Rng) -> DensityMatrix {
    capsule_kernel::random::density_matrix(d, rank, rng).expect("valid by construction")
}

fn random_channel(d: usize, k: usize, rng: &mut ChaCha8Rng) -> KrausChannel {
    capsule_kernel::random::kraus_channel(d, k, rng).expect("an isometry's blocks are complete")
}

fn small_kernel(dim: usize, seed: u64, workspace_dim: usize) -> Kernel {
    Kernel::new(KernelConfig {
        dim,
        seed,
        workspace_dim,
        ..KernelConfig::default()
    })
    .expect("kernel")
}

fn assert_valid(rho: &DensityMatrix, tol: f64) {
    let obs = rho.observables().expect("eigenvalues converge");
    assert!(
        obs.trace_error <= tol,
        "trace error {:.3e}",
        obs.trace_error
    );
    assert!(
        obs.hermiticity_error <= tol,
        "hermiticity {:.3e}",
        obs.hermiticity_error
    );
    assert!(obs.lambda_min >= -tol, "λ_min {:.3e}", obs.lambda_min);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_cptp_channels_map_valid_states_to_valid_states(seed in any::<u64>(), d in 2usize..24, k in 1usize..6, rank in 1usize..4) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rho = random_state(d, rank.min(d), &mut rng);
        let ch = random_channel(d, k, &mut rng);
        assert_valid(&ch.apply(&rho).expect("same dimension"), 1e-12);
    }

    #[test]
    fn incomplete_kraus_sets_are_rejected_with_their_deviation(seed in any::<u64>(), d in 2usize..10, scale in 1.0001f64..2.0) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ch = random_channel(d, 2, &mut rng);
        let ops = vec![ch.operator(0) * faer::Scale(c64::new(scale, 0.0)), ch.operator(1)];
        match KrausChannel::new(&ops) {
            Err(KernelError::IncompleteKraus { deviation, tolerance }) => {
                prop_assert!(deviation > tolerance);
                let msg = KrausChannel::new(&ops).expect_err("same").to_string();
                prop_assert!(msg.contains(&format!("{deviation:.3e}")), "{}", msg);
            }
            other => prop_assert!(false, "expected IncompleteKraus, got {:?}", other.map(|c| c.count())),
        }
    }

    #[test]
    fn same_seed_gives_the_same_measurement_sequence(seed in any::<u64>()) {
        let cfg = KernelConfig { dim: 6, seed, workspace_dim: 3, ..KernelConfig::default() };
        let run = || {
            let mut k = Kernel::new(cfg.clone()).expect("kernel");
            (0..12).map(|i| k.step(&[0.5, -1.0, i as f64 * 0.1], i % 2 == 0).expect("step").measured_state).collect::<Vec<_>>()
        };
        prop_assert_eq!(run(), run());
    }

    #[test]
    fn snapshot_round_trip_is_exact(seed in any::<u64>(), steps in 0usize..6) {
        let mut k = small_kernel(5, seed, 2);
        for _ in 0..steps {
            k.step(&[0.7, -0.3], false).expect("step");
        }
        let bytes = snapshot(&k).expect("snapshot");
        let mut back = restore(&bytes).expect("restore");
        prop_assert_eq!(back.state(), k.state());
        prop_assert_eq!((back.step_count(), back.time().to_bits(), back.dt().to_bits()), (k.step_count(), k.time().to_bits(), k.dt().to_bits()));
        prop_assert_eq!(snapshot(&back).expect("again"), bytes);
        prop_assert_eq!(back.step(&[0.1], true).expect("step"), k.step(&[0.1], true).expect("step"));
    }
}

#[test]
fn a_snapshot_with_any_byte_flipped_fails_to_load_with_a_clear_error() {
    let mut k = small_kernel(3, 9, 2);
    k.step(&[1.0, 2.0], false).expect("step");
    let bytes = snapshot(&k).expect("snapshot");
    for pos in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x01;
        let err = restore(&bad).expect_err("corruption is detected");
        assert!(
            err.to_string().contains("checksum mismatch"),
            "byte {pos}: {err}"
        );
    }
    assert!(restore(&bytes[..bytes.len() - 1]).is_err());
    assert!(restore(&[])
        .expect_err("empty")
        .to_string()
        .contains("too short"));
}

#[test]
fn a_thousand_lindblad_steps_keep_the_trace_within_1e_10() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let d = 12;
    let a = gaussian(d, &mut rng);
    let h = (&a + a.adjoint()) * faer::Scale(c64::new(0.1, 0.0));
    let jumps: Vec<_> = (0..3)
        .map(|_| gaussian(d, &mut rng) * faer::Scale(c64::new(0.05, 0.0)))
        .collect();
    let l = Lindbladian::from_operators(h, &jumps).expect("valid");
    let mut rho = random_state(d, 1, &mut rng);
    for _ in 0..1000 {
        rho = l
            .evolve(&rho, 0.01, 1e-12)
            .expect("evolves")
            .into_state()
            .expect("valid");
    }
    assert_valid(&rho, 1e-10);
}

#[test]
fn a_thousand_kernel_steps_keep_the_trace_within_1e_10() {
    let mut k = small_kernel(16, 3, 4);
    for i in 0..1000 {
        let out = k
            .step(&[(i as f64 * 0.01).sin(), 0.5, -0.5, 1.0], false)
            .expect("step");
        assert!(out.observables.trace_error <= 1e-10);
        assert!(out.is_valid);
    }
}

#[test]
fn a_pure_state_stays_valid_under_the_lindblad_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let d = 10;
    let a = gaussian(d, &mut rng);
    let h = (&a + a.adjoint()) * faer::Scale(c64::new(0.2, 0.0));
    let l = Lindbladian::from_operators(
        h,
        &[gaussian(d, &mut rng) * faer::Scale(c64::new(0.01, 0.0))],
    )
    .expect("valid");
    let rho = random_state(d, 1, &mut rng);
    let out = l.evolve(&rho, 0.5, 1e-10).expect("evolves");
    assert!(
        out.observables.lambda_min >= -1e-12,
        "{}",
        out.observables.lambda_min
    );
    out.into_state().expect("valid");
}
