//! The submit path: decide, then answer from the cache, reuse, queue,
//! hold or refuse.

use super::*;

/// A decision with what it was made from.
struct Decided {
    request: DecisionRequest,
    circumstances: Circumstances,
    decision: Decision,
}

impl Decided {
    fn allowed(&self) -> bool {
        self.decision.outcome.allows()
    }

    fn record(&self, task: Value) -> Record {
        let mut r = decision_record(&self.request, &self.circumstances, &self.decision);
        r.meta["task"] = task;
        r
    }
}

/// One submit on its way through: what the task is and what was decided.
struct Submission {
    spec: TaskSpec,
    task_id: String,
    hash: String,
    principal: String,
    lane: Lane,
    user_id: Option<String>,
    classification: Classification,
    decided: Decided,
}

impl Submission {
    fn reply(&self, status: &str, seq: u64) -> SubmitReply {
        SubmitReply {
            task_id: self.task_id.clone(),
            status: status.to_string(),
            domain: self.spec.domain.clone(),
            classification: self.classification.clone(),
            policy_decision: self.decided.decision.clone(),
            latency_ms: 0.0,
            ledger_seq: seq,
            result_id: None,
            reused_from: None,
            approval_id: None,
        }
    }

    /// The task part of the decision record.
    fn meta(&self, status: &str) -> Value {
        json!({
            "task_id": self.task_id,
            "domain": self.spec.domain,
            "status": status,
            "classification": self.classification,
            "user_id": self.user_id,
        })
    }

    /// A new row for this task.
    fn row(&self, status: &str) -> TaskRow {
        let now = now_ns();
        TaskRow {
            hash: self.hash.clone(),
            id: self.task_id.clone(),
            domain: self.spec.domain.clone(),
            status: status.to_string(),
            lane: self.lane.as_str().to_string(),
            principal: self.principal.clone(),
            result_id: None,
            error: None,
            reused_from: None,
            approval_id: None,
            duration_ms: None,
            ledger: Vec::new(),
            trace: Value::Null,
            hits: 0,
            created_ns: now,
            updated_ns: now,
        }
    }
}

impl Mesh {
    fn decide(&self, principal: &str, domain: &str, lane: Lane, task_id: &str) -> Result<Decided> {
        let request = DecisionRequest {
            principal: principal.to_string(),
            action: "task.submit".into(),
            resource: format!("task:{domain}"),
            lane,
            level: None,
            affect: self.policy.affect_for(None)?.0,
            risk: None,
            drift: None,
            args: json!({"kind": HELD_KIND, "task_id": task_id, "domain": domain, "lane": lane}),
        };
        let circumstances = self.policy.circumstances();
        let decision = evaluate(&self.policy.rules(), &circumstances, &request)?;
        Ok(Decided {
            request,
            circumstances,
            decision,
        })
    }

    /// Submit a task (SPEC T1): classify, decide, then answer from the
    /// cache, reuse a similar confident answer, or queue it.
    pub fn submit(&self, principal: &str, req: &TaskRequest) -> Result<SubmitReply> {
        let started = Instant::now();
        req.validate()?;
        let classification = match &req.domain {
            Some(d) => {
                self.bot(d)?;
                Classification::given(d)
            }
            None => self.classifier.classify(&req.query)?,
        };
        let info = self.bot(&classification.domain)?.describe().clone();
        let spec = req.spec(info.domain, !info.case_sensitive);
        let id = spec.id(Day::today());
        let lane = req.lane.unwrap_or(Lane::Prod);
        let task_id = id.to_string();
        let sub = Submission {
            decided: self.decide(principal, info.domain, lane, &task_id)?,
            hash: id.hash().to_string(),
            task_id,
            principal: principal.to_string(),
            lane,
            user_id: req.user_id.clone(),
            classification,
            spec,
        };
        let mut out = match self.db.cached(&sub.hash)? {
            Some((status, Some(result_id))) if status == "done" && info.cacheable => {
                self.answer_hit(&sub, result_id)?
            }
            Some((status, _))
                if ["queued", "running", "pending_approval"].contains(&status.as_str()) =>
            {
                self.answer_pending(&sub, &status)?
            }
            _ => {
                let similar = if info.semantic_reuse && sub.decided.allowed() {
                    self.similar(info.domain, &sub.spec.query)?
                } else {
                    None
                };
                match similar {
                    Some(p) => self.reuse(&sub, &p)?,
                    None if sub.decided.allowed() => self.queue_new(&sub)?,
                    None => self.refuse(&sub)?,
                }
            }
        };
        out.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        self.observer.submitted(&out.domain, &out.status);
        Ok(out)
    }

