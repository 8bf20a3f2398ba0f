//! The decision record's store: a redb database (an embedded, crash-safe B-tree store) in the
//! controller's data directory. Records are keyed by arrival time and request id, so they come
//! back in time order and an import of the same export adds nothing twice; each snapshot is
//! stored once, with the time it was last used. Requests hand their records to a writer
//! thread through a bounded queue (a full queue drops the record and counts it; a request
//! never waits for the disk); the writer commits in batches and keeps the store within its
//! record count, age and bytes. Reads are bounded in bytes too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use switchyard_protocol::ClusterSnapshot;

use super::record::DecisionRecord;
use crate::clock::now_ms;
use crate::policy::canary::PolicyEvent;

/// `{at_ms:016x}/{id}` -> the record as JSON.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// snapshot key -> (last used, ms since the epoch: 8 bytes little-endian) + the snapshot as JSON.
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// `{at_ms:016x}/{kind}/{policy}` -> a policy event (a canary started, rolled back...) as JSON.
const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");

/// Records waiting for the writer; more are dropped (and counted).
const QUEUE: usize = 8192;
/// How often the writer commits what it has.
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// How often the writer enforces the bounds.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("decision store {path}: {message}")]
    Open { path: String, message: String },
    #[error("decision store: {0}")]
    Db(String),
    #[error("line {line} of the import: {message}")]
    Import { line: usize, message: String },
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// `[decisions]` in the controller's config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    /// Records kept at most; the oldest go first.
    pub max_records: u64,
    /// Records older than this go.
    pub max_age: Duration,
    /// The most the records and their snapshots may take (keys and values); the oldest
    /// records go first. Checked at least every tenth of this written.
    pub max_bytes: u64,
}

/// The store's page cache in memory. redb's default (1 GiB) let the controller's memory grow
/// with the record (63 to 96 MiB over 6 minutes of the chaos run, still rising; with 4 MiB it
/// stayed at 69 MiB after the first minute); reads past it come from the operating system's
/// file cache.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// The most one query answers with, in stored bytes (about the size of its JSON).
pub const QUERY_MAX_BYTES: usize = 8 * 1024 * 1024;

/// One line of an export: a snapshot (before the first record that refers to it), a record,
/// or a policy event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportLine {
    Snapshot { key: String, snapshot: ClusterSnapshot },
    Record(Box<DecisionRecord>),
    Event(PolicyEvent),
}

/// Which records a query wants.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Arrived at or after this, ms since the epoch.
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Decided by this policy (`name@hash`, or just `name`).
    pub policy: Option<String>,
    /// Answered by this node.
    pub node: Option<String>,
    pub limit: usize,
}

/// A query's answer: the records, and whether more matched than fit in
/// [`QUERY_MAX_BYTES`] (ask again from the last one's time for the rest).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<DecisionRecord>,
    pub truncated: bool,
}

impl Query {
    fn matches(&self, record: &DecisionRecord) -> bool {
        let policy_ok = self
            .policy
            .as_deref()
            .is_none_or(|p| record.decided.policy == p || record.decided.policy.split('@').next() == Some(p));
        let node_ok = self
            .node
            .as_deref()
            .is_none_or(|n| record.outcome.node.as_deref() == Some(n));
        let until_ok = self.until_ms.is_none_or(|u| record.at_ms <= u);
        policy_ok && node_ok && until_ok
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub records_added: u64,
    /// Records already in the store (the same arrival time and id): not added twice.
    pub records_present: u64,
    pub snapshots_added: u64,
    #[serde(default)]
    pub events_added: u64,
}

enum Job {
    Record(Box<DecisionRecord>, Arc<ClusterSnapshot>),
    Event(PolicyEvent),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The store and its writer.
pub struct DecisionStore {
    db: Arc<Database>,
    path: PathBuf,
    jobs: SyncSender<Job>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
}

impl std::fmt::Debug for DecisionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionStore").field("path", &self.path).finish()
    }
}

fn key(at_ms: u64, id: &str) -> String {
    format!("{at_ms:016x}/{id}")
}

