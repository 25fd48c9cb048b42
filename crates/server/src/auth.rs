//! Bearer tokens with roles (SPEC O1) and the per-token rate limit.
//!
//! A token is `cap_` and 52 base32 characters (256 random bits). Only its
//! SHA-256 is stored; a presented token is hashed and compared with every
//! stored hash in constant time (`subtle`), so neither timing nor the file
//! reveals a token. SHA-256 without a salt or stretching is enough because
//! the tokens are random, not chosen by people.
//!
//! The rate limiter is a token bucket per token name, written here because
//! it is twenty lines and needs the time until the next request is allowed
//! (the `Retry-After` value).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Most tokens one file may hold.
pub const MAX_TOKENS: usize = 1024;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads state, audit, objects, policy.
    Reader,
    /// Reader, and signs approvals.
    Approver,
    /// Reader, and thinks and steps the kernel.
    Agent,
    /// Everything: kill switch, mode, reset, dump, token-free administration.
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Approver, Role::Agent, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Approver => "approver",
            Role::Agent => "agent",
            Role::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Result<Role> {
        match Role::ALL.into_iter().find(|r| r.as_str() == text) {
            Some(r) => Ok(r),
            None => bail!("role: {text:?} is not one of reader, approver, agent, operator"),
        }
    }

    /// The policy principal kind this role acts as (readers never act).
    pub fn principal_kind(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Agent | Role::Reader => "agent",
        }
    }
}

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredToken {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub created_ns: i64,
}

/// `auth/tokens.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub tokens: Vec<StoredToken>,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl TokenFile {
    /// Read and check a token file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<TokenFile> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenFile::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let file: TokenFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("token file {}", path.display()))?;
        file.validate()
            .with_context(|| format!("token file {}", path.display()))?;
        Ok(file)
    }

    fn validate(&self) -> Result<()> {
        if self.tokens.len() > MAX_TOKENS {
            bail!(
                "tokens: {} exceeds the limit of {MAX_TOKENS}",
                self.tokens.len()
            );
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if !valid_name(&t.name) {
                bail!(
                    "tokens[{i}].name: {:?} is not 1..=64 of [A-Za-z0-9._-]",
                    t.name
                );
            }
            if hex::decode(&t.sha256).map_or(true, |b| b.len() != 32) {
                bail!("tokens[{i}].sha256: not 64 hex digits");
            }
            if self.tokens[..i].iter().any(|u| u.name == t.name) {
                bail!("tokens[{i}].name: {:?} appears twice", t.name);
            }
        }
        Ok(())
    }

    /// Write atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Add a token and return it (the only time it is seen).
    pub fn add(&mut self, name: &str, role: Role) -> Result<String> {
        if !valid_name(name) {
            bail!("name: {name:?} is not 1..=64 of [A-Za-z0-9._-]");
        }
        if self.tokens.iter().any(|t| t.name == name) {
            bail!("name: a token named {name:?} exists; revoke it first");
        }
        if self.tokens.len() >= MAX_TOKENS {
            bail!("tokens: the file holds the most tokens it may ({MAX_TOKENS})");
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
        let token = format!(
            "cap_{}",
            data_encoding::BASE32_NOPAD
                .encode(&raw)
                .to_ascii_lowercase()
        );
        self.tokens.push(StoredToken {
            name: name.into(),
            role,
            sha256: hex::encode(hash(&token)),
            created_ns: now_ns(),
        });
        Ok(token)
    }

    /// Remove the token named `name`; false when there is none.
    pub fn revoke(&mut self, name: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.name != name);
        self.tokens.len() != before
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// The policy principal, `agent:NAME` / `operator:NAME` / `approver:NAME`.
    pub fn principal(&self) -> String {
        format!("{}:{}", self.role.principal_kind(), self.name)
    }
}

/// Finds the caller of a presented token.
pub struct Authenticator {
    tokens: Vec<(Caller, [u8; 32])>,
}

impl Authenticator {
    pub fn new(file: &TokenFile) -> Result<Authenticator> {
        file.validate()?;
        let tokens = file
            .tokens
            .iter()
            .map(|t| {
                let mut h = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut h)?;
                Ok((
                    Caller {
                        name: t.name.clone(),
                        role: t.role,
                    },
                    h,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Authenticator { tokens })
    }

    /// The caller of `token`; every stored hash is compared, in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let presented = hash(token);
        let mut found = None;
        for (caller, h) in &self.tokens {
            if bool::from(h.ct_eq(&presented)) {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// Bounded number of buckets kept; the least recently refilled are dropped past it.
const MAX_BUCKETS: usize = 4096;

/// Token bucket per caller: capacity `per_minute`, refilled continuously.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute == 0` turns the limit off.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request for `who`: `Err(wait)` when over the limit, with the
    /// time until a request would be allowed.
    pub fn check(&self, who: &str) -> std::result::Result<(), Duration> {
        self.check_at(who, Instant::now())
    }

    fn check_at(&self, who: &str, now: Instant) -> std::result::Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = self.per_minute as f64;
        let rate = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(who) {
            // Full buckets carry no state worth keeping.
            buckets.retain(|_, (level, at)| {
                *level + now.saturating_duration_since(*at).as_secs_f64() * rate < capacity
            });
            if buckets.len() >= MAX_BUCKETS {
                return Err(Duration::from_secs(1));
            }
        }
        let (level, at) = buckets.entry(who.to_string()).or_insert((capacity, now));
        *level = (*level + now.saturating_duration_since(*at).as_secs_f64() * rate).min(capacity);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *level) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_as_its_name_and_role_and_others_do_not() {
        let mut file = TokenFile::default();
        let op = file.add("ops", Role::Operator).unwrap();
        let ag = file.add("alice", Role::Agent).unwrap();
        let auth = Authenticator::new(&file).unwrap();
        assert_eq!(auth.authenticate(&op).unwrap().role, Role::Operator);
        let alice = auth.authenticate(&ag).unwrap();
        assert_eq!(alice.principal(), "agent:alice");
        assert_eq!(auth.authenticate("cap_wrong"), None);
        assert_eq!(auth.authenticate(""), None);
    }

    #[test]
    fn the_file_stores_hashes_not_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let mut file = TokenFile::default();
        let token = file.add("ops", Role::Operator).unwrap();
        file.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token));
        assert_eq!(TokenFile::load(&path).unwrap(), file);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn duplicate_and_malformed_names_are_refused() {
        let mut file = TokenFile::default();
        file.add("a", Role::Reader).unwrap();
        assert!(file.add("a", Role::Agent).is_err());
        assert!(file.add("a b", Role::Agent).is_err());
        assert!(file.revoke("a"));
        assert!(!file.revoke("a"));
    }

    #[test]
    fn the_bucket_allows_the_limit_then_says_how_long_to_wait() {
        let rl = RateLimiter::new(120);
        let t0 = Instant::now();
        for _ in 0..120 {
            assert!(rl.check_at("a", t0).is_ok());
        }
        let wait = rl.check_at("a", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Another caller has its own bucket.
        assert!(rl.check_at("b", t0).is_ok());
        // Half a second later one more request is allowed.
        assert!(rl.check_at("a", t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn zero_means_no_limit() {
        let rl = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert!(rl.check("a").is_ok());
        }
    }
}
