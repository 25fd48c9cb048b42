//! Dense complex linear algebra on top of `faer`.
//!
//! Matrix products go through faer's GEMM kernels. Three routines are
//! written here by hand, each for a measured reason:
//! - the Householder reduction to tridiagonal form up to d = 512
//!   ([`crate::tridiagonal`] says why);
//! - `tridiagonal_eigenvalues`: faer's eigenvalue-only path runs a QR
//!   algorithm on the tridiagonal matrix that takes ~60 % of the time of a
//!   64×64 Hermitian eigenvalue problem; the root-free implicit QL iteration
//!   with Wilkinson shifts (Pal–Walker–Kahan, as LAPACK `dsterf`) does that
//!   part in a fraction of the time.
//! - Hermitian completion (`fill_upper_from_lower`): products whose result is
//!   known to be Hermitian compute only the lower triangle (faer's triangular
//!   matmul, or on one thread at 32 ≤ d ≤ 128 column panels of faer's full
//!   products, which run faster there: `panel_lower`) and mirror it, which
//!   halves their cost.

use crate::error::{KernelError, Result};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::tridiag;
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::reborrow::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use std::sync::atomic::{AtomicBool, Ordering};

pub use faer::c64;

/// Complex zero.
pub const ZERO: c64 = c64 { re: 0.0, im: 0.0 };
/// Complex one.
pub const ONE: c64 = c64 { re: 1.0, im: 0.0 };

/// Below this dimension products run on the calling thread: the fork/join
/// cost of a thread pool exceeds the work (measured: d = 64 is ~1.5× slower
/// on two threads than on one).
pub const PARALLEL_MIN_DIM: usize = 128;

/// From this dimension up to [`PARALLEL_MIN_DIM`] products are split in two
/// halves by hand, one per thread (faer's own split at d = 64 costs more
/// than it saves; two independent single-threaded halves do not).
pub const SPLIT_MIN_DIM: usize = 48;

/// Whether products of dimension `d` are split in two by hand when the pool
/// has two threads or more.
fn in_split_range(d: usize) -> bool {
    (SPLIT_MIN_DIM..PARALLEL_MIN_DIM).contains(&d)
}

fn split_in_two(d: usize) -> bool {
    in_split_range(d) && rayon::current_num_threads() > 1
}

