//! The running service: every part opened from one data directory, shared
//! by the HTTP and gRPC front ends.

use crate::auth::{Authenticator, Caller, RateLimiter, TokenFile};
use crate::config::Config;
use crate::data;
use crate::metrics::{Metrics, StepFanout};
use anyhow::{bail, Context, Result};
use capsule_cortex::remote::{AnthropicChat, OpenAiChat, RemoteConfig};
use capsule_cortex::{
    ChatModel, Cortex, CortexConfig, HashPlanner, LlmPlanner, LocalModel, Recall, StepEvent,
};
use capsule_kernel::Kernel;
use capsule_ledger::{Ledger, LedgerConfig};
use capsule_memory::vector::VectorIndex;
use capsule_memory::EventStore;
use capsule_mesh::bots::{
    calc::CalcBot, general::GeneralBot, kernel::KernelBot, medical::MedicalBot,
};
use capsule_mesh::{Bot, Mesh, MeshParts};
use capsule_models::{Embedder, HashEmbedder, LocalChat, MiniLm, MINILM_DIMS, SMOLLM2};
use capsule_policy::affect::AffectState;
use capsule_policy::approvals::ApprovalQueue;
use capsule_policy::killswitch::KillSwitch;
use capsule_policy::PolicyEngine;
use capsule_store::{FileKeyring, Kind, ObjectId, Store};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Why [`Service::admit`] turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoToken,
    UnknownToken,
    RateLimited { retry_after_s: u64 },
}

/// Steps buffered per StreamSteps subscriber before it counts as lagging.
pub const STEP_CHANNEL_CAPACITY: usize = 1024;

pub struct Service {
    pub data: PathBuf,
    pub config: Config,
    pub cortex: Arc<Cortex>,
    pub mesh: Arc<Mesh>,
    pub ledger: Arc<Ledger>,
    pub policy: Arc<PolicyEngine>,
    pub kill: Arc<KillSwitch>,
    pub store: Arc<Store>,
    pub approvals: Arc<Mutex<ApprovalQueue>>,
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    pub steps: broadcast::Sender<StepEvent>,
    pub subscribers: AtomicUsize,
    ready: AtomicBool,
}

