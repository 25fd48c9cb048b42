//! The node contract (SPEC N1, S6): what the router hands a node and what
//! a node hands back. A [`Message`] carries IDs, never payloads: the task
//! spec is an object in the store and `payload_ref` names it. Messages are
//! encoded as compact JSON; [`Message::encoded_len`] is what the
//! `capsule_mesh_envelope_bytes` histogram records.

use capsule_policy::Lane;
use serde::{Deserialize, Serialize};

/// What a message is about: the task's glyph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Glyph {
    /// The content hash of the task (the ID without namespace and day).
    pub id: String,
    /// `task`.
    pub kind: String,
    pub version: u32,
    /// `domain:<d>` and `purpose:<p>`; external actions need a
    /// `consent:` tag as well (none of this bots acts outside).
    pub tags: Vec<String>,
}

/// One router-to-node message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub msg_id: String,
    /// Unix time in nanoseconds when it was published.
    pub ts: i64,
    pub lane: Lane,
    pub glyph: Glyph,
    /// The topic (one per domain).
    pub topic: String,
    /// The object ID of the task spec.
    pub payload_ref: String,
}

impl Message {
    /// The wire form: compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a message always serialises")
    }

    pub fn encoded_len(&self) -> usize {
        self.encode().len()
    }
}

/// One step a node took, appended to the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crumb {
    /// Unix time in nanoseconds.
    pub t: i64,
    /// `submit`, `publish`, `run`, `store`, `done`, `failed`.
    pub stage: String,
    /// `router` or the bot's name.
    pub node: String,
}

/// A node's answer: IDs and reasons, never the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeResult {
    pub ok: bool,
    pub reasons: Vec<String>,
    /// The result artifact's object ID when `ok`.
    pub payload_ref: Option<String>,
    pub trace: Vec<Crumb>,
}

/// Unix time in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

pub fn crumb(stage: &str, node: &str) -> Crumb {
    Crumb {
        t: now_ns(),
        stage: stage.into(),
        node: node.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_payload_and_stays_small() {
        let m = Message {
            msg_id: "18f2a9c3b4d5e6f7-1a".into(),
            ts: 1_796_000_000_000_000_000,
            lane: Lane::Prod,
            glyph: Glyph {
                id: "abcdefghijklmnopqrstuvwxyz234567".into(),
                kind: "task".into(),
                version: 1,
                tags: vec!["domain:medical".into(), "purpose:task".into()],
            },
            topic: "medical".into(),
            payload_ref: "TASK_20261207_abcdefghijklmnopqrstuvwxyz234567".into(),
        };
        let bytes = m.encode();
        assert_eq!(bytes.len(), m.encoded_len());
        assert!(bytes.len() < 320, "{} bytes", bytes.len());
        let back: Message = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, m);
    }
}
