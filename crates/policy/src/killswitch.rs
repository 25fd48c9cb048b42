//! The kill switch (SPEC P4). Armed by a trigger file, SIGUSR1, an API call
//! or the CLI; while armed every decision is `blocked` with reason
//! `kill_switch`. Disarming needs signatures from operator keys over the
//! arming's random nonce (a quorum if configured), so an old signature
//! cannot disarm a new arming. Every change is a ledger entry naming who
//! made it.
//!
//! The state lives in `killswitch.json` (written atomically) and in memory;
//! [`KillSwitch::status`] reads the file back and refuses to report a state
//! the two disagree on. Deleting the trigger file does not disarm.

use crate::error::{PolicyError, Result};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use capsule_ledger::{Ledger, Record, VerifierKey};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The name of the trigger file in the state directory.
pub const TRIGGER_FILE: &str = "KILL";
const STATE_FILE: &str = "killswitch.json";

/// The kill switch's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillState {
    pub armed: bool,
    /// Who armed or disarmed it last.
    pub by: String,
    pub reason: String,
    /// Nanoseconds since the epoch of the last change.
    pub since: i64,
    /// Random hex; disarm signatures cover it.
    pub nonce: String,
    /// The ledger entry of the last change.
    pub ledger_seq: Option<u64>,
}

/// What `status` confirms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KillStatus {
    #[serde(flatten)]
    pub state: KillState,
    pub trigger_file_present: bool,
}

/// The text operators sign to disarm.
pub fn disarm_statement(nonce: &str) -> String {
    format!("capsule kill disarm\n{nonce}\n")
}

/// One operator's signature for a disarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSignature {
    /// The operator's verifier key, `<name>+<id>+<base64 key>`.
    pub key: String,
    /// base64 Ed25519 signature over [`disarm_statement`].
    pub signature: String,
}

pub struct KillSwitch {
    dir: PathBuf,
    armed: AtomicBool,
    state: Mutex<KillState>,
    ledger: Arc<Ledger>,
    random: RandomFill,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Where random bytes come from: the system source ([`getrandom::fill`]) in
/// production; tests inject a failing one.
pub type RandomFill = fn(&mut [u8]) -> Result<(), getrandom::Error>;

/// A fresh nonce, 16 random bytes in hex. A failing source is an error,
/// never a fixed (zero) nonce, which would let a signature over an earlier
/// arming disarm a later one.
fn nonce(fill: RandomFill) -> Result<String> {
    let mut b = [0u8; 16];
    fill(&mut b).map_err(|e| {
        PolicyError::KillSwitch(format!(
            "cannot make a nonce: the system random source failed ({e}); nothing was changed"
        ))
    })?;
    Ok(hex::encode(b))
}

/// The persisted state in `dir`, if any, without opening the switch.
pub fn read_state(dir: &Path) -> Result<Option<KillState>> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            PolicyError::KillSwitch(format!(
                "{}: unreadable state ({e}); refusing to guess",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PolicyError::io(&path)(e)),
    }
}

impl KillSwitch {
    /// Open the switch whose state lives in `dir`, recording to `ledger`. A
    /// trigger file present at open arms it.
    pub fn open(dir: &Path, ledger: Arc<Ledger>) -> Result<Arc<KillSwitch>> {
        KillSwitch::open_with_random(dir, ledger, getrandom::fill)
    }

    /// [`KillSwitch::open`], taking its nonces from `random`.
    pub fn open_with_random(
        dir: &Path,
        ledger: Arc<Ledger>,
        random: RandomFill,
    ) -> Result<Arc<KillSwitch>> {
        fs::create_dir_all(dir).map_err(PolicyError::io(dir))?;
        let state = match read_state(dir)? {
            Some(state) => state,
            None => KillState {
                armed: false,
                by: "initial".into(),
                reason: "never armed".into(),
                since: now_ns(),
                nonce: nonce(random)?,
                ledger_seq: None,
            },
        };
        let ks = Arc::new(KillSwitch {
            dir: dir.to_path_buf(),
            armed: AtomicBool::new(state.armed),
            state: Mutex::new(state),
            ledger,
            random,
        });
        ks.poll_trigger()?;
        Ok(ks)
    }

