//! Remote chat models for the LLM planners (SPEC C2 b): an OpenAI-compatible
//! chat-completions API ([`OpenAiChat`]: OpenAI, OpenRouter, vLLM, llama.cpp
//! server, Ollama's `/v1`) and the Anthropic Messages API
//! ([`AnthropicChat`]), both behind [`ChatModel`].
//!
//! **Owns:** the two wire formats, reading the API key from the environment
//! at each call, and one send loop shared by both: a per-request timeout,
//! retries of HTTP 429 and 5xx with exponential backoff (or the provider's
//! `Retry-After`, in seconds), bounded reply size, and errors that name the
//! provider, the URL and the reason. Nothing else is retried and nothing
//! falls back to another planner.
//!
//! **Why hand-written:** no maintained Rust SDK gives a blocking call over
//! both wire formats with these rules. Checked: `async-openai` (OpenAI format
//! only, async; its retry is its own), `genai` (both formats, async-only,
//! aimed at the common subset of many providers). Each format is one request
//! and one reply shape; the rest is the shared loop.
//!
//! Calls block: run them on a blocking thread (`spawn_blocking`), never on
//! an async runtime's worker.

use crate::llm::{ChatModel, ChatPrompt};
use crate::planner::PlanError;
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::io::Read;
use std::time::Duration;

/// Most retries a config may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Longest per-request timeout a config may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait between two attempts: caps the backoff and `Retry-After`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Most tokens a config may ask the model for (a choice needs ~150).
pub const MAX_TOKENS: u32 = 4096;
/// Largest reply body read from a provider.
pub const MAX_REPLY_BYTES: u64 = 1 << 20;
/// The Anthropic API version this module speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// How much of a bad reply an error quotes, in characters.
const QUOTE_CHARS: usize = 200;

/// Where and how to call a remote model. Checked by [`RemoteConfig::validate`]
/// when a backend is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Scheme, host and path prefix, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    /// Environment variable read for the API key at each call.
    pub api_key_env: String,
    /// Limit for one HTTP request, connection to last byte.
    pub timeout: Duration,
    /// Retries after the first attempt, for HTTP 429 and 5xx only.
    pub max_retries: u32,
    /// Wait before the first retry; doubles per retry, capped at [`MAX_BACKOFF`].
    pub backoff: Duration,
    pub max_tokens: u32,
}

impl RemoteConfig {
    /// OpenAI's API with `gpt-4o-mini`; point `base_url` elsewhere for any
    /// OpenAI-compatible server.
    pub fn openai() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            ..Self::common()
        }
    }

    /// Anthropic's API with `claude-haiku-4-5`.
    pub fn anthropic() -> Self {
        Self {
            base_url: "https://api.anthropic.com".into(),
            model: "claude-haiku-4-5".into(),
            api_key_env: "ANTHROPIC_API_KEY".into(),
            ..Self::common()
        }
    }

    fn common() -> Self {
        Self {
            base_url: String::new(),
            model: String::new(),
            api_key_env: String::new(),
            timeout: Duration::from_secs(30),
            max_retries: 2,
            backoff: Duration::from_millis(500),
            max_tokens: 256,
        }
    }

    /// Rejects a config no request could succeed with, naming the field.
    pub fn validate(&self) -> Result<(), RemoteConfigError> {
        let bad =
            |field: &'static str, reason: String| Err(RemoteConfigError::Field { field, reason });
        match reqwest::Url::parse(&self.base_url) {
            Err(e) => {
                return bad(
                    "base_url",
                    format!("{:?} is not a URL ({e})", self.base_url),
                )
            }
            Ok(url) if !matches!(url.scheme(), "http" | "https") || url.host().is_none() => {
                return bad(
                    "base_url",
                    format!(
                        "{:?} must be an http:// or https:// URL with a host",
                        self.base_url
                    ),
                )
            }
            Ok(_) => {}
        }
        if self.model.trim().is_empty() {
            return bad("model", "must not be empty".into());
        }
        if self.api_key_env.is_empty() || self.api_key_env.contains(['=', '\0']) {
            return bad(
                "api_key_env",
                format!("{:?} is not an environment variable name", self.api_key_env),
            );
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return bad(
                "timeout",
                format!(
                    "{:?} must be above 0 and at most {MAX_TIMEOUT:?}",
                    self.timeout
                ),
            );
        }
        if self.max_retries > MAX_RETRIES {
            return bad(
                "max_retries",
                format!("{} is above the limit {MAX_RETRIES}", self.max_retries),
            );
        }
        if self.backoff > MAX_BACKOFF {
            return bad(
                "backoff",
                format!("{:?} is above the limit {MAX_BACKOFF:?}", self.backoff),
            );
        }
        if self.max_tokens == 0 || self.max_tokens > MAX_TOKENS {
            return bad(
                "max_tokens",
                format!("{} must be 1..={MAX_TOKENS}", self.max_tokens),
            );
        }
        Ok(())
    }
}