/// Runs `f`, which does products of dimension `d`, on a worker of the rayon
/// pool when faer runs those products in parallel (d ≥ [`PARALLEL_MIN_DIM`];
/// directly when already on a worker, or for smaller d).
///
/// faer's parallel products fork with `rayon::join`, which, called from
/// outside the pool, parks the caller until a worker has run both halves:
/// two thread switches per fork. Work of that size enters the pool once with
/// this instead (measured: Kraus d = 256 9.77 → 8.59 ms). Below
/// [`PARALLEL_MIN_DIM`] the splits are ours and go through [`join`], which
/// keeps the calling thread working and is faster than entering the pool
/// (measured on d = 64, medians of 6 interleaved runs: `evolve` 2.36 →
/// 2.26 ms, a Lindblad step 1.11 → 1.00 ms).
pub fn on_pool<R: Send>(d: usize, f: impl FnOnce() -> R + Send) -> R {
    let parallel = d >= PARALLEL_MIN_DIM && rayon::current_num_threads() > 1;
    if parallel && rayon::current_thread_index().is_none() {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

/// Most rounds the calling thread of [`join`] spins for the pool's half.
/// A round is one check and one pause instruction, ~25 ns on this project's
/// VM (Zen 4), so the bound is ~200 µs; it is a count, not a time, because
/// the kernel reads no clock.
const SPIN_ROUNDS: u32 = 8192;

/// Runs `a` and `b`, `b` on the rayon pool, and returns both results.
///
/// On a pool worker this is `rayon::join`. From any other thread
/// `rayon::join` parks the caller until a worker has run both closures, and
/// waking the parked caller costs 7–25 µs on this project's VM (measured on
/// two single-threaded 58 µs halves of a d = 64 Kraus step: 123–142 µs from
/// outside the pool, 116 µs on a worker). Here the caller runs `a` itself
/// while a worker runs `b`, then spins (`SPIN_ROUNDS` at most) until `b`
/// is done before it falls back to rayon's blocking wait: 117 µs. The two
/// halves are of equal size, so the spin is short.
///
/// Tried and dropped: letting the caller run `b` itself when no worker has
/// taken it yet, so that it never spins while the pool is busy elsewhere.
/// With the ~20 µs halves of an `evolve` step the caller often took `b`
/// before a waking worker did, and `evolve` at d = 64 became 9 % slower
/// (medians of 4 interleaved runs, 2.86 → 3.13 ms).
pub fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if rayon::current_thread_index().is_some() {
        return rayon::join(a, b);
    }
    let done = AtomicBool::new(false);
    let mut out_b = None;
    let out_a = rayon::in_place_scope(|s| {
        s.spawn(|_| {
            out_b = Some(b());
            done.store(true, Ordering::Release);
        });
        let out_a = a();
        let mut rounds = 0;
        while !done.load(Ordering::Acquire) && rounds < SPIN_ROUNDS {
            std::hint::spin_loop();
            rounds += 1;
        }
        out_a
    });
    // The scope returns only once `b` has run (a panic in `b` resumes there).
    (out_a, out_b.expect("the scope waited for b"))
}

/// dst = lhs · rhs, parallel over two row halves for mid-sized d.
pub fn product(dst: MatMut<'_, c64>, lhs: MatRef<'_, c64>, rhs: MatRef<'_, c64>) {
    let d = rhs.ncols();
    if split_in_two(d) {
        let h = dst.nrows() / 2;
        let (top, bottom) = dst.split_at_row_mut(h);
        let (lt, lb) = lhs.split_at_row(h);
        join(
            || matmul(top, Accum::Replace, lt, rhs, ONE, Par::Seq),
            || matmul(bottom, Accum::Replace, lb, rhs, ONE, Par::Seq),
        );
    } else {
        matmul(dst, Accum::Replace, lhs, rhs, ONE, par_for(d));
    }
}

/// Parallelism for products of dimension `d`.
pub fn par_for(d: usize) -> Par {
    if d >= PARALLEL_MIN_DIM && rayon::current_num_threads() > 1 {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

/// Copies the strictly lower triangle onto the upper one (conjugated) and
/// zeroes the imaginary part of the diagonal, making `m` exactly Hermitian.
pub fn fill_upper_from_lower(mut m: MatMut<'_, c64>) {
    let d = m.nrows();
    for j in 0..d {
        let v = m[(j, j)];
        m[(j, j)] = c64::new(v.re, 0.0);
        for i in (j + 1)..d {
            let v = m[(i, j)];
            // 0.0 − im rather than −im: a zero stays +0.0, so mirroring is
            // idempotent bit for bit (snapshots round-trip exactly).
            m[(j, i)] = c64::new(v.re, 0.0 - v.im);
        }
    }
}

/// Replaces `m` by its Hermitian part (M + M†)/2.
pub fn hermitize(mut m: MatMut<'_, c64>) {
    let d = m.nrows();
    for j in 0..d {
        for i in j..d {
            let v = (m[(i, j)] + m[(j, i)].conj()) * 0.5;
            m[(i, j)] = v;
        }
    }
    fill_upper_from_lower(m);
}

/// max |M_ij − conj(M_ji)|.
pub fn hermiticity_error(m: MatRef<'_, c64>) -> f64 {
    let d = m.nrows();
    let mut err: f64 = 0.0;
    for j in 0..d {
        for i in j..d {
            err = err.max((m[(i, j)] - m[(j, i)].conj()).norm());
        }
    }
    err
}

/// Tr M.
pub fn trace(m: MatRef<'_, c64>) -> c64 {
    (0..m.nrows()).map(|i| m[(i, i)]).sum()
}

/// Frobenius norm.
pub fn frobenius(m: MatRef<'_, c64>) -> f64 {
    m.norm_l2()
}

/// max |A_ij − B_ij|.
pub fn max_abs_diff(a: MatRef<'_, c64>, b: MatRef<'_, c64>) -> f64 {
    let mut err: f64 = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            err = err.max((a[(i, j)] - b[(i, j)]).norm());
        }
    }
    err
}

/// ‖Σ_i A_i† A_i − I‖ (spectral norm bound via Frobenius) for the blocks of a
/// stacked (k·d)×d matrix: the completeness deviation of a Kraus set.
pub fn gram_deviation(stack: MatRef<'_, c64>) -> f64 {
    let d = stack.ncols();
    let mut g = Mat::<c64>::zeros(d, d);
    matmul(
        g.as_mut(),
        Accum::Replace,
        stack.adjoint(),
        stack,
        ONE,
        par_for(d),
    );
    for i in 0..d {
        g[(i, i)] -= ONE;
    }
    frobenius(g.as_ref())
}

/// Σ_i A_i B_i† over the blocks of two stacked (k·d)×d column-major buffers,
/// written into the lower triangle of `out` (the strict upper triangle is
/// not read, and is left unspecified).
///
/// A column-major (k·d)×d buffer holding blocks A_0..A_{k−1} is, read as a
/// d×(k·d) column-major matrix, the matrix whose column `c·k + i` is column
/// `c` of A_i; the sum of block products is then a single product M_A · M_B†.
///
/// When the sum is split in two (d in the split range, two threads),
/// `partial` holds the second half's d×d sum and must have d² elements;
/// otherwise it is not used and may be empty.
pub fn stacked_sum_lower(
    a_stack: &[c64],
    b_stack: &[c64],
    mut out: MatMut<'_, c64>,
    partial: &mut [c64],
) {
    let d = out.nrows();
    let kd = a_stack.len() / d;
    let ma = MatRef::from_column_major_slice(a_stack, d, kd);
    let mb = MatRef::from_column_major_slice(b_stack, d, kd);
    if split_in_two(d) {
        // Two partial sums over halves of the inner dimension, then one add.
        let h = kd / 2;
        let mut other = MatMut::from_column_major_slice_mut(partial, d, d);
        join(
            || sum_lower(out.rb_mut(), ma.subcols(0, h), mb.subcols(0, h), Par::Seq),
            || {
                sum_lower(
                    other.rb_mut(),
                    ma.subcols(h, kd - h),
                    mb.subcols(h, kd - h),
                    Par::Seq,
                )
            },
        );
        add_lower(out, other.as_ref());
    } else {
        sum_lower(out, ma, mb, par_for(d));
    }
}

/// Lower triangle of a · b† into `dst` (its strict upper triangle may be
/// overwritten too).
///
/// On one thread for d in [`PANEL_MIN_DIM`, `PANEL_MAX_DIM`] this goes
/// through [`panel_lower`] instead of faer's triangular product; measured
/// single-threaded, faer's vs the panels (d × kd inner): 64 × 128 51 → 42 µs,
/// 48 × 96 24 → 18 µs, 96 × 384 307 → 258 µs, 128 × 256 350 → 305 µs;
/// at d = 16 faer's is faster (2.6 vs 3.2 µs).
fn sum_lower(dst: MatMut<'_, c64>, a: MatRef<'_, c64>, b: MatRef<'_, c64>, par: Par) {
    if par == Par::Seq && (PANEL_MIN_DIM..=PANEL_MAX_DIM).contains(&dst.nrows()) {
        return panel_lower(dst, a, b);
    }
    triangular::matmul(
        dst,
        BlockStructure::TriangularLower,
        Accum::Replace,
        a,
        BlockStructure::Rectangular,
        b.adjoint(),
        BlockStructure::Rectangular,
        ONE,
        par,
    )
}

/// Smallest dimension for which [`sum_lower`] uses [`panel_lower`].
const PANEL_MIN_DIM: usize = 32;
/// Largest dimension for which [`sum_lower`] uses [`panel_lower`].
const PANEL_MAX_DIM: usize = 128;
/// Width of the column panels of [`panel_lower`].
const PANEL_WIDTH: usize = 4;
/// Above this dimension [`panel_lower`] first splits the triangle in two.
const PANEL_BASE_DIM: usize = 64;

/// Lower triangle of a · b† as plain products, one thread: above
/// [`PANEL_BASE_DIM`] the off-diagonal block as one product and each half
/// recursively; below it, column panels of width [`PANEL_WIDTH`], each the
/// product of the rows from the panel's diagonal down (so a panel also fills
/// the strict upper triangle of its diagonal block, 3·d/2 extra entries).
///
/// faer's triangular product at these sizes reaches ~40 GFLOP/s on the
/// flops it must do, against ~57 for its full products; the panels waste
/// ~5 % of the flops at d = 64 and run at ~50.
fn panel_lower(mut dst: MatMut<'_, c64>, a: MatRef<'_, c64>, b: MatRef<'_, c64>) {
    let n = dst.nrows();
    if n > PANEL_BASE_DIM {
        let h = (n / 2).next_multiple_of(PANEL_WIDTH);
        let (c11, _, c21, c22) = dst.split_at_mut(h, h);
        let (a1, a2) = a.split_at_row(h);
        let (b1, b2) = b.split_at_row(h);
        matmul(c21, Accum::Replace, a2, b1.adjoint(), ONE, Par::Seq);
        panel_lower(c11, a1, b1);
        panel_lower(c22, a2, b2);
        return;
    }
    for j in (0..n).step_by(PANEL_WIDTH) {
        let w = PANEL_WIDTH.min(n - j);
        matmul(
            dst.rb_mut().submatrix_mut(j, j, n - j, w),
            Accum::Replace,
            a.subrows(j, n - j),
            b.subrows(j, w).adjoint(),
            ONE,
            Par::Seq,
        );
    }
}

/// The lower triangle of `out` += that of `other`.
fn add_lower(mut out: MatMut<'_, c64>, other: MatRef<'_, c64>) {
    for j in 0..out.ncols() {
        for i in j..out.nrows() {
            out[(i, j)] += other[(i, j)];
        }
    }
}

/// Most operators for which [`Sandwich`] keeps per-thread halves.
pub const HALVES_MAX_COUNT: usize = 64;

/// Operators K_0..K_{k−1} (d×d) prepared for the lower triangle of
/// Σ_i K_i X K_i†: stacked into one (k·d)×d column-major buffer, so the sum
/// is two products, X' = K·X and the lower triangle of Σ_i X'_i K_i† (see
/// [`stacked_sum_lower`]).
///
/// In the two-thread range of [`SPLIT_MIN_DIM`] with k ≥ 2 the operators
/// are also kept as two stacked halves, and each thread computes the whole
/// sum over its half (both products) before one add: one fork instead of
/// one per product, and each thread's X' stays in its own cache (measured:
/// Kraus k = 4, d = 64, medians of two sets of 8–10 interleaved runs
/// 191 → 172 µs and 194 → 154 µs). The halves are a second copy of the
/// operators, so they are kept only for up to [`HALVES_MAX_COUNT`]
/// operators (a large channel keeps one copy and splits each product).
#[derive(Clone, Debug)]
pub struct Sandwich {
    d: usize,
    count: usize,
    stack: Vec<c64>,
    halves: Option<(Vec<c64>, Vec<c64>)>,
}

impl Sandwich {
    /// `blocks` must all be d×d.
    pub fn new(blocks: &[Mat<c64>]) -> Self {
        let d = blocks.first().map_or(0, |b| b.nrows());
        let halves =
            ((2..=HALVES_MAX_COUNT).contains(&blocks.len()) && in_split_range(d)).then(|| {
                let (a, b) = blocks.split_at(blocks.len().div_ceil(2));
                (stack_blocks(a), stack_blocks(b))
            });
        Sandwich {
            d,
            count: blocks.len(),
            stack: stack_blocks(blocks),
            halves,
        }
    }

    /// Number of operators.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The (k·d)×d stack.
    pub fn stack(&self) -> MatRef<'_, c64> {
        MatRef::from_column_major_slice(&self.stack, self.count * self.d, self.d)
    }

    /// Operator `i`.
    pub fn block(&self, i: usize) -> Mat<c64> {
        unstack_block(&self.stack, self.d, i)
    }

    /// A buffer for [`Sandwich::apply_lower`]: room for K·x, then, where
    /// the sum may be split in two, for the second half's d×d partial sum.
    pub fn scratch(&self) -> Vec<c64> {
        let partial = if in_split_range(self.d) {
            self.d * self.d
        } else {
            0
        };
        vec![ZERO; self.stack.len() + partial]
    }

    /// The lower triangle of Σ_i K_i x K_i† into `out` (its strict upper
    /// triangle is left unspecified); `scratch` comes from
    /// [`Sandwich::scratch`].
    pub fn apply_lower(&self, x: MatRef<'_, c64>, mut out: MatMut<'_, c64>, scratch: &mut [c64]) {
        let d = self.d;
        let half = |ops: &[c64], s: &mut [c64], dst: MatMut<'_, c64>| {
            let kd = ops.len() / d;
            let k = MatRef::from_column_major_slice(ops, kd, d);
            matmul(
                MatMut::from_column_major_slice_mut(s, kd, d),
                Accum::Replace,
                k,
                x,
                ONE,
                Par::Seq,
            );
            sum_lower(
                dst,
                MatRef::from_column_major_slice(s, d, kd),
                MatRef::from_column_major_slice(ops, d, kd),
                Par::Seq,
            );
        };
        let (kx, partial) = scratch.split_at_mut(self.stack.len());
        match &self.halves {
            Some((a, b)) if split_in_two(d) => {
                let (sa, sb) = kx.split_at_mut(a.len());
                let mut other = MatMut::from_column_major_slice_mut(partial, d, d);
                join(|| half(a, sa, out.rb_mut()), || half(b, sb, other.rb_mut()));
                add_lower(out, other.as_ref());
            }
            _ => {
                let kd = self.stack.len() / d;
                product(
                    MatMut::from_column_major_slice_mut(kx, kd, d),
                    self.stack(),
                    x,
                );
                stacked_sum_lower(kx, &self.stack, out, partial);
            }
        }
    }
}