    /// Is it armed? (One atomic load: the hot path of every decision.)
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    pub fn trigger_path(&self) -> PathBuf {
        self.dir.join(TRIGGER_FILE)
    }

    fn save(&self, state: &KillState) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state).expect("plain struct");
        crate::durable::replace_file(&self.dir.join(STATE_FILE), &bytes)
    }

    /// Arm (idempotent: arming an armed switch records nothing new).
    pub fn arm(&self, by: &str, reason: &str) -> Result<KillState> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.armed {
            return Ok(st.clone());
        }
        // The nonce before anything changes: without one, nothing is armed.
        let nonce = nonce(self.random)?;
        // Refuse decisions first, then make it durable and audited.
        self.armed.store(true, Ordering::SeqCst);
        let mut record = Record::new(by, "kill.arm", "ok");
        record.subject = "kill_switch".into();
        record.reason = reason.into();
        let receipt = self.ledger.append(record)?;
        let next = KillState {
            armed: true,
            by: by.into(),
            reason: reason.into(),
            since: receipt.ts,
            nonce,
            ledger_seq: Some(receipt.seq),
        };
        self.save(&next)?;
        *st = next.clone();
        Ok(next)
    }

    /// Disarm with operator signatures over the current nonce; `operators`
    /// are the keys allowed to, `quorum` how many distinct ones must sign.
    pub fn disarm(
        &self,
        signatures: &[OperatorSignature],
        operators: &[VerifierKey],
        quorum: usize,
        reason: &str,
    ) -> Result<KillState> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.armed {
            return Err(PolicyError::KillSwitch("it is not armed".into()));
        }
        let statement = disarm_statement(&st.nonce);
        let mut signers: Vec<&VerifierKey> = Vec::new();
        for (i, s) in signatures.iter().enumerate() {
            let field = format!("signatures[{i}]");
            let key = VerifierKey::parse(&s.key)
                .map_err(|e| PolicyError::invalid(&field, e.to_string()))?;
            let key = operators.iter().find(|k| **k == key).ok_or_else(|| {
                PolicyError::invalid(&field, format!("{key} is not an operator key"))
            })?;
            let sig: [u8; 64] = B64
                .decode(&s.signature)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    PolicyError::invalid(&field, "signature is not base64 of 64 bytes")
                })?;
            if !key.verify(statement.as_bytes(), &sig) {
                return Err(PolicyError::invalid(
                    &field,
                    "signature does not verify over this arming's nonce",
                ));
            }
            if !signers.contains(&key) {
                signers.push(key);
            }
        }
        if signers.len() < quorum.max(1) {
            return Err(PolicyError::KillSwitch(format!(
                "disarming needs {} distinct operator signatures, got {}",
                quorum.max(1),
                signers.len()
            )));
        }
        let by: Vec<String> = signers
            .iter()
            .map(|k| format!("operator:{}", k.name()))
            .collect();
        let by = by.join(",");
        let nonce = nonce(self.random)?;
        let mut record = Record::new(&by, "kill.disarm", "ok");
        record.subject = "kill_switch".into();
        record.reason = reason.into();
        record.meta = serde_json::json!({ "operators": signers.iter().map(|k| k.to_string()).collect::<Vec<_>>() });
        let receipt = self.ledger.append(record)?;
        let next = KillState {
            armed: false,
            by,
            reason: reason.into(),
            since: receipt.ts,
            nonce,
            ledger_seq: Some(receipt.seq),
        };
        let trigger = self.trigger_path();
        match fs::remove_file(&trigger) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PolicyError::io(&trigger)(e)),
        }
        self.save(&next)?;
        self.armed.store(false, Ordering::SeqCst);
        *st = next.clone();
        Ok(next)
    }

    /// The state, confirmed: memory and the state file must agree.
    pub fn status(&self) -> Result<KillStatus> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let path = self.dir.join(STATE_FILE);
        if st.ledger_seq.is_some() {
            let on_disk: KillState =
                fs::read(&path)
                    .map_err(PolicyError::io(&path))
                    .and_then(|b| {
                        serde_json::from_slice(&b)
                            .map_err(|e| PolicyError::KillSwitch(e.to_string()))
                    })?;
            if on_disk != st {
                return Err(PolicyError::KillSwitch(format!(
                    "{} says armed={}, memory says armed={}",
                    path.display(),
                    on_disk.armed,
                    st.armed
                )));
            }
        }
        if st.armed != self.is_armed() {
            return Err(PolicyError::KillSwitch(
                "decision flag and state disagree".into(),
            ));
        }
        Ok(KillStatus {
            state: st,
            trigger_file_present: self.trigger_path().exists(),
        })
    }

    /// Arm if the trigger file exists. Returns whether this call armed it.
    pub fn poll_trigger(&self) -> Result<bool> {
        let trigger = self.trigger_path();
        if self.is_armed() || !trigger.exists() {
            return Ok(false);
        }
        self.arm(
            &format!("file:{}", trigger.display()),
            "trigger file present",
        )?;
        Ok(true)
    }

    /// Poll the trigger file every `interval` (a tick) on a background
    /// thread for as long as the switch lives.
    pub fn watch_trigger(self: &Arc<Self>, interval: Duration) -> std::thread::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        std::thread::spawn(move || {
            while let Some(ks) = weak.upgrade() {
                let _ = ks.poll_trigger();
                drop(ks);
                std::thread::sleep(interval);
            }
        })
    }

    /// Arm on SIGUSR1, naming the sending process, on a background thread.
    pub fn listen_sigusr1(self: &Arc<Self>) -> Result<std::thread::JoinHandle<()>> {
        use signal_hook::consts::SIGUSR1;
        use signal_hook::iterator::exfiltrator::WithOrigin;
        use signal_hook::iterator::SignalsInfo;
        let mut signals = SignalsInfo::<WithOrigin>::new([SIGUSR1])
            .map_err(|e| PolicyError::KillSwitch(format!("cannot listen for SIGUSR1: {e}")))?;
        let weak = Arc::downgrade(self);
        Ok(std::thread::spawn(move || {
            for info in signals.forever() {
                let Some(ks) = weak.upgrade() else { return };
                let from = info.process.map_or("unknown sender".into(), |p| {
                    format!("pid {} uid {}", p.pid, p.uid)
                });
                let _ = ks.arm(&format!("signal:SIGUSR1 from {from}"), "SIGUSR1 received");
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_ledger::LedgerConfig;

    fn failing(_: &mut [u8]) -> Result<(), getrandom::Error> {
        Err(getrandom::Error::UNSUPPORTED)
    }

    fn ledger(dir: &Path) -> Arc<Ledger> {
        Arc::new(
            Ledger::create(
                &dir.join("ledger"),
                "capsule.test/kill",
                LedgerConfig::default(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn a_failing_random_source_stops_arming_and_nothing_is_armed() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let ledger = ledger(tmp.path());
        fs::create_dir_all(&state).unwrap();
        let saved = KillState {
            armed: false,
            by: "initial".into(),
            reason: "never armed".into(),
            since: 0,
            nonce: "ab".repeat(16),
            ledger_seq: None,
        };
        fs::write(state.join(STATE_FILE), serde_json::to_vec(&saved).unwrap()).unwrap();
        let before = (ledger.size(), fs::read(state.join(STATE_FILE)).unwrap());
        let ks = KillSwitch::open_with_random(&state, ledger.clone(), failing).unwrap();
        let err = ks.arm("operator:test", "drill").unwrap_err().to_string();
        assert!(err.contains("random source failed"), "{err}");
        assert!(!ks.is_armed());
        assert!(!ks.status().unwrap().state.armed);
        assert_eq!(
            (ledger.size(), fs::read(state.join(STATE_FILE)).unwrap()),
            before
        );
        // The same switch with the system source arms, with a fresh nonce.
        drop(ks);
        let ks = KillSwitch::open(&state, ledger.clone()).unwrap();
        let armed = ks.arm("operator:test", "drill").unwrap();
        assert!(armed.armed && ks.is_armed());
        assert_ne!(armed.nonce, saved.nonce);
        assert_ne!(armed.nonce, hex::encode([0u8; 16]));
    }

    #[test]
    fn a_failing_random_source_stops_a_first_open() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        match KillSwitch::open_with_random(&state, ledger(tmp.path()), failing) {
            Err(e) => assert!(e.to_string().contains("random source failed"), "{e}"),
            Ok(_) => panic!("opened with no nonce"),
        }
    }
}
