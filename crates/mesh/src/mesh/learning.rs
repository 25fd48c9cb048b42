//! Pattern memory from the outside: feedback, listing, maintenance.

use super::*;

impl Mesh {
    /// User feedback on a done task: moves its pattern's confidence (the
    /// source pattern's, for a reused answer — a linked write).
    pub fn feedback(&self, principal: &str, id: &str, outcome: &str) -> Result<Value> {
        let success = match outcome {
            "success" => true,
            "failure" => false,
            _ => {
                return Err(MeshError::invalid(
                    "outcome",
                    format!("{outcome:?} is not success or failure"),
                ))
            }
        };
        let id = parse_task_id(id)?;
        let hash = id.hash().to_string();
        let mut row = self.db.task(&hash)?.ok_or_else(|| MeshError::NotFound {
            what: format!("no task {id}"),
        })?;
        if row.status != "done" {
            return Err(MeshError::Conflict(format!(
                "task {id} is {}; feedback is for done tasks",
                row.status
            )));
        }
        if !self.learning() {
            return Err(MeshError::Conflict(
                "learning is disabled (mesh.learning / LEARNING_ENABLED); feedback is not applied"
                    .into(),
            ));
        }
        self.flush_hits()?;
        let target = match &row.reused_from {
            Some(src) => parse_task_id(src)?.hash().to_string(),
            None => hash.clone(),
        };
        let mut p = self
            .db
            .pattern(&target)?
            .ok_or_else(|| MeshError::NotFound {
                what: format!("task {id} has no pattern (learning was off, or it was pruned)"),
            })?;
        let Some(root) = self.guarded(&row.id, self.fold.root())? else {
            return Err(MeshError::Conflict(
                "the fold guard refused this memory write".into(),
            ));
        };
        if row.reused_from.is_some() && self.guarded(&row.id, root.link())?.is_none() {
            return Err(MeshError::Conflict(
                "the fold guard refused this memory write".into(),
            ));
        }
        let before = p.confidence();
        p.confidence_bp = patterns::adjust(p.confidence_bp, success);
        self.db.put_pattern(&p)?;
        let mut r = Record::new(principal, "task.feedback", outcome);
        r.subject = row.id.clone();
        r.reason = format!("confidence {before:.2} -> {:.2}", p.confidence());
        r.meta = json!({"kind": "task.feedback", "task_id": row.id, "pattern": p.task_id, "outcome": outcome, "from": before, "to": p.confidence()});
        let seq = self.ledger.append(r)?.seq;
        row.ledger.push(seq);
        self.db.put_task(&row)?;
        let mut view = p.view();
        view["ledger_seq"] = json!(seq);
        Ok(view)
    }

    pub fn patterns(&self, domain: Option<&str>, layer: Option<&str>) -> Result<Vec<Value>> {
        let layer = layer
            .map(|l| {
                Layer::parse(l).ok_or_else(|| {
                    MeshError::invalid(
                        "layer",
                        format!("{l:?} is not immediate, pattern or archive"),
                    )
                })
            })
            .transpose()?;
        if let Some(d) = domain {
            self.bot(d)?;
        }
        self.flush_hits()?;
        Ok(self
            .db
            .patterns(domain, layer)?
            .iter()
            .map(Pattern::view)
            .collect())
    }

    /// Pattern maintenance now.
    pub fn maintain(&self, by: &str) -> Result<Vec<LayerChange>> {
        self.maintain_at(now_ns(), by)
    }

    /// Pattern maintenance as of `now_ns` (tests move the clock): every
    /// layer change is applied and recorded with old and new layer and
    /// the reason, in one ledger batch.
    pub fn maintain_at(&self, now_ns: i64, by: &str) -> Result<Vec<LayerChange>> {
        self.flush_hits()?;
        let mut planned = Vec::new();
        for p in self.db.patterns(None, None)? {
            if let Some((change, reason)) = patterns::maintenance(&p, now_ns) {
                planned.push((p, change, reason));
            }
        }
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let records = planned
            .iter()
            .map(|(p, change, reason)| {
                let to = change.to();
                let mut r = Record::new(by, "pattern.layer", to.map_or("pruned", |l| l.as_str()));
                r.subject = p.task_id.clone();
                r.reason = reason.clone();
                r.meta = json!({"kind": "pattern.layer", "task_id": p.task_id, "from": p.layer, "to": to, "reason": reason, "confidence": p.confidence(), "usage": p.usage});
                r
            })
            .collect();
        let receipts = self.ledger.append_batch(records)?;
        let mut out = Vec::new();
        for ((mut p, change, reason), receipt) in planned.into_iter().zip(receipts) {
            let from = p.layer;
            match change.to() {
                Some(layer) => {
                    p.layer = layer;
                    self.db.put_pattern(&p)?;
                }
                None => self.db.delete_pattern(&p.hash)?,
            }
            out.push(LayerChange {
                task_id: p.task_id,
                from,
                to: change.to(),
                reason,
                ledger_seq: receipt.seq,
            });
        }
        Ok(out)
    }
}
