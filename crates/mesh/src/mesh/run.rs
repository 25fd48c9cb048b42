//! Running one queued task: the bot, the artifact, the record, the pattern.

use super::*;

impl Mesh {
    /// Run one queued task (a worker calls this). A task that cannot be
    /// run or recorded (its spec unreadable, the ledger closed) is marked
    /// failed with the reason rather than left running.
    pub(super) fn work(&self, msg: Message, bot: Arc<dyn Bot>) {
        if let Err(e) = self.execute(&msg, bot.as_ref()) {
            tracing::error!(task = %msg.payload_ref, error = %e, "a task could not be run or recorded");
            if self.closed.load(Ordering::SeqCst) {
                // Shutting down: it stays running and runs again at start.
                return;
            }
            let hash = msg.glyph.id.as_str();
            if let Ok(Some(mut row)) = self.db.task(hash) {
                if row.status == "running" {
                    row.status = "failed".into();
                    row.error = Some(format!("the mesh could not run it: {e}"));
                    row.updated_ns = now_ns();
                    let _ = self.db.put_task(&row);
                }
            }
        }
    }

    fn execute(&self, msg: &Message, bot: &dyn Bot) -> Result<()> {
        let id: ObjectId = parse_task_id(&msg.payload_ref)?;
        let hash = id.hash().to_string();
        let Some(mut row) = self.db.task(&hash)? else {
            return Ok(());
        };
        if row.status != "queued" {
            return Ok(());
        }
        row.status = "running".into();
        row.updated_ns = now_ns();
        self.db.put_task(&row)?;
        let spec: TaskSpec = {
            let (_, value) = self.store.get_json(&id)?;
            serde_json::from_value(value)
                .map_err(|e| MeshError::invalid("spec", format!("{}: {e}", msg.payload_ref)))?
        };
        let node = bot.describe().domain;
        let mut trace: Vec<Crumb> = serde_json::from_value(row.trace.clone()).unwrap_or_default();
        trace.push(crumb("run", node));
        let ctx = BotContext {
            principal: row.principal.clone(),
            lane: msg.lane,
            task_id: row.id.clone(),
        };
        let started = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bot.run(&spec, &ctx)))
                .unwrap_or_else(|_| Err(BotError(format!("the {node} bot panicked"))));
        let seconds = started.elapsed().as_secs_f64();
        row.duration_ms = Some(seconds * 1e3);
        let (mut result, artifact) = match outcome {
            Ok(artifact) => {
                let value = serde_json::to_value(&artifact).expect("plain struct");
                let result_id = self
                    .store
                    .put_json(RESULT_NAMESPACE, Kind::Artifact, &value)?;
                trace.push(crumb("store", node));
                let ok = NodeResult {
                    ok: true,
                    reasons: Vec::new(),
                    payload_ref: Some(result_id.to_string()),
                    trace: Vec::new(),
                };
                (ok, Some(artifact))
            }
            Err(e) => {
                let failed = NodeResult {
                    ok: false,
                    reasons: vec![e.0],
                    payload_ref: None,
                    trace: Vec::new(),
                };
                (failed, None)
            }
        };
        let status = if result.ok { "done" } else { "failed" };
        trace.push(crumb(status, node));
        result.trace = trace;
        let mut record = Record::new(&row.principal, "task.result", status);
        record.subject = row.id.clone();
        record.reason = result.reasons.join("; ");
        record.meta = json!({
            "kind": "task.result",
            "task_id": row.id,
            "bot": node,
            "result_id": result.payload_ref,
            "duration_ms": seconds * 1e3,
            "verification": artifact.as_ref().map(|a| &a.verification),
            "model": artifact.as_ref().and_then(|a| a.model.clone()),
            "node_result": result,
            "message": msg,
        });
        let seq = self.ledger.append(record)?.seq;
        row.status = status.into();
        row.result_id = result.payload_ref.clone();
        row.error = result.reasons.first().cloned();
        row.ledger.push(seq);
        row.trace = serde_json::to_value(&result.trace).expect("plain struct");
        row.updated_ns = now_ns();
        self.db.put_task(&row)?;
        self.observer.finished(node, status, seconds);
        if let Some(a) = artifact {
            self.learn(&row, &spec, &a, bot)?;
        }
        Ok(())
    }

    /// Record a done task as a pattern (SPEC M3), through the fold guard.
    fn learn(&self, row: &TaskRow, spec: &TaskSpec, a: &Artifact, bot: &dyn Bot) -> Result<()> {
        if !self.learning() {
            return Ok(());
        }
        let Some(_fold) = self.guarded(&row.id, self.fold.root())? else {
            return Ok(());
        };
        let embedding = if bot.describe().semantic_reuse {
            Some(self.embedder.embed_one(&spec.query)?)
        } else {
            None
        };
        let mut p = self.db.pattern(&row.hash)?.unwrap_or(Pattern {
            task_id: row.id.clone(),
            hash: row.hash.clone(),
            domain: row.domain.clone(),
            layer: Layer::Immediate,
            confidence_bp: patterns::START_BP,
            usage: 0,
            last_used_ns: 0,
            result_id: String::new(),
            embedding: None,
        });
        p.usage += 1;
        p.last_used_ns = now_ns();
        p.result_id = row.result_id.clone().unwrap_or_default();
        p.embedding = embedding;
        if let Verification {
            passed: Some(passed),
            ..
        } = a.verification
        {
            p.confidence_bp = patterns::adjust(p.confidence_bp, passed);
        }
        self.db.put_pattern(&p)?;
        Ok(())
    }

    /// Admit a memory write, or record the trip and refuse it.
    pub(super) fn guarded(
        &self,
        task_id: &str,
        admitted: std::result::Result<Fold, Trip>,
    ) -> Result<Option<Fold>> {
        match admitted {
            Ok(f) => Ok(Some(f)),
            Err(trip) => {
                self.observer.tripped(trip.limit);
                let mut r = Record::new("mesh", "memory.fold_guard", "tripped");
                r.subject = task_id.to_string();
                r.reason = trip.reason.clone();
                r.meta = json!({"kind": "memory.fold_guard", "limit": trip.limit, "task_id": task_id, "limits": self.fold.limits()});
                self.ledger.append(r)?;
                Ok(None)
            }
        }
    }
}
