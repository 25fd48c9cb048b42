//! Sentence embeddings (SPEC M2): all-MiniLM-L6-v2 run by the lean encoder
//! in `bert.rs`, and a hash embedder as the explicit, named fallback. Both give unit-length
//! vectors, so a dot product is the cosine similarity.

use crate::bert::{Encoder, HIDDEN};
use crate::error::{ModelError, Result};
use crate::fetch::require;
use crate::registry::MINILM;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

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
/// real tokens, L2 normalisation — what sentence-transformers does for this
/// model. Texts are not padded: each attends to its own tokens only, so a
/// text's vector is the same alone or in a batch.
pub struct MiniLm {
    encoder: Encoder,
    tokenizer: Tokenizer,
}

/// The `config.json` fields the encoder relies on.
#[derive(serde::Deserialize)]
struct BertConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    position_embedding_type: Option<String>,
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
        let shape = (
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.intermediate_size,
            config.hidden_act.as_str(),
            config
                .position_embedding_type
                .as_deref()
                .unwrap_or("absolute"),
        );
        if shape != (HIDDEN, 6, 12, 1536, "gelu", "absolute") {
            return Err(load_err(
                "config.json",
                format!("not all-MiniLM-L6-v2's shape (hidden, layers, heads, ffn, act, positions): {shape:?}"),
            ));
        }
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_err("tokenizer.json", e.to_string()))?;
        // The file pads every text to 128 tokens; the encoder takes each
        // text at its own length instead.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MINILM_MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load_err("tokenizer.json", e.to_string()))?;
        let weights = dir.join("model.safetensors");
        // Read, not mapped: the file was just checked against its pinned
        // digest, and a later change to it cannot reach us.
        let bytes = std::fs::read(&weights).map_err(|e| ModelError::io(&weights, e))?;
        let encoder = Encoder::load(&bytes, &weights)?;
        Ok(MiniLm { encoder, tokenizer })
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
        let ids: Vec<&[u32]> = enc.iter().map(|e| e.get_ids()).collect();
        let hidden = self.encoder.forward(&ids).map_err(run)?;
        // Mean over each text's tokens, then unit length.
        let mut rows = hidden.chunks_exact(HIDDEN);
        Ok(ids
            .iter()
            .map(|t| {
                let mut mean = vec![0f32; HIDDEN];
                for row in rows.by_ref().take(t.len()) {
                    mean.iter_mut().zip(row).for_each(|(m, h)| *m += h);
                }
                let n = t.len().max(1) as f32;
                mean.iter_mut().for_each(|m| *m /= n);
                normalize(mean)
            })
            .collect())
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
