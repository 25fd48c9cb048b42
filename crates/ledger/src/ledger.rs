//! The writer: durable group commit, checkpoints, key rotation, and
//! recovery on open.
//!
//! Appenders encode their entries under one lock (which assigns `seq` and
//! `ts`) and queue them; a single writer thread takes everything queued,
//! writes the records to the current segment and fsyncs it, then writes the
//! tree nodes and index slots and fsyncs those, and only then wakes the
//! appenders. Many appends thus share three fsyncs, and an entry whose
//! nodes are on disk is known to be durable in its segment: recovery uses
//! that ordering to tell a torn tail (truncated) from damage to
//! acknowledged entries (refused).
//!
//! Nothing else runs on the writer's path: the index file's fsync runs on
//! a helper thread beside the nodes file's, and checkpoints are signed and
//! appended (with their own fsync) by a third thread, the notary, from the
//! tree head the writer hands it, so a group commit never waits behind a
//! checkpoint.

use crate::checkpoints::{read_notes, NoteWriter};
use crate::entry::{peek_action, AuditEntry, Record};
use crate::error::{LedgerError, Result};
use crate::keys::{rotation_record, KeySchedule, KeyStore, ROTATE_ACTION};
use crate::layout::{
    frame_record, index_slot, sync_parent, write_new_file, Layout, LedgerMeta, FORMAT,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};
use crate::merkle::{self, leaf_hash, postorder_len, Frontier, Hash};
use crate::note::{check_name, Checkpoint, NoteSigner, TreeHead, VerifierKey};
use crate::reader::{check_size, prove_inclusion, Files, InclusionProof};
use crate::scan::scan;
use crate::tail::{assess, Tail};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Limits and intervals of a ledger.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// A checkpoint is issued at least this often while entries arrive.
    pub checkpoint_interval: Duration,
    /// A segment is closed once it reaches this size.
    pub segment_bytes: u64,
    /// Most entries written by one group commit.
    pub max_batch: usize,
    /// Most entries queued; appenders wait while the queue is full.
    pub max_queue: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            checkpoint_interval: Duration::from_secs(1),
            segment_bytes: 64 << 20,
            max_batch: 1 << 16,
            max_queue: 1 << 20,
        }
    }
}

/// What an acknowledged append returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub ts: i64,
    pub leaf_hash: Hash,
}

/// Records queued by [`Ledger::submit`]: sequence numbers assigned, not yet durable.
#[must_use = "an append is acknowledged only once wait() returns"]
pub struct PendingAppend<'a> {
    ledger: &'a Ledger,
    receipts: Vec<Receipt>,
}

impl PendingAppend<'_> {
    /// The receipts the records will have (not durable before `wait`).
    pub fn receipts(&self) -> &[Receipt] {
        &self.receipts
    }

    /// Block until the records are durable.
    pub fn wait(self) -> Result<Vec<Receipt>> {
        self.ledger.wait_durable(self.receipts)
    }
}

/// What recovery found and did when the ledger was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Entries in the log after recovery.
    pub entries: u64,
    /// Entries whose nodes and index slots had to be rebuilt (durable in
    /// their segment, but not yet acknowledged when the writer stopped).
    pub rebuilt: u64,
    /// Bytes cut from a torn tail of the last segment.
    pub truncated_bytes: u64,
    /// Bytes cut from a torn tail of the checkpoints file.
    pub truncated_checkpoint_bytes: u64,
    /// What lay past the acknowledged prefix, in detail (files, offsets).
    pub tail: Tail,
}

struct Queued {
    payload: Vec<u8>,
    leaf: Hash,
    rotate_to: Option<Arc<dyn NoteSigner>>,
}

/// A checkpoint for the notary to sign and append: the tree head at a
/// durable size and the key in force for that size.
struct CheckpointJob {
    head: TreeHead,
    signer: Arc<dyn NoteSigner>,
}