impl Service {
    /// Open every part of `data` under `config`. Starts the kill-switch
    /// trigger watcher, the SIGUSR1 listener, the policy directory watcher
    /// and the SIGHUP reload (their threads end with the service).
    pub fn open(data: &Path, config: Config) -> Result<Arc<Service>> {
        data::require_initialised(data)?;
        let ledger_config = LedgerConfig {
            checkpoint_interval: Duration::from_millis(config.signing.checkpoint_interval_ms),
            ..LedgerConfig::default()
        };
        let ledger = data::try_open_ledger_with(data, ledger_config)?.with_context(|| {
            format!(
                "another process holds the ledger in {}; is a service already running?",
                data::ledger(data).display()
            )
        })?;
        let kill = KillSwitch::open(&data::state(data), ledger.clone())?;
        let (rules, policy_config) = data::load_policy(data)?;
        let affect = AffectState::open(&data::state(data), config.security.default_affect)?;
        let policy = Arc::new(
            PolicyEngine::new(rules, policy_config, kill.clone(), ledger.clone())?
                .with_policy_dir(&data::policy(data))
                .with_affect(affect),
        );
        let approvals = Arc::new(Mutex::new(ApprovalQueue::open(&data::approvals(data))?));
        let keyring_path = data::keyring(data);
        let keyring = if keyring_path.exists() {
            FileKeyring::open(&keyring_path)?
        } else {
            FileKeyring::create(&keyring_path, &[])?
        };
        let store = Arc::new(Store::open(
            &data::store(data),
            Arc::new(keyring),
            ledger.clone(),
        )?);
        let events_path = data.join(&config.memory.events);
        if let Some(dir) = events_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let memory = Arc::new(EventStore::open(&events_path)?);
        let models = config.models_dir(data);
        let embedder = open_embedder(&config.memory.embedder, &models)?;
        let index = Arc::new(VectorIndex::open(
            &data.join(&config.memory.vectors),
            embedder.dims(),
        )?);
        let tokens = TokenFile::load(&data.join(&config.auth.tokens))?;
        if tokens.tokens.is_empty() {
            bail!(
                "{} holds no tokens; nobody could call the service (capsule tokens add)",
                data.join(&config.auth.tokens).display()
            );
        }
        let auth = Authenticator::new(&tokens)?;
        let kernel =
            Kernel::new(config.kernel.clone()).map_err(|e| anyhow::anyhow!("kernel: {e}"))?;
        let metrics = Arc::new(Metrics::new());
        let (steps, _) = broadcast::channel(STEP_CHANNEL_CAPACITY);
        let cortex = Cortex::new(
            CortexConfig {
                default_planner: config.llm.planner.clone(),
                ..CortexConfig::default()
            },
            kernel,
            policy.clone(),
            memory,
        )?
        .with_sessions(
            config.sessions.max_live,
            Some(Arc::new(KernelSnapshots(store.clone()))),
        )?
        .with_planner(Arc::new(HashPlanner))
        .with_approvals(approvals.clone())
        .with_recall(Recall {
            embedder: embedder.clone(),
            index,
            k: config.memory.recall_k,
        });
        let chats = chat_models(&config, &models)?;
        let general_model = chats
            .iter()
            .find(|c| c.name() == config.mesh.general_model)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "mesh.general_model = {:?} is not loaded: run `capsule models fetch smollm2 --models-dir {}`",
                    config.mesh.general_model,
                    models.display()
                )
            });
        let cortex = chats
            .into_iter()
            .fold(cortex, |c, model| {
                c.with_planner(Arc::new(LlmPlanner::new(model, embedder.clone())))
            })
            .with_observer(Arc::new(StepFanout {
                metrics: metrics.clone(),
                steps: steps.clone(),
            }));
        let cortex = Arc::new(cortex);
        let bots: Vec<Arc<dyn Bot>> = vec![
            Arc::new(CalcBot::default()),
            Arc::new(MedicalBot::default()),
            Arc::new(KernelBot::new(cortex.clone())),
            Arc::new(GeneralBot::new(general_model)),
        ];
        let mesh = Mesh::open(
            &data::mesh(data),
            config.mesh.mesh_config(),
            MeshParts {
                store: store.clone(),
                ledger: ledger.clone(),
                policy: policy.clone(),
                approvals: approvals.clone(),
                embedder: embedder.clone(),
                bots,
            },
            Some(metrics.clone() as Arc<dyn capsule_mesh::MeshObserver>),
        )?;

        kill.watch_trigger(Duration::from_millis(config.security.kill_switch_poll_ms));
        kill.listen_sigusr1()?;
        policy.watch_policy_dir(
            &data::policy(data),
            Duration::from_millis(config.security.watch_policy_ms),
        );
        policy.reload_on_sighup(&data::policy(data))?;
        cortex.record_session_start("service")?;
        // Actions a crash interrupted, or approved while the service was
        // down, run now (once).
        for (id, failed) in cortex.resume_approvals()? {
            match failed {
                None => tracing::info!(approval = id, "ran an approved action at start"),
                Some(why) => {
                    tracing::warn!(approval = id, %why, "an approved action did not run at start")
                }
            }
        }

        mesh.start()?;
        let svc = Arc::new(Service {
            data: data.to_path_buf(),
            limiter: RateLimiter::new(config.auth.rate_limit_per_minute),
            config,
            cortex,
            mesh,
            ledger,
            policy,
            kill,
            store,
            approvals,
            auth,
            metrics,
            steps,
            subscribers: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
        });
        svc.expire_approvals_every(Duration::from_millis(500));
        Ok(svc)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Admit a request by its `Authorization` value: the caller of a known
    /// bearer token that is within its rate limit. Both front ends use this.
    pub fn admit(&self, authorization: Option<&str>) -> Result<Caller, Refusal> {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Refusal::NoToken)?;
        let caller = self
            .auth
            .authenticate(token.trim())
            .ok_or(Refusal::UnknownToken)?;
        if let Err(wait) = self.limiter.check(&caller.name) {
            self.metrics.rate_limited.inc();
            return Err(Refusal::RateLimited {
                retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        Ok(caller)
    }

    pub fn approvals(&self) -> std::sync::MutexGuard<'_, ApprovalQueue> {
        self.approvals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Expire the approvals whose time is up, every `interval`, for as long
    /// as the service lives (each expiry is recorded).
    pub fn expire_approvals_every(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        std::thread::spawn(move || loop {
            std::thread::sleep(interval);
            let Some(svc) = weak.upgrade() else { return };
            let expired = svc.approvals().expire(&svc.ledger);
            if let Ok(ids) = expired {
                svc.metrics.approvals_expired.inc_by(ids.len() as u64);
            }
        });
    }
}

/// The store namespace of evicted session kernels' snapshots.
pub const SNAPSHOT_NAMESPACE: &str = "kernels";

/// Evicted session kernels go to the object store as blobs.
struct KernelSnapshots(Arc<Store>);

impl capsule_cortex::SnapshotStore for KernelSnapshots {
    fn put(&self, bytes: &[u8]) -> std::result::Result<String, String> {
        self.0
            .put(SNAPSHOT_NAMESPACE, Kind::Blob, bytes)
            .map(|id| id.to_string())
            .map_err(|e| e.to_string())
    }

    fn get(&self, id: &str) -> std::result::Result<Vec<u8>, String> {
        let id: ObjectId = id
            .parse()
            .map_err(|e: capsule_store::StoreError| e.to_string())?;
        self.0.get(&id).map_err(|e| e.to_string())
    }
}

/// The embedder `memory.embedder` names; MiniLM must have been fetched.
/// The hash embedder gets MiniLM's width, so switching embedders keeps the
/// index's dimension (the vectors themselves are not comparable).
fn open_embedder(name: &str, models: &Path) -> Result<Arc<dyn Embedder>> {
    Ok(match name {
        "hash" => Arc::new(HashEmbedder {
            dims: MINILM_DIMS,
        }),
        _ => Arc::new(MiniLm::load(models).with_context(|| {
            format!(
                "memory.embedder = \"minilm\" needs the model: run `capsule models fetch minilm --models-dir {}`",
                models.display()
            )
        })?),
    })
}

/// The chat models behind the LLM planners: the remote providers always
/// (their keys are read at each call), the local model when its file is
/// present — and it must be when it is the default planner.
fn chat_models(config: &Config, models: &Path) -> Result<Vec<Arc<dyn ChatModel>>> {
    let mut out: Vec<Arc<dyn ChatModel>> = vec![
        Arc::new(OpenAiChat::new(
            config.llm.openai.apply(RemoteConfig::openai()),
        )?),
        Arc::new(AnthropicChat::new(
            config.llm.anthropic.apply(RemoteConfig::anthropic()),
        )?),
    ];
    let present = capsule_models::status(&SMOLLM2, models).ready;
    if present || config.llm.planner == "local" {
        let chat = LocalChat::load_smollm2(models).with_context(|| {
            format!(
                "llm.planner = \"local\" needs SmolLM2: run `capsule models fetch smollm2 --models-dir {}`",
                models.display()
            )
        })?;
        out.push(Arc::new(LocalModel::new(chat)));
    }
    Ok(out)
}