    /// A done task: the decision and the hit are one record.
    fn answer_hit(&self, sub: &Submission, result_id: String) -> Result<SubmitReply> {
        if !sub.decided.allowed() {
            return self.refuse(sub);
        }
        let mut meta = sub.meta("cache_hit");
        meta["result_id"] = json!(result_id);
        let seq = self.ledger.append(sub.decided.record(meta))?.seq;
        self.count_hit(&sub.hash);
        let mut r = sub.reply("cache_hit", seq);
        r.result_id = Some(result_id);
        Ok(r)
    }

    /// A task already on its way: one run serves every submit.
    fn answer_pending(&self, sub: &Submission, status: &str) -> Result<SubmitReply> {
        if sub.decided.decision.outcome == Outcome::Blocked {
            return self.refuse(sub);
        }
        let shown = if status == "pending_approval" {
            "pending_approval"
        } else {
            "queued"
        };
        let seq = self.ledger.append(sub.decided.record(sub.meta(shown)))?.seq;
        let mut r = sub.reply(shown, seq);
        r.approval_id = self.db.task(&sub.hash)?.and_then(|t| t.approval_id);
        Ok(r)
    }

    /// A submit the decision does not let through: held for approval, or
    /// blocked with the explanation.
    fn refuse(&self, sub: &Submission) -> Result<SubmitReply> {
        if sub.decided.decision.outcome.needs_approval() {
            // The spec is kept now, so the approved task can run from it.
            self.store_spec(sub)?;
            return self.hold(sub);
        }
        let seq = self
            .ledger
            .append(sub.decided.record(sub.meta("blocked")))?
            .seq;
        if self.db.task(&sub.hash)?.is_none() {
            let mut row = sub.row("blocked");
            row.ledger.push(seq);
            self.db.put_task(&row)?;
        }
        Ok(sub.reply("blocked", seq))
    }

    /// Queue the approval, record the decision naming it, mark the task.
    fn hold(&self, sub: &Submission) -> Result<SubmitReply> {
        let request = &sub.decided.request;
        let approval = ApprovalRequest {
            action: request.action.clone(),
            actor: request.principal.clone(),
            resource: request.resource.clone(),
            args: request.args.clone(),
            policy_version: sub.decided.decision.policy_version.clone(),
        };
        let config = self.policy.config();
        let queue = self.approvals.lock().unwrap_or_else(|p| p.into_inner());
        let approval_id = queue.enqueue_for(
            &approval,
            sub.decided.decision.outcome.as_str(),
            config.approval_quorum,
            config.approval_ttl_s,
        )?;
        let mut meta = sub.meta("pending_approval");
        meta["approval"] = json!({"id": approval_id, "digest": approval.digest()});
        let seq = match self.ledger.append(sub.decided.record(meta)) {
            Ok(r) => r.seq,
            Err(e) => {
                let _ = queue.discard(approval_id);
                return Err(e.into());
            }
        };
        drop(queue);
        let mut row = self
            .db
            .task(&sub.hash)?
            .unwrap_or_else(|| sub.row("pending_approval"));
        if row.status != "done" {
            row.status = "pending_approval".into();
        }
        row.approval_id = Some(approval_id);
        row.ledger.push(seq);
        row.updated_ns = now_ns();
        self.db.put_task(&row)?;
        let mut r = sub.reply("pending_approval", seq);
        r.approval_id = Some(approval_id);
        Ok(r)
    }