struct State {
    next_seq: u64,
    queue: VecDeque<Queued>,
    durable: u64,
    failed: Option<String>,
    closing: bool,
    want_checkpoint: bool,
    latest: Option<Checkpoint>,
    /// The next checkpoint for the notary (a newer one replaces it).
    job: Option<CheckpointJob>,
    /// The writer has stopped: the notary finishes its job and stops.
    notary_stop: bool,
    /// The notary waits this long before writing its next checkpoint (see
    /// `delay_next_checkpoint`).
    notary_delay: Option<Duration>,
    /// The next group write fails with this reason (see `inject_write_failure`).
    inject_failure: Option<String>,
}

struct Shared {
    layout: Layout,
    origin: String,
    config: LedgerConfig,
    files: Files,
    keys: KeyStore,
    state: Mutex<State>,
    wake_writer: Condvar,
    wake_notary: Condvar,
    progress: Condvar,
    signer: RwLock<Arc<dyn NoteSigner>>,
    rotating: Mutex<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, cv: &Condvar, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        cv.wait(g).unwrap_or_else(|p| p.into_inner())
    }
}

/// An open, writable ledger. One per directory at a time (a lock file
/// enforces it across processes).
pub struct Ledger {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    recovery: Recovery,
    _lock: File,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn create_segment(layout: &Layout, number: u32, first_seq: u64) -> Result<File> {
    let path = layout.segment(number);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(LedgerError::io(&path))?;
    let mut header = SEGMENT_MAGIC.to_vec();
    header.extend_from_slice(&first_seq.to_le_bytes());
    file.write_all(&header).map_err(LedgerError::io(&path))?;
    file.sync_all().map_err(LedgerError::io(&path))?;
    sync_parent(&path)?;
    Ok(file)
}

fn open_append(path: &Path, len: u64) -> Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(LedgerError::io(path))?;
    let current = file.metadata().map_err(LedgerError::io(path))?.len();
    if current != len {
        file.set_len(len).map_err(LedgerError::io(path))?;
        file.sync_all().map_err(LedgerError::io(path))?;
    }
    file.seek(SeekFrom::Start(len))
        .map_err(LedgerError::io(path))?;
    Ok(file)
}

impl Ledger {
    /// Make a new ledger in `dir` (absent or empty) with a fresh signing
    /// key, and open it.
    pub fn create(dir: &Path, origin: &str, config: LedgerConfig) -> Result<Ledger> {
        check_name("origin", origin)?;
        let layout = Layout::new(dir);
        fs::create_dir_all(dir).map_err(LedgerError::io(dir))?;
        if fs::read_dir(dir)
            .map_err(LedgerError::io(dir))?
            .next()
            .is_some()
        {
            return Err(LedgerError::invalid(
                "dir",
                format!(
                    "{} is not empty; open the ledger there instead",
                    dir.display()
                ),
            ));
        }
        fs::create_dir(layout.segments()).map_err(LedgerError::io(layout.segments()))?;
        KeyStore::new(&layout.keys(), origin).create(1)?;
        create_segment(&layout, 1, 0)?;
        write_new_file(&layout.index(), &[], 0o644)?;
        write_new_file(&layout.nodes(), &[], 0o644)?;
        // ledger.json last: a directory without it was never a ledger.
        LedgerMeta {
            format: FORMAT,
            origin: origin.into(),
        }
        .write_new(&layout)?;
        Ledger::open(dir, config)
    }

    /// Open `dir` if it holds a ledger, else create one.
    pub fn open_or_create(dir: &Path, origin: &str, config: LedgerConfig) -> Result<Ledger> {
        if Layout::new(dir).meta().exists() {
            Ledger::open(dir, config)
        } else {
            Ledger::create(dir, origin, config)
        }
    }

