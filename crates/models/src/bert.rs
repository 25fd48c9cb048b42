//! A lean forward pass of the BERT encoder of all-MiniLM-L6-v2 (6 layers,
//! 384 wide, 12 heads), for the embedder.
//!
//! Why not candle's `BertModel`: for one short sentence (~20 tokens) the
//! model is ~0.45 GFLOP of small matrix products, and candle spent ~10 ms on
//! it — a fresh tensor allocated for every op, separate Q, K and V products,
//! padding to the longest text of a batch with a mask, and an exact-erf GELU
//! run element by element. Here the weights are plain row-major `f32`
//! buffers, Q, K and V are one fused product, every product goes through
//! faer (runtime-dispatched AVX-512/AVX2 kernels), and each text attends to
//! its own tokens only, so a batch does no work on padding and a text's
//! vector does not depend on the batch it came in.
//!
//! The arithmetic is the reference's (Devlin et al. 2019; Hugging Face
//! `modeling_bert.py`): post-norm layers, biased-variance layer norm, GELU
//! with erf (evaluated by a rational approximation accurate to f32).

use crate::error::{ModelError, Result};
use candle_core::{Device, Tensor};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use std::collections::HashMap;

/// all-MiniLM-L6-v2's shape (its `config.json`), checked at load.
pub(crate) const HIDDEN: usize = 384;
const HEADS: usize = 12;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FFN: usize = 1536;
const LAYERS: usize = 6;
const MAX_POSITIONS: usize = 512;
const LN_EPS: f32 = 1e-12;

/// `y = x·Wᵀ + b`, with `Wᵀ` stored row-major (`[in][out]`, transposed
/// from PyTorch's `[out][in]` at load): the matrix kernel then reads it as
/// it is, without packing it on every call.
struct Linear {
    w_t: Vec<f32>,
    b: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value stacked: 3·384 outputs.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

/// The encoder's weights. `forward` takes token ids of several texts and
/// returns the last hidden state of every token.
pub(crate) struct Encoder {
    word: Vec<f32>,
    vocab: usize,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// Weights by name, read from a safetensors file.
struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    fn get(&self, name: &str, shape: &[usize]) -> std::result::Result<Vec<f32>, String> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} missing"))?;
        if t.dims() != shape {
            return Err(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                t.dims()
            ));
        }
        t.flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format!("tensor {name}: {e}"))
    }

    fn linear(
        &self,
        prefix: &str,
        n_in: usize,
        n_out: usize,
    ) -> std::result::Result<Linear, String> {
        let w = self.get(&format!("{prefix}.weight"), &[n_out, n_in])?;
        Ok(Linear::new(
            &w,
            self.get(&format!("{prefix}.bias"), &[n_out])?,
            n_in,
            n_out,
        ))
    }

    fn norm(&self, prefix: &str) -> std::result::Result<LayerNorm, String> {
        Ok(LayerNorm {
            gamma: self.get(&format!("{prefix}.weight"), &[HIDDEN])?,
            beta: self.get(&format!("{prefix}.bias"), &[HIDDEN])?,
        })
    }
}