/// Stacks square matrices vertically into one column-major (k·d)×d buffer.
pub fn stack_blocks(blocks: &[Mat<c64>]) -> Vec<c64> {
    let k = blocks.len();
    let d = blocks.first().map_or(0, |b| b.nrows());
    let mut out = vec![ZERO; k * d * d];
    for (i, b) in blocks.iter().enumerate() {
        for c in 0..d {
            for a in 0..d {
                out[c * k * d + i * d + a] = b[(a, c)];
            }
        }
    }
    out
}

/// Block `i` of a stacked (k·d)×d buffer, as a matrix.
pub fn unstack_block(stack: &[c64], d: usize, i: usize) -> Mat<c64> {
    let kd = stack.len() / d;
    Mat::from_fn(d, d, |a, c| stack[c * kd + i * d + a])
}

/// Eigenvalues of a Hermitian matrix, ascending. Reads the lower triangle.
///
/// Householder tridiagonalisation followed by implicit QL on the real
/// tridiagonal matrix (see the module doc for why both halves are ours up
/// to d = 512).
pub fn eigvalsh(m: MatRef<'_, c64>) -> Result<Vec<f64>> {
    let n = m.nrows();
    if n == 0 {
        return Ok(Vec::new());
    }
    if n == 1 {
        return Ok(vec![m[(0, 0)].re]);
    }
    let (mut diag, mut off) = if n <= crate::tridiagonal::FUSED_MAX_DIM {
        crate::tridiagonal::reduce(m)
    } else {
        tridiagonalize_blocked(m)
    };
    tridiagonal_eigenvalues(&mut diag, &mut off).ok_or(KernelError::NoConvergence { dim: n })?;
    diag.sort_by(f64::total_cmp);
    Ok(diag)
}