/// A remote backend that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteConfigError {
    #[error("remote model config: field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("remote model config: cannot build the HTTP client: {0}")]
    Client(String),
}

/// An OpenAI-compatible chat-completions backend (planner `openai`), in
/// JSON mode at temperature 0.
#[derive(Debug)]
pub struct OpenAiChat {
    http: Http,
}

impl OpenAiChat {
    pub fn new(config: RemoteConfig) -> Result<Self, RemoteConfigError> {
        Ok(Self {
            http: Http::new("openai", config, "/chat/completions")?,
        })
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.http.config
    }
}

/// The reply of `POST /chat/completions`, as far as we read it.
#[derive(Deserialize)]
struct ChatCompletion {
    choices: Vec<CompletionChoice>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: CompletionMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    content: Option<String>,
}

impl ChatModel for OpenAiChat {
    fn name(&self) -> &str {
        self.http.provider
    }

    fn unavailable(&self) -> Option<String> {
        self.http.api_key().err().map(|e| e.reason)
    }

    fn model_id(&self) -> String {
        self.http.config.model.clone()
    }

    fn complete(&self, prompt: &ChatPrompt) -> Result<String, PlanError> {
        self.chat(prompt, true)
    }

    fn answer(&self, prompt: &ChatPrompt) -> Result<String, PlanError> {
        self.chat(prompt, false)
    }
}

impl OpenAiChat {
    /// One chat completion; `json` asks for JSON mode (plans).
    fn chat(&self, prompt: &ChatPrompt, json: bool) -> Result<String, PlanError> {
        let key = self.http.api_key()?;
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.http.secret(format!("Bearer {key}"))?);
        let mut body = serde_json::json!({
            "model": self.http.config.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            "temperature": 0,
            "max_tokens": self.http.config.max_tokens,
        });
        if json {
            body["response_format"] = serde_json::json!({"type": "json_object"});
        }
        let reply: ChatCompletion = self.http.post(headers, &body, "a chat completion")?;
        let Some(choice) = reply.choices.into_iter().next() else {
            return Err(self.http.fail("the chat completion has no choices".into()));
        };
        choice.message.content.ok_or_else(|| {
            self.http.fail(format!(
                "choices[0].message.content is null (finish_reason {})",
                choice.finish_reason.as_deref().unwrap_or("absent")
            ))
        })
    }
}

/// An Anthropic Messages API backend (planner `anthropic`) at temperature 0.
#[derive(Debug)]
pub struct AnthropicChat {
    http: Http,
}

impl AnthropicChat {
    pub fn new(config: RemoteConfig) -> Result<Self, RemoteConfigError> {
        Ok(Self {
            http: Http::new("anthropic", config, "/v1/messages")?,
        })
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.http.config
    }
}