impl Encoder {
    /// Read the weights from the bytes of `model.safetensors`; `path` is
    /// for error messages.
    pub(crate) fn load(bytes: &[u8], path: &std::path::Path) -> Result<Encoder> {
        let load_err = |reason: String| ModelError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| load_err(e.to_string()))?;
        let w = Weights { tensors };
        let vocab = w
            .tensors
            .get("embeddings.word_embeddings.weight")
            .map(|t| t.dims().first().copied().unwrap_or(0))
            .unwrap_or(0);
        let build = || -> std::result::Result<Encoder, String> {
            let e = "embeddings";
            let mut layers = Vec::with_capacity(LAYERS);
            for i in 0..LAYERS {
                let p = format!("encoder.layer.{i}");
                let q = w.linear(&format!("{p}.attention.self.query"), HIDDEN, HIDDEN)?;
                let k = w.linear(&format!("{p}.attention.self.key"), HIDDEN, HIDDEN)?;
                let v = w.linear(&format!("{p}.attention.self.value"), HIDDEN, HIDDEN)?;
                let qkv = Linear::stack(&[q, k, v]);
                layers.push(Layer {
                    qkv,
                    attn_out: w.linear(&format!("{p}.attention.output.dense"), HIDDEN, HIDDEN)?,
                    attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"))?,
                    up: w.linear(&format!("{p}.intermediate.dense"), HIDDEN, FFN)?,
                    down: w.linear(&format!("{p}.output.dense"), FFN, HIDDEN)?,
                    out_norm: w.norm(&format!("{p}.output.LayerNorm"))?,
                });
            }
            if w.tensors
                .contains_key(&format!("encoder.layer.{LAYERS}.output.dense.weight"))
            {
                return Err(format!("more than {LAYERS} layers"));
            }
            let token_type = w.get(&format!("{e}.token_type_embeddings.weight"), &[2, HIDDEN])?;
            Ok(Encoder {
                word: w.get(&format!("{e}.word_embeddings.weight"), &[vocab, HIDDEN])?,
                vocab,
                position: w.get(
                    &format!("{e}.position_embeddings.weight"),
                    &[MAX_POSITIONS, HIDDEN],
                )?,
                token_type0: token_type[..HIDDEN].to_vec(),
                emb_norm: w.norm(&format!("{e}.LayerNorm"))?,
                layers,
            })
        };
        build().map_err(load_err)
    }

    /// The last hidden state, `[Σ lens][HIDDEN]` row-major, of texts given
    /// as token ids (`texts[i]` is one text, special tokens included). Each
    /// text attends to its own tokens only.
    pub(crate) fn forward(&self, texts: &[&[u32]]) -> std::result::Result<Vec<f32>, String> {
        let tokens: usize = texts.iter().map(|t| t.len()).sum();
        let longest = texts.iter().map(|t| t.len()).max().unwrap_or(0);
        if longest > MAX_POSITIONS {
            return Err(format!(
                "a text has {longest} tokens, more than the model's {MAX_POSITIONS}"
            ));
        }
        let mut x = vec![0f32; tokens * HIDDEN];
        let mut row = 0;
        for ids in texts {
            for (pos, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= self.vocab {
                    return Err(format!(
                        "token id {id} outside the vocabulary ({})",
                        self.vocab
                    ));
                }
                let out = &mut x[row * HIDDEN..(row + 1) * HIDDEN];
                let w = &self.word[id * HIDDEN..(id + 1) * HIDDEN];
                let p = &self.position[pos * HIDDEN..(pos + 1) * HIDDEN];
                for (((o, w), p), t) in out.iter_mut().zip(w).zip(p).zip(&self.token_type0) {
                    *o = w + p + t;
                }
                row += 1;
            }
        }
        self.emb_norm.apply(&mut x);
        let par = if tokens >= PAR_MIN_TOKENS {
            Par::rayon(0)
        } else {
            Par::Seq
        };
        let mut qkv = vec![0f32; tokens * 3 * HIDDEN];
        let mut ctx = vec![0f32; tokens * HIDDEN];
        let mut tmp = vec![0f32; tokens * HIDDEN];
        let mut ff = vec![0f32; tokens * FFN];
        let mut scores = vec![0f32; longest];
        for layer in &self.layers {
            layer.qkv.apply(&x, &mut qkv, par);
            let mut start = 0;
            for ids in texts {
                let n = ids.len();
                attention(&qkv, &mut ctx, start, n, &mut scores);
                start += n;
            }
            layer.attn_out.apply(&ctx, &mut tmp, par);
            add_assign(&mut x, &tmp);
            layer.attn_norm.apply(&mut x);
            layer.up.apply(&x, &mut ff, par);
            gelu(&mut ff);
            layer.down.apply(&ff, &mut tmp, par);
            add_assign(&mut x, &tmp);
            layer.out_norm.apply(&mut x);
        }
        Ok(x)
    }
}

/// Below this many tokens in a batch the products run on the calling
/// thread. From a short sentence (~20 tokens, ~18 MFLOP per product) up,
/// splitting each product over rayon's threads pays for the hand-off.
const PAR_MIN_TOKENS: usize = 8;