/// faer's blocked Householder tridiagonalisation: (diagonal, off-diagonal
/// magnitudes).
fn tridiagonalize_blocked(m: MatRef<'_, c64>) -> (Vec<f64>, Vec<f64>) {
    let n = m.nrows();
    let par = par_for(n);
    let mut a = Mat::<c64>::zeros(n, n);
    a.copy_from_triangular_lower(m);
    let bs = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<c64>(n, n);
    let mut householder = Mat::<c64>::zeros(bs, n - 1);
    let mut buf = MemBuffer::new(tridiag::tridiag_in_place_scratch::<c64>(
        n,
        par,
        Default::default(),
    ));
    tridiag::tridiag_in_place(
        a.as_mut(),
        householder.as_mut(),
        par,
        MemStack::new(&mut buf),
        Default::default(),
    );
    let diag = (0..n).map(|i| a[(i, i)].re).collect();
    let off = (0..n)
        .map(|i| if i + 1 < n { a[(i + 1, i)].norm() } else { 0.0 })
        .collect();
    (diag, off)
}

/// Eigenvalues of the symmetric tridiagonal matrix with diagonal `d` and
/// off-diagonal `e` (`e[i]` couples `i` and `i+1`; `e[n−1]` is ignored). On
/// success `d` holds the eigenvalues (unsorted), accurate to about ε times
/// the largest |entry|; `e` is overwritten.
///
/// Implicit QL with Wilkinson shifts in the root-free form of Pal, Walker
/// and Kahan (the iteration of LAPACK `dsterf`): it works on the squares of
/// the off-diagonal, so a rotation needs no square root. Each rotation is
/// a chain of dependent operations, so its latency, not the flop count,
/// sets the speed; the rotation is written so that its two divisions (by
/// r = p + e² and by r·p) both start once r is known, rather than the next
/// p waiting for the new cosine (measured: entropy d = 64 106 → 89 µs).
pub fn tridiagonal_eigenvalues(d: &mut [f64], e: &mut [f64]) -> Option<()> {
    const MAX_SWEEPS: u32 = 60;
    let n = d.len();
    debug_assert_eq!(e.len(), n);
    if n == 0 {
        return Some(());
    }
    e[n - 1] = 0.0;
    // Scale to unit max-norm: the squares below can then neither overflow
    // nor underflow to a wrong deflation.
    let scale = d.iter().chain(e.iter()).fold(0.0f64, |m, x| m.max(x.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return scale.is_finite().then_some(());
    }
    d.iter_mut().for_each(|x| *x /= scale);
    // From here on `e` holds the squared (scaled) off-diagonal.
    e.iter_mut().for_each(|x| *x = (*x / scale) * (*x / scale));
    let eps2 = f64::EPSILON * f64::EPSILON;
    for l in 0..n {
        let mut sweeps = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                // Absolute deflation (the matrix is scaled to max-norm 1):
                // eigenvalues come out accurate to ~ε·‖T‖, which is what the
                // observables need, without chasing tiny eigenvalues to full
                // relative accuracy (many more sweeps for a PSD ρ).
                let dd = d[m].abs() + d[m + 1].abs() + 1.0;
                if e[m] <= eps2 * dd * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            if m == l + 1 {
                // A 2×2 block: its eigenvalues in closed form.
                let (mean, half) = (0.5 * (d[l] + d[l + 1]), 0.5 * (d[l] - d[l + 1]));
                let root = (half * half + e[l]).sqrt();
                d[l] = mean + root;
                d[l + 1] = mean - root;
                e[l] = 0.0;
                break;
            }
            sweeps += 1;
            if sweeps > MAX_SWEEPS {
                return None;
            }
            // Wilkinson shift from the leading 2×2 block.
            let root_e = e[l].sqrt();
            let g = (d[l + 1] - d[l]) / (2.0 * root_e);
            let sigma = d[l] - root_e / (g + (g * g + 1.0).sqrt().copysign(g));
            let (mut c, mut s) = (1.0f64, 0.0f64);
            let mut gamma = d[m] - sigma;
            let mut p = gamma * gamma;
            for i in (l..m).rev() {
                let bb = e[i];
                let r = p + bb;
                if i + 1 != m {
                    e[i + 1] = s * r;
                }
                let old_c = c;
                let inv_r = 1.0 / r;
                c = p * inv_r;
                s = bb * inv_r;
                // γ' = c (d_i − σ) − s γ = num / r, and the next
                // p = γ'² / c = num² / (r p): both divisions start as soon
                // as r is known instead of one waiting for the other.
                let num = p * (d[i] - sigma) - bb * gamma;
                let rp = r * p;
                let old_gamma = gamma;
                gamma = num * inv_r;
                d[i + 1] = old_gamma + (d[i] - gamma);
                p = if rp.is_normal() {
                    num * num / rp
                } else if c != 0.0 {
                    gamma * gamma * (r / p)
                } else {
                    old_c * bb
                };
            }
            e[l] = s * p;
            d[l] = sigma + gamma;
        }
    }
    d.iter_mut().for_each(|x| *x *= scale);
    Some(())
}