/// The reply of `POST /v1/messages`, as far as we read it.
#[derive(Deserialize)]
struct Message {
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl ChatModel for AnthropicChat {
    fn name(&self) -> &str {
        self.http.provider
    }

    fn unavailable(&self) -> Option<String> {
        self.http.api_key().err().map(|e| e.reason)
    }

    fn model_id(&self) -> String {
        self.http.config.model.clone()
    }

    fn complete(&self, prompt: &ChatPrompt) -> Result<String, PlanError> {
        let key = self.http.api_key()?;
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-api-key"), self.http.secret(key)?);
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        let body = serde_json::json!({
            "model": self.http.config.model,
            "max_tokens": self.http.config.max_tokens,
            "temperature": 0,
            "system": prompt.system,
            "messages": [{"role": "user", "content": prompt.user}],
        });
        let reply: Message = self.http.post(headers, &body, "a message")?;
        let texts: Vec<String> = reply
            .content
            .into_iter()
            .filter(|block| block.kind == "text")
            .filter_map(|block| block.text)
            .collect();
        if texts.is_empty() {
            return Err(self.http.fail(format!(
                "the message has no text block (stop_reason {})",
                reply.stop_reason.as_deref().unwrap_or("absent")
            )));
        }
        Ok(texts.concat())
    }

    /// The same request: the Messages API has no JSON mode to leave out.
    fn answer(&self, prompt: &ChatPrompt) -> Result<String, PlanError> {
        self.complete(prompt)
    }
}

/// The send loop both providers share: one client, one endpoint.
#[derive(Debug)]
struct Http {
    provider: &'static str,
    config: RemoteConfig,
    endpoint: String,
    client: Client,
}

impl Http {
    fn new(
        provider: &'static str,
        config: RemoteConfig,
        path: &str,
    ) -> Result<Self, RemoteConfigError> {
        config.validate()?;
        let endpoint = format!("{}{path}", config.base_url.trim_end_matches('/'));
        capsule_models::tls::install_crypto_provider();
        let builder = Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("capsule/", env!("CARGO_PKG_VERSION")));
        // The blocking client starts its own runtime and refuses to be
        // built on an async one; a plain thread lets async callers build it.
        let client = std::thread::scope(|s| s.spawn(|| builder.build()).join())
            .map_err(|_| RemoteConfigError::Client("the builder panicked".into()))?
            .map_err(|e| RemoteConfigError::Client(error_chain(&e)))?;
        Ok(Self {
            provider,
            config,
            endpoint,
            client,
        })
    }

    fn fail(&self, reason: String) -> PlanError {
        PlanError {
            planner: self.provider.to_string(),
            reason,
        }
    }

    fn api_key(&self) -> Result<String, PlanError> {
        let name = &self.config.api_key_env;
        match std::env::var(name) {
            Ok(key) if !key.trim().is_empty() => Ok(key),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(self.fail(format!(
                "{name} is not set; export the {} API key in it \
                 (any non-empty value for a local server that takes no key)",
                self.provider
            ))),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(self.fail(format!("{name} is not valid UTF-8")))
            }
        }
    }

    /// A header carrying the key, kept out of `Debug` output.
    fn secret(&self, value: String) -> Result<HeaderValue, PlanError> {
        let mut header = HeaderValue::try_from(value).map_err(|_| {
            self.fail(format!(
                "{} holds characters not allowed in an HTTP header",
                self.config.api_key_env
            ))
        })?;
        header.set_sensitive(true);
        Ok(header)
    }

    /// POSTs `body`, retrying 429 and 5xx, and decodes a 2xx reply as `T`
    /// (`shape` names it in errors).
    fn post<T: DeserializeOwned>(
        &self,
        headers: HeaderMap,
        body: &serde_json::Value,
        shape: &str,
    ) -> Result<T, PlanError> {
        let mut backoff = self.config.backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let response = self
                .client
                .post(&self.endpoint)
                .headers(headers.clone())
                .json(body)
                .send()
                .map_err(|e| self.send_error(&e))?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let bytes = self.read(response)?;
            if status.is_success() {
                return serde_json::from_slice(&bytes).map_err(|e| {
                    self.fail(format!(
                        "{} at {} answered HTTP {status} but the body is not {shape} ({e}): {:?}",
                        self.provider,
                        self.endpoint,
                        quote(&bytes)
                    ))
                });
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if !retryable || attempts > self.config.max_retries {
                return Err(self.status_error(status, &bytes, attempts));
            }
            std::thread::sleep(retry_delay(backoff, retry_after));
            backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
        }
    }

    fn send_error(&self, e: &reqwest::Error) -> PlanError {
        let (provider, endpoint) = (self.provider, &self.endpoint);
        if e.is_timeout() {
            self.fail(format!(
                "{provider} at {endpoint} timed out after {} s",
                self.config.timeout.as_secs_f64()
            ))
        } else if e.is_connect() {
            self.fail(format!(
                "{provider} at {endpoint} cannot be reached ({}); check base_url and that the server is up",
                root_cause(e)
            ))
        } else {
            self.fail(format!(
                "request to {provider} at {endpoint} failed: {}",
                error_chain(e)
            ))
        }
    }

    /// The body, at most [`MAX_REPLY_BYTES`].
    fn read(&self, response: Response) -> Result<Vec<u8>, PlanError> {
        let mut bytes = Vec::new();
        response
            .take(MAX_REPLY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                let timed_out = e.kind() == std::io::ErrorKind::TimedOut
                    || e.get_ref()
                        .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
                        .is_some_and(reqwest::Error::is_timeout);
                if timed_out {
                    self.fail(format!(
                        "{} at {} timed out after {} s",
                        self.provider,
                        self.endpoint,
                        self.config.timeout.as_secs_f64()
                    ))
                } else {
                    self.fail(format!(
                        "reading the reply of {} at {} failed: {e}",
                        self.provider, self.endpoint
                    ))
                }
            })?;
        if bytes.len() as u64 > MAX_REPLY_BYTES {
            return Err(self.fail(format!(
                "{} at {} sent a reply over {MAX_REPLY_BYTES} bytes; refused",
                self.provider, self.endpoint
            )));
        }
        Ok(bytes)
    }

    fn status_error(&self, status: StatusCode, body: &[u8], attempts: u32) -> PlanError {
        let after = if attempts > 1 {
            format!(" after {attempts} attempts")
        } else {
            String::new()
        };
        let hint = if matches!(status.as_u16(), 401 | 403) {
            format!(" (check the key in {})", self.config.api_key_env)
        } else {
            String::new()
        };
        self.fail(format!(
            "{} at {} answered HTTP {status}{after}: {}{hint}",
            self.provider,
            self.endpoint,
            provider_message(body)
        ))
    }
}