impl Linear {
    /// From PyTorch's layout: `w` is `[n_out][n_in]`.
    fn new(w: &[f32], b: Vec<f32>, n_in: usize, n_out: usize) -> Linear {
        let mut w_t = vec![0f32; n_in * n_out];
        for (o, row) in w.chunks_exact(n_in).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                w_t[i * n_out + o] = v;
            }
        }
        Linear {
            w_t,
            b,
            n_in,
            n_out,
        }
    }

    /// Products of the same input side by side: `[y₁ | y₂ | …]`.
    fn stack(parts: &[Linear]) -> Linear {
        let n_in = parts[0].n_in;
        let n_out = parts.iter().map(|p| p.n_out).sum();
        let mut w_t = Vec::with_capacity(n_in * n_out);
        for i in 0..n_in {
            for p in parts {
                debug_assert_eq!(p.n_in, n_in);
                w_t.extend_from_slice(&p.w_t[i * p.n_out..(i + 1) * p.n_out]);
            }
        }
        let b = parts.iter().flat_map(|p| p.b.iter().copied()).collect();
        Linear {
            w_t,
            b,
            n_in,
            n_out,
        }
    }

    /// `y = x·Wᵀ + b` for `x` of `rows × n_in`, row-major.
    fn apply(&self, x: &[f32], y: &mut [f32], par: Par) {
        let rows = x.len() / self.n_in;
        debug_assert_eq!(x.len(), rows * self.n_in);
        debug_assert_eq!(y.len(), rows * self.n_out);
        for r in y.chunks_exact_mut(self.n_out) {
            r.copy_from_slice(&self.b);
        }
        let x = MatRef::from_row_major_slice(x, rows, self.n_in);
        let w_t = MatRef::from_row_major_slice(&self.w_t, self.n_in, self.n_out);
        let y = MatMut::from_row_major_slice_mut(y, rows, self.n_out);
        matmul(y, Accum::Add, x, w_t, 1.0, par);
    }
}

impl LayerNorm {
    /// Normalise each `HIDDEN`-wide row in place (biased variance).
    fn apply(&self, x: &mut [f32]) {
        pulp::Arch::new().dispatch(|| self.apply_loop(x));
    }

    #[inline(always)]
    fn apply_loop(&self, x: &mut [f32]) {
        for row in x.chunks_exact_mut(HIDDEN) {
            let mean = row.iter().sum::<f32>() / HIDDEN as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / HIDDEN as f32;
            let inv = 1.0 / (var + LN_EPS).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    pulp::Arch::new().dispatch(|| {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    });
}

/// Multi-head self-attention of one text: rows `start..start + n` of
/// `qkv` (`[Q | K | V]`, each `HIDDEN` wide) into the same rows of `ctx`.
/// The products are `n × n × 32` per head, too small for a matrix kernel:
/// plain loops over the head's 32 lanes, compiled for the CPU's vectors.
fn attention(qkv: &[f32], ctx: &mut [f32], start: usize, n: usize, scores: &mut [f32]) {
    pulp::Arch::new().dispatch(|| attention_loop(qkv, ctx, start, n, scores));
}

#[inline(always)]
fn attention_loop(qkv: &[f32], ctx: &mut [f32], start: usize, n: usize, scores: &mut [f32]) {
    const STRIDE: usize = 3 * HIDDEN;
    let rows = &qkv[start * STRIDE..(start + n) * STRIDE];
    let ctx = &mut ctx[start * HIDDEN..(start + n) * HIDDEN];
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let head = |row: usize, part: usize, h: usize| -> &[f32; HEAD_DIM] {
        let at = row * STRIDE + part * HIDDEN + h * HEAD_DIM;
        rows[at..at + HEAD_DIM].try_into().expect("HEAD_DIM lanes")
    };
    let scores = &mut scores[..n];
    for h in 0..HEADS {
        for i in 0..n {
            let q = head(i, 0, h);
            for (j, s) in scores.iter_mut().enumerate() {
                let k = head(j, 1, h);
                *s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv = 1.0 / sum;
            let out: &mut [f32; HEAD_DIM] = (&mut ctx[i * HIDDEN + h * HEAD_DIM..][..HEAD_DIM])
                .try_into()
                .expect("HEAD_DIM lanes");
            out.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let p = p * inv;
                for (o, v) in out.iter_mut().zip(head(j, 2, h)) {
                    *o += p * v;
                }
            }
        }
    }
}

/// GELU with erf, `x·(1 + erf(x/√2))/2`, in place; compiled for the
/// widest vector instructions the CPU has (pulp picks at run time).
fn gelu(x: &mut [f32]) {
    pulp::Arch::new().dispatch(|| gelu_loop(x));
}

#[inline(always)]
fn gelu_loop(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf for f32: the rational approximation on [-4, 4] that Eigen and XLA
/// use (`generic_fast_erf_float`), within a few ulp of the exact value;
/// outside that range erf is ±1 in f32. Branch-free, so loops over it
/// vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_6e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm_to_f32_precision() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let want = libm_erf(x as f64);
            worst = worst.max((erf(x) as f64 - want).abs());
        }
        assert!(worst < 5e-7, "worst erf error {worst}");
    }

    /// erf by its Maclaurin series (small |x|) or continued fraction for
    /// erfc (large |x|), in f64: a reference independent of the code above.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 2.5 {
            let mut term = a;
            let mut sum = a;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = exp(-a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        r.copysign(x)
    }
}