fn event_key(event: &PolicyEvent) -> String {
    format!("{:016x}/{}/{}", event.at_ms, event.kind.as_str(), event.policy)
}

fn snapshot_value(last_used_ms: u64, json: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + json.len());
    value.extend_from_slice(&last_used_ms.to_le_bytes());
    value.extend_from_slice(json);
    value
}

fn split_snapshot_value(value: &[u8]) -> (u64, &[u8]) {
    if value.len() < 8 {
        return (0, value);
    }
    let mut last = [0u8; 8];
    last.copy_from_slice(&value[..8]);
    (u64::from_le_bytes(last), &value[8..])
}

impl DecisionStore {
    /// Open (or create) the store and start its writer.
    pub fn open(options: StoreOptions) -> Result<Arc<Self>, StoreError> {
        let shown = options.path.display().to_string();
        if let Some(parent) = options.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                path: shown.clone(),
                message: format!("cannot create its folder: {e}"),
            })?;
        }
        let database = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&options.path)
            .map_err(|e| StoreError::Open {
                path: shown.clone(),
                message: format!("{e} (is another controller using it?)"),
            })?;
        let db = Arc::new(database);
        {
            let txn = db.begin_write().map_err(db_err)?;
            txn.open_table(RECORDS).map_err(db_err)?;
            txn.open_table(SNAPSHOTS).map_err(db_err)?;
            txn.open_table(EVENTS).map_err(db_err)?;
            txn.commit().map_err(db_err)?;
        }
        let (jobs, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            db: db.clone(),
            options: options.clone(),
            written: written.clone(),
            last_prune: std::time::Instant::now(),
            bytes_since_prune: 0,
        };
        std::thread::Builder::new()
            .name("decision-record".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Open {
                path: shown,
                message: format!("cannot start its writer: {e}"),
            })?;
        Ok(Arc::new(Self {
            db,
            path: options.path,
            jobs,
            dropped: AtomicU64::new(0),
            written,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hand a finished record to the writer with the snapshot it names (stored, once, if the
    /// store does not hold it yet). Never blocks: a full queue drops the record.
    pub fn submit(&self, record: DecisionRecord, snapshot: &Arc<ClusterSnapshot>) {
        let job = Job::Record(Box::new(record), snapshot.clone());
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.jobs.try_send(job) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keep a policy event (written with the next batch; never blocks).
    pub fn event(&self, event: PolicyEvent) {
        if self.jobs.try_send(Job::Event(event)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Policy events from `since_ms` (all without it), oldest first, at most `limit`.
    pub fn events(&self, since_ms: Option<u64>, limit: usize) -> Result<Vec<PolicyEvent>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(EVENTS).map_err(db)?;
        let start = format!("{:016x}", since_ms.unwrap_or(0));
        let mut out = Vec::new();
        for entry in table.range(start.as_str()..).map_err(db)?.take(limit.max(1)) {
            let (_, value) = entry.map_err(db)?;
            out.push(serde_json::from_slice(value.value()).map_err(db)?);
        }
        Ok(out)
    }

    /// Records dropped because the writer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written since the controller started.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Wait until everything submitted so far is committed.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.jobs.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Records kept now.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        txn.open_table(RECORDS).map_err(db)?.len().map_err(db)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Records matching `query`, oldest first from `since_ms`; without `since_ms`, the latest
    /// `limit` matching ones (still oldest first); never more than [`QUERY_MAX_BYTES`].
    pub fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(RECORDS).map_err(db)?;
        let limit = query.limit.max(1);
        let mut page = Page::default();
        let mut bytes = 0usize;
        let parse = |value: &[u8]| serde_json::from_slice::<DecisionRecord>(value).map_err(db);
        let entries: Box<dyn Iterator<Item = _>> = match query.since_ms {
            Some(since) => {
                let start = format!("{since:016x}");
                Box::new(table.range(start.as_str()..).map_err(db)?)
            }
            None => Box::new(table.iter().map_err(db)?.rev()),
        };
        for entry in entries {
            let (_, value) = entry.map_err(db)?;
            let record = parse(value.value())?;
            if query.since_ms.is_some() && query.until_ms.is_some_and(|u| record.at_ms > u) {
                break;
            }
            if !query.matches(&record) {
                continue;
            }
            bytes += value.value().len();
            if bytes > QUERY_MAX_BYTES && !page.records.is_empty() {
                page.truncated = true;
                break;
            }
            page.records.push(record);
            if page.records.len() >= limit {
                break;
            }
        }
        if query.since_ms.is_none() {
            page.records.reverse();
        }
        Ok(page)
    }

    /// Every record from `since_ms` (all without it) as export lines: each snapshot once,
    /// before the first record that names it. Written to `out` as NDJSON.
    pub fn export(&self, since_ms: Option<u64>, out: &mut dyn std::io::Write) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let records = txn.open_table(RECORDS).map_err(db)?;
        let snapshots = txn.open_table(SNAPSHOTS).map_err(db)?;
        let start = format!("{:016x}", since_ms.unwrap_or(0));
        let mut sent: HashMap<String, ()> = HashMap::new();
        let mut count = 0;
        for entry in records.range(start.as_str()..).map_err(db)? {
            let (_, value) = entry.map_err(db)?;
            let record: DecisionRecord = serde_json::from_slice(value.value()).map_err(db)?;
            if !sent.contains_key(&record.snapshot) {
                sent.insert(record.snapshot.clone(), ());
                if let Some(stored) = snapshots.get(record.snapshot.as_str()).map_err(db)? {
                    let (_, json) = split_snapshot_value(stored.value());
                    let snapshot: ClusterSnapshot = serde_json::from_slice(json).map_err(db)?;
                    let line = ExportLine::Snapshot {
                        key: record.snapshot.clone(),
                        snapshot,
                    };
                    writeln!(out, "{}", serde_json::to_string(&line).map_err(db)?).map_err(db)?;
                }
            }
            writeln!(
                out,
                "{}",
                serde_json::to_string(&ExportLine::Record(Box::new(record))).map_err(db)?
            )
            .map_err(db)?;
            count += 1;
        }
        let events = txn.open_table(EVENTS).map_err(db)?;
        for entry in events.range(start.as_str()..).map_err(db)? {
            let (_, value) = entry.map_err(db)?;
            let event: PolicyEvent = serde_json::from_slice(value.value()).map_err(db)?;
            writeln!(out, "{}", serde_json::to_string(&ExportLine::Event(event)).map_err(db)?).map_err(db)?;
        }
        Ok(count)
    }

    /// Add an export's lines; all or nothing. A record already present (same arrival time and
    /// id) is not added twice; a record whose snapshot is neither in the import nor the store
    /// is refused.
    pub fn import(&self, text: &str) -> Result<ImportReport, StoreError> {
        let lines = parse_export(text)?;
        let txn = self.db.begin_write().map_err(db)?;
        let mut report = ImportReport::default();
        {
            let mut records = txn.open_table(RECORDS).map_err(db)?;
            let mut snapshots = txn.open_table(SNAPSHOTS).map_err(db)?;
            let mut events = txn.open_table(EVENTS).map_err(db)?;
            for (line, entry) in &lines {
                match entry {
                    ExportLine::Event(event) => {
                        let k = event_key(event);
                        if events.get(k.as_str()).map_err(db)?.is_none() {
                            let json = serde_json::to_vec(event).map_err(db)?;
                            events.insert(k.as_str(), json.as_slice()).map_err(db)?;
                            report.events_added += 1;
                        }
                    }
                    ExportLine::Snapshot { key, snapshot } => {
                        if snapshots.get(key.as_str()).map_err(db)?.is_none() {
                            let json = serde_json::to_vec(snapshot).map_err(db)?;
                            snapshots
                                .insert(key.as_str(), snapshot_value(now_ms(), &json).as_slice())
                                .map_err(db)?;
                            report.snapshots_added += 1;
                        }
                    }
                    ExportLine::Record(record) => {
                        if snapshots.get(record.snapshot.as_str()).map_err(db)?.is_none() {
                            return Err(StoreError::Import {
                                line: *line,
                                message: format!(
                                    "record {} names snapshot {}, which is neither earlier in the import nor in the store",
                                    record.id, record.snapshot
                                ),
                            });
                        }
                        let k = key(record.at_ms, &record.id);
                        if records.get(k.as_str()).map_err(db)?.is_some() {
                            report.records_present += 1;
                            continue;
                        }
                        let json = serde_json::to_vec(record).map_err(db)?;
                        records.insert(k.as_str(), json.as_slice()).map_err(db)?;
                        report.records_added += 1;
                    }
                }
            }
        }
        txn.commit().map_err(db)?;
        Ok(report)
    }
}

fn db_err<E: std::fmt::Display>(e: E) -> StoreError {
    db(e)
}

/// Parse an export (NDJSON), naming the first bad line.
pub fn parse_export(text: &str) -> Result<Vec<(usize, ExportLine)>, StoreError> {
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: ExportLine = serde_json::from_str(line).map_err(|e| StoreError::Import {
            line: index + 1,
            message: format!("{e}; each line must be {{\"snapshot\": ...}}, {{\"record\": ...}} or {{\"event\": ...}} as `switchyard decisions export` writes them"),
        })?;
        lines.push((index + 1, entry));
    }
    Ok(lines)
}

struct Writer {
    db: Arc<Database>,
    options: StoreOptions,
    written: Arc<AtomicU64>,
    last_prune: std::time::Instant,
    /// Bytes of records written since the bounds were last enforced.
    bytes_since_prune: u64,
}

impl Writer {
    fn run(mut self, jobs: Receiver<Job>) {
        loop {
            let first = match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            let mut batch = vec![first];
            let deadline = std::time::Instant::now() + BATCH_EVERY;
            while batch.len() < 4096 {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match jobs.recv_timeout(left) {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut flushes = Vec::new();
            let mut events = Vec::new();
            let records: Vec<(Box<DecisionRecord>, Arc<ClusterSnapshot>)> = batch
                .into_iter()
                .filter_map(|job| match job {
                    Job::Record(record, snapshot) => Some((record, snapshot)),
                    Job::Event(event) => {
                        events.push(event);
                        None
                    }
                    Job::Flush(done) => {
                        flushes.push(done);
                        None
                    }
                })
                .collect();
            if let Err(e) = self.write(&records) {
                tracing::warn!("decision record: {} record(s) not written: {e}", records.len());
            }
            if let Err(e) = self.write_events(&events) {
                tracing::warn!("decision record: {} policy event(s) not written: {e}", events.len());
            }
            let bytes_due = self.bytes_since_prune > self.options.max_bytes / 10;
            if self.last_prune.elapsed() >= PRUNE_EVERY || !flushes.is_empty() || bytes_due {
                if let Err(e) = self.prune() {
                    tracing::warn!("decision record: pruning failed: {e}");
                }
                self.last_prune = std::time::Instant::now();
                self.bytes_since_prune = 0;
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    fn write(&mut self, records: &[(Box<DecisionRecord>, Arc<ClusterSnapshot>)]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(db)?;
            let mut snapshots = txn.open_table(SNAPSHOTS).map_err(db)?;
            // Each snapshot named in this batch: when it was last used.
            let mut used: HashMap<&str, u64> = HashMap::new();
            for (record, snapshot) in records {
                if !used.contains_key(record.snapshot.as_str())
                    && snapshots.get(record.snapshot.as_str()).map_err(db)?.is_none()
                {
                    let json = serde_json::to_vec(snapshot.as_ref()).map_err(db)?;
                    snapshots
                        .insert(record.snapshot.as_str(), snapshot_value(record.at_ms, &json).as_slice())
                        .map_err(db)?;
                }
                let last = used.entry(record.snapshot.as_str()).or_insert(0);
                *last = (*last).max(record.at_ms);
                let json = serde_json::to_vec(record.as_ref()).map_err(db)?;
                let k = key(record.at_ms, &record.id);
                self.bytes_since_prune += (k.len() + json.len()) as u64;
                table.insert(k.as_str(), json.as_slice()).map_err(db)?;
            }
            for (snapshot, last_used) in used {
                let current = snapshots.get(snapshot).map_err(db)?.map(|v| v.value().to_vec());
                if let Some(current) = current {
                    let (previous, json) = split_snapshot_value(&current);
                    if last_used > previous {
                        snapshots
                            .insert(snapshot, snapshot_value(last_used, json).as_slice())
                            .map_err(db)?;
                    }
                }
            }
        }
        txn.commit().map_err(db)?;
        self.written.fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write_events(&self, events: &[PolicyEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(EVENTS).map_err(db)?;
            for event in events {
                let json = serde_json::to_vec(event).map_err(db)?;
                table.insert(event_key(event).as_str(), json.as_slice()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    /// Keep at most `max_records`, none older than `max_age`, and only the snapshots that a
    /// kept record may name. Policy events are few; they go only with age.
    fn prune(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(db)?;
            let cutoff = now_ms().saturating_sub(self.options.max_age.as_millis() as u64);
            let cutoff_key = format!("{cutoff:016x}");
            let aged = aged_or_over_count(&records, &cutoff_key, self.options.max_records)?;
            remove(&mut records, &aged)?;
            // Then the bytes: the oldest go until the records and snapshots fit in nine
            // tenths of the bound (room for the next tenth before the next check).
            let snapshot_bytes = txn
                .open_table(SNAPSHOTS)
                .map_err(db)?
                .stats()
                .map_err(db)?
                .stored_bytes();
            let over = over_bytes(&records, snapshot_bytes, self.options.max_bytes)?;
            if !over.is_empty() {
                tracing::info!(
                    "decision record: {} oldest record(s) dropped to stay within {} bytes",
                    over.len(),
                    self.options.max_bytes
                );
                remove(&mut records, &over)?;
            }
            let mut events = txn.open_table(EVENTS).map_err(db)?;
            let old_events = keys_in(events.range(..cutoff_key.as_str()).map_err(db)?)?;
            remove(&mut events, &old_events)?;
            let oldest_kept = match records.first().map_err(db)? {
                Some((_, value)) => serde_json::from_slice::<DecisionRecord>(value.value())
                    .map(|r| r.at_ms)
                    .unwrap_or(0),
                None => u64::MAX,
            };
            let mut snapshots = txn.open_table(SNAPSHOTS).map_err(db)?;
            let mut stale: Vec<String> = Vec::new();
            for entry in snapshots.iter().map_err(db)? {
                let (k, value) = entry.map_err(db)?;
                if split_snapshot_value(value.value()).0 < oldest_kept {
                    stale.push(k.value().to_owned());
                }
            }
            remove(&mut snapshots, &stale)?;
        }
        txn.commit().map_err(db)
    }
}

type Keyed<'a> = redb::Range<'a, &'static str, &'static [u8]>;

/// The keys of `range`.
fn keys_in(range: Keyed<'_>) -> Result<Vec<String>, StoreError> {
    range
        .map(|entry| entry.map(|(k, _)| k.value().to_owned()).map_err(db))
        .collect()
}

/// Remove `keys` from `table`.
fn remove(table: &mut redb::Table<'_, &'static str, &'static [u8]>, keys: &[String]) -> Result<(), StoreError> {
    for k in keys {
        table.remove(k.as_str()).map_err(db)?;
    }
    Ok(())
}

/// Records older than `cutoff_key`, then the oldest of the rest beyond `max_records`.
fn aged_or_over_count(
    records: &redb::Table<'_, &'static str, &'static [u8]>,
    cutoff_key: &str,
    max_records: u64,
) -> Result<Vec<String>, StoreError> {
    let mut old = keys_in(records.range(..cutoff_key).map_err(db)?)?;
    let over = records
        .len()
        .map_err(db)?
        .saturating_sub(old.len() as u64)
        .saturating_sub(max_records);
    if over > 0 {
        let range = match old.last() {
            Some(after) => {
                records.range::<&str>((std::ops::Bound::Excluded(after.as_str()), std::ops::Bound::Unbounded))
            }
            None => records.range::<&str>(..),
        }
        .map_err(db)?;
        for entry in range.take(over as usize) {
            old.push(entry.map_err(db)?.0.value().to_owned());
        }
    }
    Ok(old)
}

/// The oldest records to drop so that they and the snapshots (`snapshot_bytes`) fit in nine
/// tenths of `max_bytes`; none while they fit in `max_bytes`.
fn over_bytes(
    records: &redb::Table<'_, &'static str, &'static [u8]>,
    snapshot_bytes: u64,
    max_bytes: u64,
) -> Result<Vec<String>, StoreError> {
    let stored = records.stats().map_err(db)?.stored_bytes() + snapshot_bytes;
    if stored <= max_bytes {
        return Ok(Vec::new());
    }
    let mut excess = stored - max_bytes / 10 * 9;
    let mut over = Vec::new();
    for entry in records.iter().map_err(db)? {
        if excess == 0 {
            break;
        }
        let (k, value) = entry.map_err(db)?;
        excess = excess.saturating_sub((k.value().len() + value.value().len()) as u64);
        over.push(k.value().to_owned());
    }
    Ok(over)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::{Outcome, RecordedDecision};
    use switchyard_protocol::{Decision, Reject, RequestInfo};

    fn record(id: &str, at_ms: u64, node: &str) -> DecisionRecord {
        let mut request = RequestInfo::for_model("m");
        request.id = id.to_owned();
        DecisionRecord {
            id: id.to_owned(),
            at_ms,
            request,
            snapshot: "boot-1".to_owned(),
            in_flight: Vec::new(),
            decided: RecordedDecision {
                policy: "p@1".to_owned(),
                decision: Decision::Reject(Reject {
                    status: 503,
                    message: "x".to_owned(),
                }),
                fault: None,
                fallback: false,
                canary: false,
            },
            outcome: Outcome {
                node: Some(node.to_owned()),
                status: 200,
                ..Outcome::default()
            },
        }
    }

    fn open(dir: &Path, max_records: u64) -> Arc<DecisionStore> {
        open_bounded(dir, max_records, 1 << 30)
    }

    fn open_bounded(dir: &Path, max_records: u64, max_bytes: u64) -> Arc<DecisionStore> {
        DecisionStore::open(StoreOptions {
            path: dir.join("d.redb"),
            max_records,
            max_age: Duration::from_secs(3600),
            max_bytes,
        })
        .expect("opens")
    }

    #[test]
    fn records_are_kept_in_time_order_queried_exported_and_imported_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 100);
        let snapshot = Arc::new(ClusterSnapshot::default());
        let now = now_ms();
        for i in 0..10 {
            store.submit(
                record(
                    &format!("req-{i}"),
                    now - 10_000 + i * 100,
                    if i % 2 == 0 { "a" } else { "b" },
                ),
                &snapshot,
            );
        }
        store.flush();
        assert_eq!(store.len().expect("len"), 10);
        let latest = store
            .query(&Query {
                limit: 3,
                ..Query::default()
            })
            .expect("query")
            .records;
        let ids: Vec<_> = latest.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["req-7", "req-8", "req-9"]);
        let on_a = store
            .query(&Query {
                since_ms: Some(now - 10_000),
                node: Some("a".to_owned()),
                limit: 100,
                ..Query::default()
            })
            .expect("query")
            .records;
        assert_eq!(on_a.len(), 5);
        let by_name = store
            .query(&Query {
                policy: Some("p".to_owned()),
                limit: 100,
                ..Query::default()
            })
            .expect("query")
            .records;
        assert_eq!(by_name.len(), 10);

        let mut export = Vec::new();
        assert_eq!(store.export(None, &mut export).expect("export"), 10);
        let text = String::from_utf8(export).expect("utf-8");
        assert_eq!(text.lines().count(), 11, "one snapshot, ten records:\n{text}");

        let other = tempfile::tempdir().expect("tempdir");
        let elsewhere = open(other.path(), 100);
        let first = elsewhere.import(&text).expect("imports");
        assert_eq!((first.records_added, first.snapshots_added), (10, 1));
        let second = elsewhere.import(&text).expect("imports again");
        assert_eq!((second.records_added, second.records_present), (0, 10));
        assert_eq!(elsewhere.len().expect("len"), 10);
    }

    #[test]
    fn a_bad_import_names_its_line_and_adds_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 100);
        let good = serde_json::to_string(&ExportLine::Snapshot {
            key: "k".to_owned(),
            snapshot: ClusterSnapshot::default(),
        })
        .expect("json");
        let error = store
            .import(&format!("{good}\n{{\"record\": 7}}\n"))
            .expect_err("refused");
        assert!(error.to_string().starts_with("line 2 of the import:"), "{error}");
        assert!(store.is_empty().expect("len"));
        // A record naming a snapshot that is nowhere is refused too.
        let orphan = serde_json::to_string(&ExportLine::Record(Box::new(record("r", 1, "a")))).expect("json");
        let error = store.import(&orphan).expect_err("refused");
        assert!(error.to_string().contains("names snapshot boot-1"), "{error}");
    }

    #[test]
    fn the_store_keeps_at_most_its_bound_and_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 5);
        let snapshot = Arc::new(ClusterSnapshot::default());
        let now = now_ms();
        // Two older than the hour the store keeps, then eight recent ones.
        store.submit(record("old-1", now - 7_200_000, "a"), &snapshot);
        store.submit(record("old-2", now - 7_100_000, "a"), &snapshot);
        for i in 0..8 {
            store.submit(record(&format!("new-{i}"), now - 1000 + i, "a"), &snapshot);
        }
        store.flush();
        let kept = store
            .query(&Query {
                limit: 100,
                ..Query::default()
            })
            .expect("query")
            .records;
        let ids: Vec<_> = kept.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["new-3", "new-4", "new-5", "new-6", "new-7"]);
    }

    #[test]
    fn the_store_stays_within_its_bytes_and_a_query_within_its_answer_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max_bytes = 4 * 1024 * 1024;
        let store = open_bounded(dir.path(), 1_000_000, max_bytes);
        let snapshot = Arc::new(ClusterSnapshot::default());
        let now = now_ms();
        // 16,000 records of about 2 KiB each: 32 MiB offered to a 4 MiB store.
        let bulky = "x".repeat(2000);
        for i in 0..16_000u64 {
            let mut r = record(&format!("req-{i}"), now - 100_000 + i, "a");
            r.request.task = Some(bulky.clone());
            store.submit(r, &snapshot);
            if i % 200 == 199 {
                store.flush();
            }
        }
        store.flush();
        let kept = store.len().expect("len");
        assert!(kept > 100, "a bounded store still keeps the newest records: {kept}");
        assert!(
            kept * 2000 <= max_bytes,
            "{kept} records of 2 KiB exceed {max_bytes} bytes"
        );
        let newest = store
            .query(&Query {
                limit: 1,
                ..Query::default()
            })
            .expect("query")
            .records;
        assert_eq!(newest[0].id, "req-15999", "the oldest go first");
        let file = std::fs::metadata(dir.path().join("d.redb")).expect("file").len();
        // The database reuses freed pages: its file settles at about twice the bound plus a
        // fixed few MiB (measured: 17 MiB at 4 MiB, whether 32 or 64 MiB were offered; 33 MiB
        // at 16 MiB), not at what was offered.
        assert!(file < 5 * max_bytes, "the file grew to {file} bytes");

        // A query answers at most QUERY_MAX_BYTES and says it stopped short.
        let wide = tempfile::tempdir().expect("tempdir");
        let store = open(wide.path(), 1_000_000);
        let huge = "y".repeat(64 * 1024);
        for i in 0..200u64 {
            let mut r = record(&format!("big-{i}"), now - 10_000 + i, "a");
            r.request.task = Some(huge.clone());
            store.submit(r, &snapshot);
        }
        store.flush();
        let page = store
            .query(&Query {
                limit: 10_000,
                ..Query::default()
            })
            .expect("query");
        assert!(page.truncated);
        let answered: usize = page.records.len() * huge.len();
        assert!(answered <= QUERY_MAX_BYTES, "{answered}");
        assert!(page.records.len() >= 100, "{}", page.records.len());
        assert_eq!(page.records.last().map(|r| r.id.as_str()), Some("big-199"));
    }
}