/// A random matrix with independent standard complex Gaussian entries.
pub fn random_gaussian(d: usize, rng: &mut impl rand::Rng) -> Mat<c64> {
    Mat::from_fn(d, d, |_, _| {
        let re = standard_normal(rng);
        c64::new(re, standard_normal(rng))
    })
}

/// A standard normal sample (Box–Muller; avoids a dependency for one line).
pub fn standard_normal(rng: &mut impl rand::Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sandwich_matches_the_plain_sum_on_every_path() {
        // d = 16: one thread; 64: two halves (k ≥ 2) or split products
        // (k = 1); 130: faer's parallel products.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a one-thread pool");
        for d in [16, 64, 130] {
            for k in 1..=4 {
                let ops: Vec<Mat<c64>> = (0..k).map(|_| random_gaussian(d, &mut rng)).collect();
                let a = random_gaussian(d, &mut rng);
                let x = &a + a.adjoint();
                let sandwich = Sandwich::new(&ops);
                assert_eq!(sandwich.halves.is_some(), d == 64 && k >= 2);
                let mut expect = Mat::<c64>::zeros(d, d);
                for op in &ops {
                    expect += op * &x * op.adjoint();
                }
                let tol = 1e-13 * expect.norm_l2();
                // Also on a one-thread pool, where nothing is split.
                for pool in [None, Some(&one_thread)] {
                    let mut got = Mat::<c64>::zeros(d, d);
                    let mut apply =
                        || sandwich.apply_lower(x.as_ref(), got.as_mut(), &mut sandwich.scratch());
                    match pool {
                        None => apply(),
                        Some(p) => p.install(apply),
                    }
                    for j in 0..d {
                        for i in j..d {
                            let err = (got[(i, j)] - expect[(i, j)]).norm();
                            assert!(err <= tol, "d = {d}, k = {k}, ({i}, {j}): {err:e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn eigvalsh_matches_faer_full_decomposition() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for d in [2, 3, 5, 16, 64, 130] {
            let a = random_gaussian(d, &mut rng);
            let h = &a + a.adjoint();
            let ours = eigvalsh(h.as_ref()).expect("converges");
            let theirs = h
                .self_adjoint_eigenvalues(faer::Side::Lower)
                .expect("faer converges");
            for (x, y) in ours.iter().zip(&theirs) {
                assert!((x - y).abs() < 1e-10 * (1.0 + y.abs()), "d={d}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn tridiagonal_eigenvalues_of_known_matrix() {
        // tridiag(1, 2, 1) of size n has eigenvalues 2 − 2 cos(kπ/(n+1)).
        let n = 10;
        let mut d = vec![2.0; n];
        let mut e = vec![1.0; n];
        tridiagonal_eigenvalues(&mut d, &mut e).expect("converges");
        d.sort_by(f64::total_cmp);
        for (k, x) in d.iter().enumerate() {
            let want = 2.0 - 2.0 * ((k + 1) as f64 * std::f64::consts::PI / (n + 1) as f64).cos();
            assert!((x - want).abs() < 1e-13);
        }
    }

    #[test]
    fn tridiagonal_eigenvalues_match_faer_with_splits_and_tiny_couplings() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for trial in 0..300 {
            let n = 1 + trial % 40;
            let d: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
            let mut e: Vec<f64> = (0..n)
                .map(|_| standard_normal(&mut rng) * [1.0, 1e-9, 1e-170][trial % 3])
                .collect();
            if trial % 4 == 0 {
                e[n / 2] = 0.0; // an exact split
            }
            let dense = Mat::<f64>::from_fn(n, n, |i, j| match i.abs_diff(j) {
                0 => d[i],
                1 => e[i.min(j)],
                _ => 0.0,
            });
            let want = dense
                .self_adjoint_eigenvalues(faer::Side::Lower)
                .expect("faer converges");
            let scale = d
                .iter()
                .chain(&e[..n - 1])
                .fold(0.0f64, |m, x| m.max(x.abs()));
            let (mut got, mut off) = (d.clone(), e.clone());
            tridiagonal_eigenvalues(&mut got, &mut off).expect("converges");
            got.sort_by(f64::total_cmp);
            for (x, y) in got.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-13 * scale, "trial {trial}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn join_returns_both_results_on_and_off_the_pool() {
        let work = |n: u64| (0..n).map(|i| i * i).sum::<u64>();
        let want = (work(1000), work(2000));
        assert_eq!(join(|| work(1000), || work(2000)), want);
        assert_eq!(rayon::scope(|_| join(|| work(1000), || work(2000))), want);
        // The pool's half may finish long after the caller stops spinning.
        let slow = || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            7
        };
        assert_eq!(join(|| 1, slow), (1, 7));
    }

    #[test]
    fn a_panic_in_the_pool_half_of_join_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| join(|| 1, || -> i32 { panic!("half b") }));
        assert!(caught.is_err());
    }

    #[test]
    fn panels_give_the_lower_triangle_of_the_full_product() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        // Ragged last panels (37, 65, 101); one split (65 … 128); two
        // levels of splits (300: sum_lower never asks for it, but
        // panel_lower recurses for any n).
        for (d, kd) in [
            (32, 32),
            (37, 111),
            (64, 128),
            (65, 130),
            (101, 17),
            (128, 512),
            (300, 40),
        ] {
            let a = Mat::<c64>::from_fn(d, kd, |_, _| {
                c64::new(standard_normal(&mut rng), standard_normal(&mut rng))
            });
            let b = Mat::<c64>::from_fn(d, kd, |_, _| {
                c64::new(standard_normal(&mut rng), standard_normal(&mut rng))
            });
            let want = &a * b.adjoint();
            let mut got = Mat::<c64>::from_fn(d, d, |_, _| c64::new(f64::NAN, 0.0));
            panel_lower(got.as_mut(), a.as_ref(), b.as_ref());
            let tol = 1e-13 * want.norm_l2();
            for j in 0..d {
                for i in j..d {
                    let err = (got[(i, j)] - want[(i, j)]).norm();
                    assert!(err <= tol, "d = {d}, kd = {kd}, ({i}, {j}): {err:e}");
                }
            }
        }
    }

    #[test]
    fn stacked_sum_equals_sum_of_block_products() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let d = 5;
        let a: Vec<_> = (0..3).map(|_| random_gaussian(d, &mut rng)).collect();
        let mut want = Mat::<c64>::zeros(d, d);
        for x in &a {
            want += x * x.adjoint();
        }
        let s = stack_blocks(&a);
        let mut got = Mat::<c64>::zeros(d, d);
        stacked_sum_lower(&s, &s, got.as_mut(), &mut []);
        fill_upper_from_lower(got.as_mut());
        assert!(max_abs_diff(got.as_ref(), want.as_ref()) < 1e-12);
        assert!(max_abs_diff(unstack_block(&s, d, 1).as_ref(), a[1].as_ref()) == 0.0);
    }
}