    /// A new task: hold a queue place (503 when full, before anything is
    /// written), keep the spec, write the row and the record, publish.
    fn queue_new(&self, sub: &Submission) -> Result<SubmitReply> {
        let slot = self.reserve(&sub.spec.domain)?;
        self.store_spec(sub)?;
        let msg = self.message(&sub.task_id, &sub.spec.domain, sub.lane);
        let mut meta = sub.meta("queued");
        meta["message"] = serde_json::to_value(&msg).expect("plain struct");
        meta["message_bytes"] = json!(msg.encoded_len());
        meta["dispatch"] = json!(self.router.dispatching());
        let mut row = sub.row("queued");
        row.trace = serde_json::to_value([crumb("submit", "router")]).expect("plain struct");
        // The row is written in a transaction that commits only after the
        // record is durable: a failed append leaves no queued row behind.
        let seq = {
            let mut conn = self.db.conn();
            let tx = conn.transaction()?;
            let seq = self.ledger.append(sub.decided.record(meta))?.seq;
            row.ledger.push(seq);
            crate::db::put_task(&tx, &row)?;
            tx.commit()?;
            seq
        };
        self.publish(slot, msg);
        Ok(sub.reply("queued", seq))
    }

    /// A place in `topic`'s queue, or 503.
    pub(super) fn reserve(&self, topic: &str) -> Result<Slot<'_, dyn Bot>> {
        self.router.reserve(topic).map_err(|f| MeshError::Full {
            topic: f.topic,
            capacity: f.capacity,
            retry_after_s: self.config.retry_after_s,
        })
    }

    /// Keep a task's spec in the store; its ID is the task's.
    fn store_spec(&self, sub: &Submission) -> Result<()> {
        let value = serde_json::to_value(&sub.spec).expect("plain struct");
        let stored = self.store.put_json(TASK_NAMESPACE, Kind::Spec, &value)?;
        debug_assert_eq!(stored.hash().to_string(), sub.hash);
        Ok(())
    }

    /// The most similar confident pattern of `domain`, if one may answer.
    fn similar(&self, domain: &str, query: &str) -> Result<Option<Pattern>> {
        let candidates: Vec<Pattern> = self
            .db
            .patterns(Some(domain), None)?
            .into_iter()
            .filter(|p| p.embedding.is_some() && p.layer != Layer::Archive)
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let q = self.embedder.embed_one(query)?;
        let best = candidates
            .into_iter()
            .map(|p| {
                let s = dot(&q, p.embedding.as_deref().unwrap_or_default());
                (p, s)
            })
            .filter(|(p, s)| patterns::reusable(p, *s))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Ok(best.map(|(p, _)| p))
    }

    /// Answer a new query with a similar task's stored result.
    fn reuse(&self, sub: &Submission, source: &Pattern) -> Result<SubmitReply> {
        let mut meta = sub.meta("cache_hit");
        meta["result_id"] = json!(source.result_id);
        meta["reused_from"] = json!(source.task_id);
        let seq = self.ledger.append(sub.decided.record(meta))?.seq;
        let mut row = sub.row("done");
        row.result_id = Some(source.result_id.clone());
        row.reused_from = Some(source.task_id.clone());
        row.ledger.push(seq);
        self.db.put_task(&row)?;
        self.count_hit(&source.hash);
        let mut r = sub.reply("cache_hit", seq);
        r.result_id = Some(source.result_id.clone());
        r.reused_from = Some(source.task_id.clone());
        Ok(r)
    }

    fn count_hit(&self, hash: &str) {
        let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let e = hits.entry(hash.to_string()).or_insert((0, 0));
        e.0 += 1;
        e.1 = now_ns();
    }

    /// Write the counted cache hits to the task and pattern tables.
    pub fn flush_hits(&self) -> Result<()> {
        let taken: Vec<(String, u64, i64)> = {
            let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
            hits.drain().map(|(h, (n, at))| (h, n, at)).collect()
        };
        if taken.is_empty() {
            return Ok(());
        }
        let counts: Vec<(String, u64)> = taken.iter().map(|(h, n, _)| (h.clone(), *n)).collect();
        self.db.add_hits(&counts)?;
        self.db.use_patterns(&taken)?;
        Ok(())
    }
}
