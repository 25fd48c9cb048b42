//! Tasks held for approval, queued once the quorum has signed.

use super::*;

impl Mesh {
    /// Does this approval hold a task submit?
    pub fn runs(&self, approval: &Approval) -> bool {
        serde_json::from_value::<HeldTask>(approval.request.args.clone())
            .is_ok_and(|h| h.kind == HELD_KIND)
    }

    /// Queue an approved task, once: claim the approval, queue the task,
    /// record the queueing and the release in one batch, mark it released.
    /// A task already done by then needs no run; the release says so.
    pub fn release(&self, approval_id: i64) -> Result<Value> {
        let mut queue = self.approvals.lock().unwrap_or_else(|p| p.into_inner());
        let approval = queue.show(approval_id)?;
        let held: HeldTask = serde_json::from_value(approval.request.args.clone())
            .map_err(|e| MeshError::invalid(format!("approval/{approval_id}"), e.to_string()))?;
        if self.policy.kill_switch().is_armed() {
            return Err(MeshError::Conflict(format!(
                "the kill switch is armed; approval {approval_id} stays approved until it is disarmed"
            )));
        }
        let id = parse_task_id(&held.task_id)?;
        let hash = id.hash().to_string();
        let mut row = self.db.task(&hash)?.ok_or_else(|| MeshError::NotFound {
            what: format!("no task {} for approval {approval_id}", held.task_id),
        })?;
        let run = row.status != "done";
        let slot = if run {
            Some(self.reserve(&held.domain)?)
        } else {
            None
        };
        let mut presented = approval.request.clone();
        presented.policy_version = self.policy.rules().version().to_string();
        let approval = queue.claim(approval_id, &presented, &self.ledger)?;
        let msg = self.message(&row.id, &held.domain, held.lane);
        let mut record = Record::new(
            &approval.request.actor,
            "task.submit",
            if run { "queued" } else { "done" },
        );
        record.subject = row.id.clone();
        record.reason = format!("released by approval {approval_id}");
        record.meta = json!({"kind": "task.release", "approval_id": approval_id, "task_id": row.id, "message": msg, "dispatch": self.router.dispatching()});
        let receipts = match self
            .ledger
            .append_batch(vec![record, release_record(&approval)])
        {
            Ok(r) => r,
            Err(e) => {
                let _ = queue.unclaim(approval_id);
                return Err(e.into());
            }
        };
        let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
        if run {
            row.status = "queued".into();
        }
        row.ledger.extend(&seqs);
        row.updated_ns = now_ns();
        self.db.put_task(&row)?;
        let result = json!({"task_id": row.id, "status": row.status, "ledger_seq": seqs[0]});
        queue.finish(approval_id, &result, &seqs)?;
        if let Some(slot) = slot {
            self.publish(slot, msg);
        }
        Ok(result)
    }

    /// Release every approved task approval (after a restart).
    pub fn resume_approvals(&self) -> Result<Vec<(i64, Option<String>)>> {
        let approved = self
            .approvals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list(Some("approved"))?;
        if self.policy.kill_switch().is_armed() {
            return Ok(Vec::new());
        }
        Ok(approved
            .into_iter()
            .filter(|a| self.runs(a))
            .map(|a| (a.id, self.release(a.id).err().map(|e| e.to_string())))
            .collect())
    }
}
