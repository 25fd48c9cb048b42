//! A GGUF chat model's tokenizer, built from the GGUF's own metadata
//! (`tokenizer.ggml.*`): the vocabulary and merges of a byte-level BPE
//! (candle's `TokenizerFromGguf` builds the Hugging Face tokenizer), the
//! pre-tokenizer its `tokenizer.ggml.pre` names, the special tokens, and
//! the end-of-turn tokens. It also gives llguidance the byte string of
//! every token (its token trie), so a grammar can be checked token by
//! token.

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use std::sync::Arc;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::Tokenizer;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

/// Texts of control tokens that end a turn (llama.cpp's end-of-generation
/// list for the chat formats we load).
const END_OF_TURN: [&str; 5] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
];

/// The tokenizer of a GGUF chat model.
pub struct GgufTokenizer {
    env: Arc<Env>,
    /// Sorted token ids that end a turn.
    end_of_turn: Vec<u32>,
    bos: String,
    eos: String,
}

/// The Hugging Face tokenizer with the token trie llguidance works on.
struct Env {
    tokenizer: Tokenizer,
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.tokenize_with_greedy_fallback(s, |s| {
            self.tokenizer
                .encode_fast(s, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_else(|_| self.trie.greedy_tokenize(s.as_bytes()))
        })
    }
}

fn text(content: &gguf_file::Content, key: &str) -> Option<String> {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
}

fn number(content: &gguf_file::Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

impl GgufTokenizer {
    /// Build from the GGUF metadata; the error says which part is missing
    /// or unsupported.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<GgufTokenizer, String> {
        let mut tokenizer = Tokenizer::from_gguf(content).map_err(|e| format!("tokenizer: {e}"))?;
        // candle maps the names it knows; these two are GPT-2's byte-level
        // BPE as llama.cpp runs it: no space added in front of the text,
        // and for SmolLM every digit a token of its own.
        match text(content, "tokenizer.ggml.pre").as_deref() {
            Some("smollm") => {
                tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                    Digits::new(true).into(),
                    ByteLevel::new(false, true, true).into(),
                ])));
            }
            Some("gpt2") | None => {
                tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            }
            Some(_) => {}
        }
        let json: serde_json::Value = serde_json::from_str(
            &tokenizer
                .to_string(false)
                .map_err(|e| format!("tokenizer: {e}"))?,
        )
        .map_err(|e| format!("tokenizer: {e}"))?;
        let words = llguidance::token_bytes_from_tokenizer_json(&json)
            .map_err(|e| format!("token bytes: {e}"))?;
        let tokens = content
            .metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or("tokenizer.ggml.tokens: missing")?;
        let token_text = |id: u32| -> Option<String> {
            tokens
                .get(id as usize)
                .and_then(|v| v.to_string().ok())
                .cloned()
        };
        let mut end_of_turn: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&id| token_text(id).is_some_and(|t| END_OF_TURN.contains(&t.as_str())))
            .collect();
        let eos = number(content, "tokenizer.ggml.eos_token_id")
            .ok_or("tokenizer.ggml.eos_token_id: missing")?;
        if eos as usize >= tokens.len() {
            return Err(format!("tokenizer.ggml.eos_token_id: {eos} is not a token"));
        }
        end_of_turn.push(eos);
        end_of_turn.sort_unstable();
        end_of_turn.dedup();
        let bos = number(content, "tokenizer.ggml.bos_token_id")
            .and_then(token_text)
            .unwrap_or_default();
        let info = TokRxInfo::new(words.len() as u32, eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&end_of_turn);
        Ok(GgufTokenizer {
            env: Arc::new(Env { tokenizer, trie }),
            end_of_turn,
            bos,
            eos: token_text(eos).unwrap_or_default(),
        })
    }

    /// The token ids of `text`, special tokens (`<|im_start|>`) parsed as
    /// such, nothing added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.env
            .tokenizer
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }

    /// The text of generated tokens (special tokens left out; invalid
    /// UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.env.trie.decode_ext(ids, false)).into_owned()
    }

    pub fn is_end_of_turn(&self, id: u32) -> bool {
        self.end_of_turn.binary_search(&id).is_ok()
    }

    /// For llguidance's parser factory.
    pub fn tok_env(&self) -> TokEnv {
        self.env.clone()
    }

    pub fn bos_text(&self) -> &str {
        &self.bos
    }

    pub fn eos_text(&self) -> &str {
        &self.eos
    }
}
