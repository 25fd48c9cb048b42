//! A small client of a running service's HTTP API (reqwest), for the
//! client commands (`capsule think`, `capsule memory search`) and the demo.

use anyhow::{Context, Result};
use clap::Args;
use reqwest::Method;
use serde_json::Value;

pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// A reply: the status and the JSON body (`null` when there was none).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> Result<ApiClient> {
        capsule_models::tls::install_crypto_provider();
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        })
    }

    /// The same server, another token.
    pub fn as_token(&self, token: &str) -> ApiClient {
        ApiClient {
            base: self.base.clone(),
            token: token.to_string(),
            http: self.http.clone(),
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}: is `capsule up` running there?"))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Reply { status, body })
    }

    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str, body: &Value) -> Result<Reply> {
        self.call(Method::DELETE, path, Some(body)).await
    }
}

/// How a client command reaches the service: `--url` and `--token`, or
/// `$CAPSULE_URL` and `$CAPSULE_TOKEN`.
#[derive(Args)]
pub struct Connection {
    /// The service's HTTP address (default: $CAPSULE_URL, else http://127.0.0.1:7070).
    #[arg(long)]
    url: Option<String>,
    /// Bearer token (default: $CAPSULE_TOKEN).
    #[arg(long)]
    token: Option<String>,
}

impl Connection {
    /// Was a token given (flag or environment)?
    pub fn has_token(&self) -> bool {
        self.token.is_some() || std::env::var("CAPSULE_TOKEN").is_ok()
    }

    pub fn client(self) -> Result<ApiClient> {
        let url = self
            .url
            .or_else(|| std::env::var("CAPSULE_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:7070".into());
        let token = self
            .token
            .or_else(|| std::env::var("CAPSULE_TOKEN").ok())
            .context("give --token or set CAPSULE_TOKEN")?;
        ApiClient::new(&url, &token)
    }
}