    /// Open an existing ledger, recovering from a crash: a torn tail is cut
    /// off, entries durable in their segment get their nodes rebuilt, and
    /// any damage to acknowledged entries, nodes, index slots or
    /// checkpoints is refused with the file and offset.
    pub fn open(dir: &Path, config: LedgerConfig) -> Result<Ledger> {
        if config.max_batch == 0
            || config.max_queue < config.max_batch
            || config.segment_bytes < 4096
        {
            return Err(LedgerError::invalid(
                "config",
                "need max_batch ≥ 1, max_queue ≥ max_batch and segment_bytes ≥ 4096",
            ));
        }
        let layout = Layout::new(dir);
        let meta = LedgerMeta::read(&layout)?;
        let lock_path = layout.lock();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(LedgerError::io(&lock_path))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => LedgerError::Locked {
                path: lock_path.clone(),
            },
            fs::TryLockError::Error(e) => LedgerError::io(&lock_path)(e),
        })?;

        let keys = KeyStore::new(&layout.keys(), &meta.origin);
        let first_key = keys.load_public(1)?;
        // One set of read handles serves recovery and then the readers;
        // recovery only truncates or extends these files, never replaces them.
        let files = Files::open(&layout)?;
        let r = recover(&layout, &files, &meta.origin, first_key)?;
        let (_, signer) = keys.find(&r.current_key)?;
        let signer: Arc<dyn NoteSigner> = Arc::new(signer);
        let shared = Arc::new(Shared {
            layout,
            origin: meta.origin,
            config,
            files,
            keys,
            state: Mutex::new(State {
                next_seq: r.report.entries,
                queue: VecDeque::new(),
                durable: r.report.entries,
                failed: None,
                closing: false,
                want_checkpoint: false,
                latest: r.latest.clone(),
                job: None,
                notary_stop: false,
                notary_delay: None,
                inject_failure: None,
            }),
            wake_writer: Condvar::new(),
            wake_notary: Condvar::new(),
            progress: Condvar::new(),
            signer: RwLock::new(signer.clone()),
            rotating: Mutex::new(()),
        });
        let index_sync = IndexSync::start(&r.files.index, &shared.layout.index())?;
        let notary_shared = shared.clone();
        let mut notes = r.notes;
        let notary = std::thread::Builder::new()
            .name("ledger-notary".into())
            .spawn(move || notarize(&notary_shared, &mut notes))
            .map_err(LedgerError::io(dir))?;
        let writer = Writer {
            layout: shared.layout.clone(),
            segment_bytes: shared.config.segment_bytes,
            checkpoint_interval: shared.config.checkpoint_interval,
            origin: shared.origin.clone(),
            files: r.files,
            index_sync,
            signer,
            last_checkpoint: Instant::now(),
            issued: r.latest.as_ref().map(|c| c.size()),
            records: Vec::new(),
            node_bytes: Vec::new(),
            slots: Vec::new(),
        };
        let recovery = r.report;
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                writer.run(&thread_shared);
                // The notary writes the last job (the final checkpoint on
                // close) and stops; the ledger is closed after that.
                let mut st = thread_shared.lock();
                st.notary_stop = true;
                thread_shared.wake_notary.notify_all();
                drop(st);
                let _ = notary.join();
            })
            .map_err(LedgerError::io(dir))?;
        Ok(Ledger {
            shared,
            writer: Mutex::new(Some(handle)),
            recovery,
            _lock: lock,
        })
    }

    /// What recovery did when this ledger was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn dir(&self) -> &Path {
        self.shared.layout.dir()
    }

    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// The number of acknowledged (durable) entries.
    pub fn size(&self) -> u64 {
        self.shared.lock().durable
    }

    /// The key that signs new checkpoints.
    pub fn verifier_key(&self) -> VerifierKey {
        self.shared
            .signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .verifier()
            .clone()
    }

    /// The key a verifier starts from: version 1.
    pub fn first_key(&self) -> Result<VerifierKey> {
        self.shared.keys.load_public(1)
    }

    /// Append one record; returns once it is durable.
    pub fn append(&self, record: Record) -> Result<Receipt> {
        let mut receipts = self.append_batch(vec![record])?;
        Ok(receipts.pop().expect("one receipt per record"))
    }

    /// Append records in order; returns once all are durable. Nothing is
    /// queued unless every record is valid.
    pub fn append_batch(&self, records: Vec<Record>) -> Result<Vec<Receipt>> {
        let tagged = records.into_iter().map(|r| (r, None)).collect();
        self.enqueue(tagged)
    }

    /// Queue records in order and return at once: their sequence numbers
    /// are fixed now, durability comes with [`PendingAppend::wait`]. Lets a
    /// caller fix the log order under its own lock and wait outside it.
    pub fn submit(&self, records: Vec<Record>) -> Result<PendingAppend<'_>> {
        let tagged = records.into_iter().map(|r| (r, None)).collect();
        let receipts = self.queue(tagged)?;
        Ok(PendingAppend {
            ledger: self,
            receipts,
        })
    }

    fn enqueue(&self, records: Vec<(Record, Option<Arc<dyn NoteSigner>>)>) -> Result<Vec<Receipt>> {
        let receipts = self.queue(records)?;
        self.wait_durable(receipts)
    }

    /// Validate and queue; the receipts are not durable yet.
    fn queue(&self, records: Vec<(Record, Option<Arc<dyn NoteSigner>>)>) -> Result<Vec<Receipt>> {
        for (i, (r, _)) in records.iter().enumerate() {
            r.validate().map_err(|e| match e {
                LedgerError::Invalid { field, reason } if records.len() > 1 => {
                    LedgerError::invalid(format!("records[{i}].{field}"), reason)
                }
                e => e,
            })?;
        }
        let n = records.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > self.shared.config.max_queue {
            return Err(LedgerError::invalid(
                "records",
                format!(
                    "{n} records exceed the queue limit of {}",
                    self.shared.config.max_queue
                ),
            ));
        }
        let shared = &self.shared;
        let mut st = shared.lock();
        loop {
            if let Some(f) = &st.failed {
                return Err(LedgerError::Failed(f.clone()));
            }
            if st.closing {
                return Err(LedgerError::Closed);
            }
            if st.queue.len() + n <= shared.config.max_queue {
                break;
            }
            st = shared.wait(&shared.progress, st);
        }
        let ts = now_ns();
        let mut receipts = Vec::with_capacity(n);
        for (record, rotate_to) in records {
            let entry = AuditEntry {
                seq: st.next_seq,
                ts,
                record,
            };
            let payload = entry.encode();
            let leaf = leaf_hash(&payload);
            receipts.push(Receipt {
                seq: entry.seq,
                ts,
                leaf_hash: leaf,
            });
            st.queue.push_back(Queued {
                payload,
                leaf,
                rotate_to,
            });
            st.next_seq += 1;
        }
        shared.wake_writer.notify_one();
        Ok(receipts)
    }

    /// Block until every receipt is durable.
    fn wait_durable(&self, receipts: Vec<Receipt>) -> Result<Vec<Receipt>> {
        let Some(last) = receipts.last().map(|r| r.seq) else {
            return Ok(receipts);
        };
        let shared = &self.shared;
        let mut st = shared.lock();
        while st.durable <= last {
            if let Some(f) = &st.failed {
                return Err(LedgerError::Failed(f.clone()));
            }
            st = shared.wait(&shared.progress, st);
        }
        Ok(receipts)
    }

    /// Entry `seq`, if acknowledged.
    pub fn entry(&self, seq: u64) -> Result<AuditEntry> {
        let size = self.size();
        if seq >= size {
            return Err(LedgerError::invalid(
                "seq",
                format!("{seq} is not below the log size {size}"),
            ));
        }
        self.shared.files.entry(seq)
    }

    /// The root hash of the first `size` entries.
    pub fn root(&self, size: u64) -> Result<Hash> {
        check_size("size", size, self.size())?;
        merkle::root(&self.shared.files, size)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof> {
        check_size("size", size, self.size())?;
        prove_inclusion(&self.shared.files, index, size)
    }

    /// The consistency proof between tree sizes `old_size` ≤ `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>> {
        check_size("new size", new_size, self.size())?;
        merkle::consistency_proof(&self.shared.files, old_size, new_size)
    }

    /// The newest checkpoint, if any was issued.
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.shared.lock().latest.clone()
    }

    /// A checkpoint covering every entry acknowledged before this call,
    /// issued now if the newest one does not.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let shared = &self.shared;
        let mut st = shared.lock();
        let target = st.durable;
        loop {
            if let Some(cp) = &st.latest {
                if cp.size() >= target {
                    return Ok(cp.clone());
                }
            }
            if let Some(f) = &st.failed {
                return Err(LedgerError::Failed(f.clone()));
            }
            if st.closing {
                return Err(LedgerError::Closed);
            }
            st.want_checkpoint = true;
            shared.wake_writer.notify_one();
            st = shared.wait(&shared.progress, st);
        }
    }

    /// Rotate the signing key: make key version N+1, record the rotation
    /// (signed by the current key), and issue a checkpoint with the new
    /// key. Returns the new verifier key.
    pub fn rotate_key(&self) -> Result<VerifierKey> {
        let _one_at_a_time = self
            .shared
            .rotating
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let keys = &self.shared.keys;
        let version = keys.versions()?.last().copied().unwrap_or(0) + 1;
        let new: Arc<dyn NoteSigner> = Arc::new(keys.create(version)?);
        let old = self
            .shared
            .signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let record = rotation_record(&self.shared.origin, old.as_ref(), new.verifier(), version);
        self.enqueue(vec![(record, Some(new.clone()))])?;
        self.checkpoint()?;
        Ok(new.verifier().clone())
    }

    /// Make the next group write fail as a failing disk would: its
    /// appends are not acknowledged and the ledger is failed from then on,
    /// as after any write error. For tests of what callers undo when a
    /// durable write fails after they queued it; nothing else calls it.
    #[doc(hidden)]
    pub fn inject_write_failure(&self, reason: &str) {
        self.shared.lock().inject_failure = Some(reason.to_string());
    }

    /// Make the next checkpoint take `delay` longer to write, as a slow
    /// disk would. For tests that appends do not wait for a checkpoint;
    /// nothing else calls it.
    #[doc(hidden)]
    pub fn delay_next_checkpoint(&self, delay: Duration) {
        self.shared.lock().notary_delay = Some(delay);
    }

    /// Stop the writer after it has written everything queued and issued a
    /// final checkpoint. Further appends fail with [`LedgerError::Closed`].
    pub fn close(&self) -> Result<()> {
        {
            let mut st = self.shared.lock();
            st.closing = true;
            self.shared.wake_writer.notify_one();
        }
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
        match &self.shared.lock().failed {
            Some(f) => Err(LedgerError::Failed(f.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Fail the ledger: no append is acknowledged from now on.
fn fail(shared: &Shared, e: LedgerError) {
    let mut st = shared.lock();
    st.failed = Some(e.to_string());
    st.queue.clear();
    shared.progress.notify_all();
    shared.wake_writer.notify_all();
}

/// The notary thread: sign each checkpoint job and append it to the
/// checkpoints file (fsynced), then publish it as the latest. Jobs come in
/// increasing size; one that arrives while another is written waits, and a
/// newer one replaces it.
fn notarize(shared: &Shared, notes: &mut NoteWriter) {
    let mut st = shared.lock();
    loop {
        let Some(job) = st.job.take() else {
            if st.notary_stop || st.failed.is_some() {
                return;
            }
            st = shared.wait(&shared.wake_notary, st);
            continue;
        };
        let delay = st.notary_delay.take();
        drop(st);
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        let cp = Checkpoint::sign(job.head, job.signer.as_ref());
        let written = notes.append(cp.text());
        st = shared.lock();
        match written {
            Ok(_) => {
                debug_assert!(st.latest.as_ref().is_none_or(|l| l.size() <= cp.size()));
                st.latest = Some(cp);
                shared.progress.notify_all();
            }
            Err(e) => {
                drop(st);
                fail(shared, e);
                return;
            }
        }
    }
}

/// The index file's fsync, on a thread of its own that lives as long as
/// the writer, so it overlaps the nodes file's fsync without a thread being
/// started for every group.
struct IndexSync {
    ask: SyncSender<()>,
    done: Receiver<std::io::Result<()>>,
}

impl IndexSync {
    fn start(index: &File, path: &Path) -> Result<IndexSync> {
        let file = index.try_clone().map_err(LedgerError::io(path))?;
        let (ask, asked) = sync_channel::<()>(1);
        let (report, done) = sync_channel(1);
        std::thread::Builder::new()
            .name("ledger-fsync".into())
            .spawn(move || {
                // Ends when the writer drops `ask`.
                for () in asked {
                    if report.send(file.sync_data()).is_err() {
                        return;
                    }
                }
            })
            .map_err(LedgerError::io(path))?;
        Ok(IndexSync { ask, done })
    }

    /// Start the fsync; [`IndexSync::wait`] returns its result.
    fn begin(&self) -> std::io::Result<()> {
        self.ask
            .send(())
            .map_err(|_| std::io::Error::other("the fsync thread stopped"))
    }

    fn wait(&self) -> std::io::Result<()> {
        self.done
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the fsync thread stopped")))
    }
}

/// The writer thread's files and tree.
struct Writer {
    layout: Layout,
    segment_bytes: u64,
    checkpoint_interval: Duration,
    origin: String,
    files: TailFiles,
    index_sync: IndexSync,
    signer: Arc<dyn NoteSigner>,
    /// When the last checkpoint job was handed to the notary.
    last_checkpoint: Instant,
    /// The size of the newest checkpoint issued or handed to the notary.
    issued: Option<u64>,
    records: Vec<u8>,
    node_bytes: Vec<u8>,
    slots: Vec<u8>,
}

impl Writer {
    fn run(mut self, shared: &Shared) {
        loop {
            let mut st = shared.lock();
            loop {
                if st.failed.is_some() {
                    return;
                }
                if !st.queue.is_empty() || st.closing {
                    break;
                }
                if st.want_checkpoint {
                    if self.stale(st.durable) {
                        break;
                    }
                    // A checkpoint covering everything durable is issued;
                    // the notary wakes the caller when it is written.
                    st.want_checkpoint = false;
                }
                if self.issued.is_some_and(|s| st.durable > s) {
                    let due = self
                        .checkpoint_interval
                        .saturating_sub(self.last_checkpoint.elapsed());
                    if due.is_zero() {
                        break;
                    }
                    st = shared
                        .wake_writer
                        .wait_timeout(st, due)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                } else {
                    st = shared.wait(&shared.wake_writer, st);
                }
            }
            let take = st.queue.len().min(shared.config.max_batch);
            let batch: Vec<Queued> = st.queue.drain(..take).collect();
            let injected = if batch.is_empty() {
                None
            } else {
                st.inject_failure.take()
            };
            let closing = st.closing && st.queue.is_empty();
            drop(st);

            if !batch.is_empty() {
                let written = match injected {
                    Some(reason) => Err(LedgerError::Failed(reason)),
                    None => self.write(&batch),
                };
                if let Err(e) = written {
                    fail(shared, e);
                    return;
                }
                let mut st = shared.lock();
                st.durable += batch.len() as u64;
                shared.progress.notify_all();
                drop(st);
                for q in &batch {
                    if let Some(next) = &q.rotate_to {
                        self.signer = next.clone();
                        *shared.signer.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
                    }
                }
            }

            let mut st = shared.lock();
            let durable = st.durable;
            let due = self.last_checkpoint.elapsed() >= self.checkpoint_interval;
            if self.stale(durable) && (due || st.want_checkpoint || closing) {
                debug_assert_eq!(durable, self.files.frontier.size());
                // The root is read from the frontier here (cheap); signing
                // and the fsync of the note are the notary's.
                st.job = Some(CheckpointJob {
                    head: TreeHead {
                        origin: self.origin.clone(),
                        size: durable,
                        root: self.files.frontier.root(),
                    },
                    signer: self.signer.clone(),
                });
                self.issued = Some(durable);
                self.last_checkpoint = Instant::now();
                st.want_checkpoint = false;
                shared.wake_notary.notify_one();
            }
            if closing {
                return;
            }
        }
    }

    /// Whether a checkpoint of `durable` entries is yet to be issued (an
    /// empty log gets one, of size 0, when one is asked for).
    fn stale(&self, durable: u64) -> bool {
        self.issued.is_none_or(|s| durable > s)
    }

    /// Write one group: records, fsync; nodes and index slots, fsync.
    fn write(&mut self, batch: &[Queued]) -> Result<()> {
        let before = (self.files.segment_len, self.files.frontier.clone());
        let result = self.write_inner(batch);
        if result.is_err() {
            // Best effort: leave no half-written group behind. Recovery on
            // the next open copes either way.
            let _ = self.files.segment.set_len(before.0);
            let nodes = postorder_len(before.1.size()) * 32;
            let _ = self.files.nodes.set_len(nodes);
            let _ = self.files.index.set_len(before.1.size() * 8);
        }
        result
    }

    fn write_inner(&mut self, batch: &[Queued]) -> Result<()> {
        self.records.clear();
        self.node_bytes.clear();
        self.slots.clear();
        let first_seq = self.files.frontier.size();
        for (i, q) in batch.iter().enumerate() {
            let record_len = (RECORD_HEADER_LEN + q.payload.len()) as u64;
            if self.files.segment_len + record_len > self.segment_bytes
                && self.files.segment_len > SEGMENT_HEADER_LEN
            {
                self.flush_records()?;
                self.files.segment_number += 1;
                self.files.segment = create_segment(
                    &self.layout,
                    self.files.segment_number,
                    first_seq + i as u64,
                )?;
                self.files.segment_len = SEGMENT_HEADER_LEN;
            }
            self.slots.extend_from_slice(
                &index_slot(self.files.segment_number, self.files.segment_len).to_le_bytes(),
            );
            frame_record(&q.payload, &mut self.records);
            self.files.segment_len += record_len;
        }
        self.flush_records()?;
        for q in batch {
            let out = &mut self.node_bytes;
            self.files
                .frontier
                .push(q.leaf, |_, _, h| out.extend_from_slice(h));
        }
        let (nodes_path, index_path) = (self.layout.nodes(), self.layout.index());
        self.files
            .nodes
            .write_all(&self.node_bytes)
            .map_err(LedgerError::io(&nodes_path))?;
        self.files
            .index
            .write_all(&self.slots)
            .map_err(LedgerError::io(&index_path))?;
        // The two fsyncs are independent; overlapping them saves one
        // device round trip per group.
        self.index_sync
            .begin()
            .map_err(LedgerError::io(&index_path))?;
        let nodes_sync = self.files.nodes.sync_data();
        let index_sync = self.index_sync.wait();
        nodes_sync.map_err(LedgerError::io(&nodes_path))?;
        index_sync.map_err(LedgerError::io(&index_path))
    }

    fn flush_records(&mut self) -> Result<()> {
        let path = self.layout.segment(self.files.segment_number);
        self.files
            .segment
            .write_all(&self.records)
            .map_err(LedgerError::io(&path))?;
        self.files
            .segment
            .sync_data()
            .map_err(LedgerError::io(&path))?;
        self.records.clear();
        Ok(())
    }
}

/// The files the writer appends to, positioned at their ends, and the tree.
struct TailFiles {
    segment: File,
    segment_number: u32,
    segment_len: u64,
    index: File,
    nodes: File,
    frontier: Frontier,
}

/// What recovery hands to the writer.
struct Recovered {
    files: TailFiles,
    notes: NoteWriter,
    report: Recovery,
    latest: Option<Checkpoint>,
    current_key: VerifierKey,
}

/// Bring the files back to a consistent state, or refuse.
fn recover(
    layout: &Layout,
    files: &Files,
    origin: &str,
    first_key: VerifierKey,
) -> Result<Recovered> {
    let acked = files.stored_size()?;
    let mut schedule = KeySchedule::new(origin, first_key);
    let scan = scan(layout, acked, |_, payload| {
        if peek_action(payload) == Some(ROTATE_ACTION.as_bytes()) {
            schedule.follow(&AuditEntry::decode(payload)?)?;
        }
        Ok(())
    })?;
    let notes_path = layout.checkpoints();
    let notes = read_notes(&notes_path)?;
    let tail = assess(layout, &scan, acked, &notes)?;
    // The newest checkpoint must verify. Every checkpoint was issued at an
    // acknowledged size, so it lies within the prefix and its root can be
    // read from the stored nodes.
    let latest = match notes.notes.last() {
        None => None,
        Some(note) => {
            let corrupt = |reason: String| LedgerError::corrupt(&notes_path, note.offset, reason);
            let cp = schedule
                .verify_note(&note.text)
                .map_err(|e| corrupt(e.to_string()))?;
            let size = cp.size();
            if size > acked {
                return Err(corrupt(format!(
                    "newest checkpoint covers {size} entries; {acked} are acknowledged"
                )));
            }
            if merkle::root(files, size)? != *cp.root() {
                return Err(corrupt(format!(
                    "checkpoint root for size {size} does not match the entries"
                )));
            }
            Some(cp)
        }
    };

    // Nothing was changed above; from here on the repairs.
    let last_segment = scan.last_segment;
    let mut segment_len = scan.segments.last().map_or(0, |s| s.1);
    if let Some(cut) = &tail.cut {
        segment_len = cut.offset;
    }
    let mut segment_number = last_segment;
    let segment = if segment_len < SEGMENT_HEADER_LEN {
        // The last segment's header is torn: it was being created.
        let path = layout.segment(last_segment);
        fs::remove_file(&path).map_err(LedgerError::io(&path))?;
        sync_parent(&path)?;
        if last_segment > 1 {
            segment_number -= 1;
            let prev = layout.segment(segment_number);
            let len = fs::metadata(&prev).map_err(LedgerError::io(&prev))?.len();
            segment_len = len;
            open_append(&prev, len)?
        } else {
            segment_len = SEGMENT_HEADER_LEN;
            create_segment(layout, 1, 0)?
        }
    } else {
        open_append(&layout.segment(last_segment), segment_len)?
    };

    // Derived files: keep the acknowledged part, rebuild the rest.
    let mut nodes = open_append(&layout.nodes(), postorder_len(acked) * 32)?;
    let mut index = open_append(&layout.index(), acked * 8)?;
    let mut frontier = scan.frontier_at_tail;
    let mut node_bytes = Vec::new();
    let mut slots = Vec::new();
    for t in &scan.tail {
        frontier.push(t.leaf, |_, _, h| node_bytes.extend_from_slice(h));
        slots.extend_from_slice(&t.slot.to_le_bytes());
    }
    if !scan.tail.is_empty() {
        nodes
            .write_all(&node_bytes)
            .map_err(LedgerError::io(layout.nodes()))?;
        index
            .write_all(&slots)
            .map_err(LedgerError::io(layout.index()))?;
        nodes.sync_data().map_err(LedgerError::io(layout.nodes()))?;
        index.sync_data().map_err(LedgerError::io(layout.index()))?;
    }
    debug_assert_eq!(frontier.size(), scan.entries);
    let recovery = Recovery {
        entries: scan.entries,
        rebuilt: tail.entries(),
        truncated_bytes: tail.cut.as_ref().map_or(0, |c| c.bytes),
        truncated_checkpoint_bytes: tail.checkpoint_cut.as_ref().map_or(0, |c| c.bytes),
        tail,
    };

    Ok(Recovered {
        files: TailFiles {
            segment,
            segment_number,
            segment_len,
            index,
            nodes,
            frontier,
        },
        notes: NoteWriter::open(&notes_path, notes.end)?,
        report: recovery,
        latest,
        current_key: schedule.current().clone(),
    })
}
