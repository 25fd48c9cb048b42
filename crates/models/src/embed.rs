//! Sentence embeddings (SPEC M2): all-MiniLM-L6-v2 run with candle, and a
//! hash embedder as the explicit, named fallback. Both give unit-length
//! vectors, so a dot product is the cosine similarity.

use crate::error::{ModelError, Result};
use crate::fetch::require;
use crate::registry::MINILM;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Texts longer than this many tokens are cut (sentence-transformers'
/// `max_seq_length` for this model).
pub const MINILM_MAX_TOKENS: usize = 256;
/// Texts per forward pass; larger batches are split.
pub const MINILM_BATCH: usize = 32;
/// all-MiniLM-L6-v2's embedding width.
pub const MINILM_DIMS: usize = 384;

/// Turns texts into unit vectors of a fixed length.
pub trait Embedder: Send + Sync {
    /// `minilm` or `hash`: recorded with every stored vector.
    fn name(&self) -> &str;
    fn dims(&self) -> usize;
    /// One unit vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;

    fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.embed(&[text])?.remove(0))
    }
}

/// all-MiniLM-L6-v2: BERT (6 layers, 384 wide), mean pooling over the
/// real tokens (padding masked out), L2 normalisation — what
/// sentence-transformers does for this model.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl MiniLm {
    /// Load from `models/minilm/` (checked against the pinned digests).
    pub fn load(models: &Path) -> Result<MiniLm> {
        require(&MINILM, models)?;
        let dir = MINILM.dir(models);
        let load_err = |file: &str, reason: String| ModelError::Load {
            path: dir.join(file),
            reason,
        };
        let config: BertConfig = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).map_err(|e| ModelError::io(&dir, e))?,
        )
        .map_err(|e| load_err("config.json", e.to_string()))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_err("tokenizer.json", e.to_string()))?;
        // The file pads every text to 128 tokens; pad to the longest text
        // of the batch instead and mask the padding out of the mean.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MINILM_MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load_err("tokenizer.json", e.to_string()))?;
        let weights = dir.join("model.safetensors");
        // Safe: the file was just checked against its pinned digest and is
        // read, not mapped, so a later change to it cannot reach us.
        let bytes = std::fs::read(&weights).map_err(|e| ModelError::io(&weights, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
            .map_err(|e| load_err("model.safetensors", e.to_string()))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| load_err("model.safetensors", e.to_string()))?;
        Ok(MiniLm { model, tokenizer })
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let run = |reason: String| ModelError::Run {
            model: "minilm".into(),
            reason,
        };
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| run(e.to_string()))?;
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let n = enc.len();
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let c = |e: candle_core::Error| run(e.to_string());
        let ids = Tensor::from_vec(ids, (n, len), &Device::Cpu).map_err(c)?;
        let mask = Tensor::from_vec(mask, (n, len), &Device::Cpu).map_err(c)?;
        let types = ids.zeros_like().map_err(c)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(c)?;
        // Mean over the real tokens: Σ h·m / Σ m.
        let m = mask
            .to_dtype(DType::F32)
            .map_err(c)?
            .unsqueeze(2)
            .map_err(c)?;
        let summed = hidden.broadcast_mul(&m).map_err(c)?.sum(1).map_err(c)?;
        let counts = m.sum(1).map_err(c)?;
        let mean = summed.broadcast_div(&counts).map_err(c)?;
        let rows: Vec<Vec<f32>> = mean.to_vec2().map_err(c)?;
        Ok(rows.into_iter().map(normalize).collect())
    }
}

impl Embedder for MiniLm {
    fn name(&self) -> &str {
        "minilm"
    }

    fn dims(&self) -> usize {
        MINILM_DIMS
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(MINILM_BATCH) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }
}

/// The fallback: signed feature hashing of lowercase words and word pairs
/// into `dims` buckets (BLAKE3 chooses bucket and sign), normalised. Texts
/// that share words are close; paraphrases with other words are not. It is
/// chosen only by name (`embedder = "hash"`), never in place of MiniLM.
#[derive(Debug, Clone, Copy)]
pub struct HashEmbedder {
    pub dims: usize,
}

impl Embedder for HashEmbedder {
    fn name(&self) -> &str {
        "hash"
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if self.dims == 0 {
            return Err(ModelError::Invalid {
                field: "dims".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(texts.iter().map(|t| self.embed_text(t)).collect())
    }
}

impl HashEmbedder {
    fn embed_text(&self, text: &str) -> Vec<f32> {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let mut v = vec![0f32; self.dims];
        let mut add = |feature: &[u8], weight: f32| {
            let h = blake3::hash(feature);
            let b = h.as_bytes();
            let idx = u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) % self.dims as u64;
            let sign = if b[8] & 1 == 0 { 1.0 } else { -1.0 };
            v[idx as usize] += sign * weight;
        };
        for w in &words {
            add(w.as_bytes(), 1.0);
        }
        for pair in words.windows(2) {
            add(format!("{} {}", pair[0], pair[1]).as_bytes(), 0.5);
        }
        normalize(v)
    }
}

/// Scale to unit length (a zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Dot product of two vectors (the cosine when both are unit length).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_embedder_is_deterministic_unit_and_word_sensitive() {
        let e = HashEmbedder { dims: 384 };
        let v = e
            .embed(&["The cat sat", "the CAT sat", "quantum entropy"])
            .unwrap();
        assert_eq!(v[0], v[1]);
        assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-5);
        assert!(dot(&v[0], &v[2]).abs() < 0.5);
        assert_eq!(e.embed(&[""]).unwrap()[0], vec![0.0; 384]);
        assert!(HashEmbedder { dims: 0 }.embed(&["x"]).is_err());
    }
}