/// How long to wait before the next attempt: the provider's `Retry-After`
/// when it sent one, else the current backoff; never above [`MAX_BACKOFF`].
fn retry_delay(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or(backoff).min(MAX_BACKOFF)
}

/// `Retry-After` in delay-seconds (RFC 9110 §10.2.3); an HTTP date is
/// ignored and the backoff applies.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(MAX_BACKOFF.as_secs())))
}

/// The provider's own words from an error body: both OpenAI and Anthropic
/// send `{"error": {"type": …, "message": …}}`; anything else is quoted.
fn provider_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        message: String,
        #[serde(rename = "type", default)]
        kind: Option<String>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope {
            error: Detail {
                message,
                kind: Some(kind),
            },
        }) => format!("{message} ({kind})"),
        Ok(envelope) => envelope.error.message,
        Err(_) if body.is_empty() => "empty body".into(),
        Err(_) => format!("{:?}", quote(body)),
    }
}

/// The start of a body, for an error message.
fn quote(body: &[u8]) -> String {
    crate::llm::truncate(&String::from_utf8_lossy(body), QUOTE_CHARS)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_prefers_retry_after_and_never_exceeds_the_cap() {
        let backoff = Duration::from_millis(500);
        assert_eq!(retry_delay(backoff, None), backoff);
        assert_eq!(retry_delay(backoff, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(retry_delay(Duration::from_secs(90), None), MAX_BACKOFF);
        assert_eq!(
            retry_delay(backoff, Some(Duration::from_secs(90))),
            MAX_BACKOFF
        );
    }

    #[test]
    fn retry_after_reads_seconds_caps_them_and_ignores_dates() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after(&headers)
        };
        assert_eq!(with("2"), Some(Duration::from_secs(2)));
        assert_eq!(with("3600"), Some(MAX_BACKOFF));
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn provider_message_reads_both_error_shapes_and_quotes_the_rest() {
        assert_eq!(
            provider_message(
                br#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#
            ),
            "bad model (invalid_request_error)"
        );
        assert_eq!(
            provider_message(br#"{"error":{"message":"slow down"}}"#),
            "slow down"
        );
        assert_eq!(
            provider_message(b"<html>oops</html>"),
            "\"<html>oops</html>\""
        );
        assert_eq!(provider_message(b""), "empty body");
        let long = "x".repeat(QUOTE_CHARS + 50);
        assert_eq!(quote(long.as_bytes()).chars().count(), QUOTE_CHARS + 1);
    }
}
