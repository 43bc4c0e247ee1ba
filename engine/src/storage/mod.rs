//! Durable state of one node in embedded RocksDB, and the in-memory slots that hold the
//! keys the node works on.
//!
//! Column families:
//! * `log`: epoch number (u64, big-endian) to the epoch's record: every value it changed
//!   and every tracked request's outcome ([`EpochRecord`]);
//! * `data`: table id (u32, big-endian) followed by the key, to the value, as of the last
//!   checkpoint;
//! * `results`: request id to the encoded [`Outcome`], as of the last checkpoint;
//! * `sessions`: client session number (u64, big-endian) to what the session keeps
//!   ([`StoredSession`]: acknowledgement and unacknowledged outcomes), as of the last
//!   checkpoint; a session is put here, synced, when it is opened;
//! * `meta`: node metadata: the durable and checkpointed epochs, table id assignments;
//! * `plugins`: plugin name to the library bytes of its deployed version.
//!
//! An epoch becomes durable as one put of its record into `log` (one `WriteBatch` with
//! the epoch marker), so an epoch is either entirely on disk or not at all, and the
//! commit path costs one memtable insert per epoch instead of one per changed key.
//! Checkpoints fold the logged epochs into `data`, `results` and `sessions` (the newest
//! value of each key once, in key order) and delete those log records in the same batch.
//! Opening the database folds whatever the log still holds, so the tables are complete
//! before the node serves anything.

pub mod codec;
pub(crate) mod key_index;
pub mod slots;

use crate::model::{Outcome, RequestId};
use crate::txn::sessions::StoredSession;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};

pub use slots::{Slot, SlotStore};

const CF_LOG: &str = "log";
const CF_DATA: &str = "data";
const CF_RESULTS: &str = "results";
const CF_META: &str = "meta";
const CF_PLUGINS: &str = "plugins";
const CF_SESSIONS: &str = "sessions";

const META_DURABLE_EPOCH: &[u8] = b"durable_epoch";
const META_CHECKPOINT_EPOCH: &[u8] = b"checkpoint_epoch";
const META_INCARNATION: &[u8] = b"incarnation";
const META_SESSIONS_OPENED: &[u8] = b"sessions_opened";
/// The table id of request-id keys: in a cluster, the outcome of every tracked request
/// is stored like any other key at the request id's holder. Plugin tables never get id 0.
pub const REQUEST_ID_TABLE: u32 = leasehold_keyspace::REQUEST_ID_TABLE_ID;

/// Whether a storage key is a request-id key.
pub fn is_request_id_key(storage_key: &[u8]) -> bool {
    storage_key.starts_with(&REQUEST_ID_TABLE.to_be_bytes())
}

/// Drops a stored outcome recorded longer than `retention_seconds` ago; keeps a value that
/// does not even carry its time, for an operator to look at.
fn retention_decision(stored_outcome: &[u8], retention_seconds: u64) -> rocksdb::CompactionDecision {
    match codec::stored_result_recorded_at(stored_outcome) {
        Some(recorded) if recorded.saturating_add(retention_seconds) < unix_seconds_now() => {
            rocksdb::CompactionDecision::Remove
        }
        _ => rocksdb::CompactionDecision::Keep,
    }
}
const META_TABLE_OWNER_PREFIX: &[u8] = b"table-id/";
const META_TABLE_PREFIX: &[u8] = b"table/";

/// Storage failures. They are operating errors (disk full, corruption, permissions).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open RocksDB at {path}: {source}")]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error("RocksDB failed: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt {what} in storage")]
    Corrupt { what: &'static str },
    #[error("table {table} hashes to the same id as table {other}; rename one of them")]
    TableIdCollision { table: String, other: String },
}

/// The id of a new table: FNV-1a of "plugin/table", with the top bit clear (ids of
/// tables created by counter before are small numbers, so they do not collide).
fn table_id_of(plugin: &str, table: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in plugin.as_bytes().iter().chain(b"/").chain(table.as_bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash & 0x7fff_ffff).max(1)
}

/// The node's RocksDB database.
pub struct Storage {
    db: DB,
    /// Serializes [`Storage::open_session`]'s read and increment of the session count.
    session_count: parking_lot::Mutex<()>,
}

/// The changes of one epoch, made durable atomically by [`Storage::write_epoch`].
pub struct EpochRecord {
    pub epoch: u64,
    bytes: Vec<u8>,
}

impl EpochRecord {
    pub fn new(epoch: u64) -> EpochRecord {
        EpochRecord { epoch, bytes: Vec::new() }
    }

    /// Records a changed value (or a deletion, for `None`).
    pub fn stage_value(&mut self, storage_key: &[u8], value: Option<&[u8]>) {
        codec::encode_log_value(&mut self.bytes, storage_key, value);
    }

    /// Records a tracked request's outcome, stamped with the current wall-clock second
    /// (results are kept for the configured retention after it).
    pub fn stage_result(&mut self, id: &RequestId, outcome: &Outcome, scratch: &mut Vec<u8>) {
        codec::encode_stored_result_into(scratch, outcome, unix_seconds_now());
        match id {
            RequestId::Untracked => panic!("only tracked requests have their outcome logged"),
            RequestId::Id(bytes) => codec::encode_log_result(&mut self.bytes, bytes, scratch),
            RequestId::Session(position) => codec::encode_log_session_result(&mut self.bytes, position, scratch),
        }
    }

    /// Size of the encoded record.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_seconds_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// Tunables of the storage layer.
#[derive(Clone, Copy, Debug)]
pub struct StorageOptions {
    /// How long the outcome of a request id is kept for retries. Older outcomes are
    /// dropped when RocksDB compacts them, so a retry after this may run again.
    pub result_retention: std::time::Duration,
    /// Fold the log into the tables when opening. A cluster node leaves the log alone
    /// until the cluster agreed which epochs are durable everywhere
    /// ([`Storage::rollback_to`] folds then).
    pub fold_log_on_open: bool,
}

impl Default for StorageOptions {
    fn default() -> StorageOptions {
        StorageOptions { result_retention: std::time::Duration::from_secs(7 * 24 * 3600), fold_log_on_open: true }
    }
}

/// Builds the storage key of `key` in table `table_id`, reusing `buffer`. The rule is
/// `leasehold-keyspace`'s, which routing clients share.
pub fn data_key_into(buffer: &mut Vec<u8>, table_id: u32, key: &[u8]) {
    leasehold_keyspace::storage_key_into(buffer, table_id, key);
}

/// Appends the storage key of `key` in table `table_id` to `buffer`, which may hold
/// others before it.
pub fn data_key_append(buffer: &mut Vec<u8>, table_id: u32, key: &[u8]) {
    leasehold_keyspace::storage_key_append(buffer, table_id, key);
}

/// A key of `data` and its value.
pub type StoredEntry = (Vec<u8>, Vec<u8>);

impl Storage {
    /// Opens (creating if needed) the database under `path` with default options.
    pub fn open(path: &Path) -> Result<Storage, StorageError> {
        Storage::open_with(path, StorageOptions::default())
    }

    /// Opens (creating if needed) the database under `path`.
    pub fn open_with(path: &Path, storage_options: StorageOptions) -> Result<Storage, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.increase_parallelism(2);
        // One thread (the commit thread) writes; the concurrent memtable insert path only
        // costs it atomic operations.
        options.set_allow_concurrent_memtable_write(false);
        // Checkpoints are written without the write-ahead log (see `checkpoint`); flushing
        // every family's memtable in one atomic step keeps the deletion of folded log
        // records from reaching disk before the folded values do.
        options.set_atomic_flush(true);
        // Flushes and compactions write their files with a sync every megabyte instead of
        // leaving the whole file dirty until it is closed: a burst of tens of megabytes of
        // dirty pages otherwise lands on the disk together and holds up the write-ahead
        // log's fsync that an epoch is waiting for (RocksDB's tuning guide recommends it).
        // Measured at 100k transactions/s open loop with an fsync per epoch (alternating
        // runs, benches/RESULTS.md): the worst p99 of eight runs fell from 64 to 25 ms.
        options.set_bytes_per_sync(1 << 20);
        // Compactions run at the lowest CPU priority: on a node whose cores are busy with
        // transactions, a compaction burst otherwise takes a core for a second and the
        // epochs queued behind it are the latency tail (measured: p99 at 100k/s about
        // halved, see benches/RESULTS.md). They still run whenever the foreground waits
        // (for an fsync, for requests), and if they fell behind, RocksDB's own write
        // slowdown would give them the time. Flushes keep their priority: a memtable that
        // cannot flush stops writes at once.
        let mut env = rocksdb::Env::new().map_err(|source| StorageError::Open { path: path.into(), source })?;
        env.lower_thread_pool_cpu_priority();
        options.set_env(&env);
        let mut data_options = Options::default();
        data_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Point lookups dominate (key loads, result lookups for new request ids), so a
        // bloom filter on whole keys saves most disk reads of misses.
        let mut table_options = rocksdb::BlockBasedOptions::default();
        table_options.set_bloom_filter(10.0, false);
        data_options.set_block_based_table_factory(&table_options);
        let retention_seconds = storage_options.result_retention.as_secs();
        // Every new request id is looked up before it runs and is almost never found: a
        // memtable bloom filter answers those misses without searching the skip list.
        data_options.set_memtable_whole_key_filtering(true);
        data_options.set_memtable_prefix_bloom_ratio(0.05);
        let mut sessions_options = Options::default();
        sessions_options
            .set_compaction_filter("leasehold-session-retention", move |_level: u32, _key: &[u8], value: &[u8]| {
                retention_decision(value, retention_seconds)
            });
        let mut results_options = data_options.clone();
        // Expired outcomes are dropped as compaction passes over them.
        results_options
            .set_compaction_filter("leasehold-result-retention", move |_level: u32, _key: &[u8], value: &[u8]| {
                retention_decision(value, retention_seconds)
            });
        // In a cluster, request outcomes are keys of table 0 in `data`; they expire the
        // same way. Table 0 is never a plugin table, so nothing else matches.
        data_options.set_compaction_filter(
            "leasehold-request-id-retention",
            move |_level: u32, key: &[u8], value: &[u8]| {
                if is_request_id_key(key) {
                    retention_decision(value, retention_seconds)
                } else {
                    rocksdb::CompactionDecision::Keep
                }
            },
        );
        let families = vec![
            ColumnFamilyDescriptor::new(CF_LOG, Options::default()),
            ColumnFamilyDescriptor::new(CF_DATA, data_options),
            ColumnFamilyDescriptor::new(CF_RESULTS, results_options),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_PLUGINS, Options::default()),
            ColumnFamilyDescriptor::new(CF_SESSIONS, sessions_options),
        ];
        let db = DB::open_cf_descriptors(&options, path, families)
            .map_err(|source| StorageError::Open { path: path.into(), source })?;
        let storage = Storage { db, session_count: parking_lot::Mutex::new(()) };
        if storage_options.fold_log_on_open {
            storage.recover()?;
        }
        Ok(storage)
    }

    /// Folds every epoch record still in the log into the tables.
    fn recover(&self) -> Result<(), StorageError> {
        let mut records = Vec::new();
        for entry in self.db.iterator_cf(self.cf(CF_LOG), rocksdb::IteratorMode::Start) {
            let (key, bytes) = entry?;
            let epoch = codec::decode_u64(&key).ok_or(StorageError::Corrupt { what: "log key" })?;
            records.push(EpochRecord { epoch, bytes: bytes.to_vec() });
        }
        if !records.is_empty() {
            tracing::info!(epochs = records.len(), "folding logged epochs into the tables");
            self.checkpoint(&records)?;
        }
        Ok(())
    }

    fn cf(&self, name: &'static str) -> &ColumnFamily {
        // The families are created in `open`, so their absence is a programming error.
        self.db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} missing"))
    }

    /// The newest epoch whose batch is on disk (0 when none).
    pub fn durable_epoch(&self) -> Result<u64, StorageError> {
        self.meta_number(META_DURABLE_EPOCH, "durable epoch")
    }

    /// A number kept under `key` in `meta` (0 when absent); `what` names it when corrupt.
    fn meta_number(&self, key: &[u8], what: &'static str) -> Result<u64, StorageError> {
        match self.db.get_cf(self.cf(CF_META), key)? {
            None => Ok(0),
            Some(bytes) => codec::decode_u64(&bytes).ok_or(StorageError::Corrupt { what }),
        }
    }

    /// Counts this start of the node (durably) and returns the count: a cluster node's
    /// incarnation, which tells its peers that it restarted.
    pub fn next_incarnation(&self) -> Result<u32, StorageError> {
        let meta = self.cf(CF_META);
        let current = self.meta_number(META_INCARNATION, "incarnation")?;
        let next = u32::try_from(current + 1).map_err(|_| StorageError::Corrupt { what: "incarnation" })?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.put_cf_opt(meta, META_INCARNATION, u64::from(next).to_be_bytes(), &options)?;
        Ok(next)
    }

    /// The newest epoch folded into the tables (0 when none).
    pub fn checkpoint_epoch(&self) -> Result<u64, StorageError> {
        self.meta_number(META_CHECKPOINT_EPOCH, "checkpoint epoch")
    }

    /// Undoes every logged epoch after `agreed` (a cluster agreed that they were not
    /// durable on every node) and folds the rest of the log into the tables. The epochs
    /// after the last checkpoint are only in the log, so undoing one is deleting its
    /// record.
    pub fn rollback_to(&self, agreed: u64) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG), (agreed + 1).to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(self.cf(CF_LOG), u64::MAX.to_be_bytes());
        batch.put_cf(self.cf(CF_META), META_DURABLE_EPOCH, agreed.to_be_bytes());
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        self.recover()
    }

    /// Reads the values of several storage keys (see [`data_key_into`]) at once.
    pub fn read_values(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let cf = self.cf(CF_DATA);
        self.db
            .batched_multi_get_cf(cf, keys, false)
            .into_iter()
            .map(|result| result.map(|value| value.map(|slice| slice.to_vec())).map_err(StorageError::from))
            .collect()
    }

    /// Completes a batched lookup of resident keys: `found` holds one entry per key of
    /// `keys`, in order (`None`: not resident). The keys it missed are read from `data` in
    /// one batched read, each once, made resident with `make_resident`, and filled in;
    /// returns every key's target in order. The epoch driver, the cluster driver and the
    /// baselines' dispatcher each resolve an epoch's keys this way over their own store.
    pub(crate) fn load_missing<'k, V: Copy>(
        &self,
        keys: impl Iterator<Item = &'k [u8]> + Clone,
        found: Vec<Option<V>>,
        mut make_resident: impl FnMut(&[u8], Option<Vec<u8>>) -> V,
    ) -> Result<Vec<V>, StorageError> {
        let mut missing: Vec<&'k [u8]> =
            keys.clone().zip(&found).filter(|(_, found)| found.is_none()).map(|(key, _)| key).collect();
        let mut loaded: Vec<(&'k [u8], V)> = Vec::new();
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            let values = self.read_values(&missing)?;
            loaded = missing.into_iter().zip(values).map(|(key, value)| (key, make_resident(key, value))).collect();
        }
        Ok(found
            .into_iter()
            .zip(keys)
            .map(|(found, key)| {
                found.unwrap_or_else(|| {
                    // `loaded` is in key order: the misses were sorted before the read.
                    let at = loaded.binary_search_by(|(loaded_key, _)| (*loaded_key).cmp(key));
                    loaded[at.expect("every missed key was loaded")].1
                })
            })
            .collect())
    }

    /// Every key of `data` that starts with `prefix`, with its value, in key order.
    pub fn scan_values(&self, prefix: &[u8]) -> Result<Vec<StoredEntry>, StorageError> {
        let mode = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        let mut found = Vec::new();
        for entry in self.db.iterator_cf(self.cf(CF_DATA), mode) {
            let (key, value) = entry?;
            if !key.starts_with(prefix) {
                break;
            }
            found.push((key.to_vec(), value.to_vec()));
        }
        Ok(found)
    }

    /// Looks up the durable outcomes of several request ids at once.
    pub fn read_results(&self, ids: &[&RequestId]) -> Result<Vec<Option<Outcome>>, StorageError> {
        let cf = self.cf(CF_RESULTS);
        let keys: Vec<&[u8]> = ids.iter().map(|id| id.id_bytes()).collect();
        self.db
            .batched_multi_get_cf(cf, &keys, false)
            .into_iter()
            .map(|result| match result? {
                None => Ok(None),
                Some(bytes) => codec::decode_stored_result(&bytes)
                    .map(Some)
                    .ok_or(StorageError::Corrupt { what: "request result" }),
            })
            .collect()
    }

    /// Makes an epoch durable: its record and the epoch marker in one atomic write. With
    /// `sync` the write-ahead log is fsynced before this returns (and with it every
    /// earlier unsynced write).
    pub fn write_epoch(&self, record: &EpochRecord, sync: bool) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_LOG), record.epoch.to_be_bytes(), &record.bytes);
        batch.put_cf(self.cf(CF_META), META_DURABLE_EPOCH, record.epoch.to_be_bytes());
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// Folds durable epoch records (in epoch order) into `data`, `results` and `sessions`,
    /// then marks them checkpointed and deletes them from the log. Keys changed in several
    /// epochs are written once, with their newest value, in key order.
    ///
    /// Nothing of a checkpoint goes through the write-ahead log: the log records are the
    /// checkpoint's write-ahead log. Until a memtable flush persists the fold, a crash
    /// loses the fold and the deletion of the records together (the database flushes
    /// every family in one atomic step), so the next open folds the same records again
    /// and gets the same tables. This keeps about a hundred thousand result and value
    /// writes per second out of the write-ahead log that every epoch's fsync must flush.
    ///
    /// The fold is written in chunks so that epoch commits running at the same time never
    /// wait behind one huge memtable insert. That is safe for the same reason: until the
    /// final write deletes the records, a crash leaves them in the log.
    pub fn checkpoint(&self, records: &[EpochRecord]) -> Result<(), StorageError> {
        const CHUNK_ENTRIES: usize = 4096;
        let Some(newest) = records.last() else { return Ok(()) };
        let mut values: rustc_hash::FxHashMap<&[u8], Option<&[u8]>> = rustc_hash::FxHashMap::default();
        let mut results: Vec<(&[u8], &[u8])> = Vec::new();
        let mut session_results: Vec<(crate::model::SessionPosition, &[u8])> = Vec::new();
        for record in records {
            for entry in codec::LogEntries::new(&record.bytes) {
                match entry.ok_or(StorageError::Corrupt { what: "epoch record" })? {
                    codec::LogEntry::Value { key, value } => {
                        values.insert(key, value);
                    }
                    codec::LogEntry::Result { id, outcome } => results.push((id, outcome)),
                    codec::LogEntry::SessionResult { position, stored_result } => {
                        session_results.push((position, stored_result))
                    }
                }
            }
        }
        let sessions = self.fold_sessions(&session_results)?;
        let mut values: Vec<(&[u8], Option<&[u8]>)> = values.into_iter().collect();
        values.sort_unstable_by(|a, b| a.0.cmp(b.0));
        results.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut unlogged = WriteOptions::default();
        unlogged.disable_wal(true);
        let (data, result_family) = (self.cf(CF_DATA), self.cf(CF_RESULTS));
        for chunk in values.chunks(CHUNK_ENTRIES) {
            let mut batch = WriteBatch::default();
            for (key, value) in chunk {
                match value {
                    Some(value) => batch.put_cf(data, key, value),
                    None => batch.delete_cf(data, key),
                }
            }
            self.db.write_opt(batch, &unlogged)?;
        }
        for chunk in results.chunks(CHUNK_ENTRIES) {
            let mut batch = WriteBatch::default();
            for (id, outcome) in chunk {
                batch.put_cf(result_family, id, outcome);
            }
            self.db.write_opt(batch, &unlogged)?;
        }
        for chunk in sessions.chunks(CHUNK_ENTRIES) {
            let mut batch = WriteBatch::default();
            for session in chunk {
                batch.put_cf(
                    self.cf(CF_SESSIONS),
                    session.session.to_be_bytes(),
                    codec::encode_stored_session(session),
                );
            }
            self.db.write_opt(batch, &unlogged)?;
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), META_CHECKPOINT_EPOCH, newest.epoch.to_be_bytes());
        batch.delete_range_cf(self.cf(CF_LOG), 0u64.to_be_bytes(), (newest.epoch + 1).to_be_bytes());
        self.db.write_opt(batch, &unlogged)?;
        Ok(())
    }

    /// The sessions that `session_results` (logged outcomes of session requests, in epoch
    /// order) change, as stored after them: each session's newest acknowledgement and the
    /// outcomes from it on. Outcomes the client acknowledged meanwhile are not even
    /// decoded; with clients acknowledging as they go, that is most of them.
    fn fold_sessions(
        &self,
        session_results: &[(crate::model::SessionPosition, &[u8])],
    ) -> Result<Vec<StoredSession>, StorageError> {
        if session_results.is_empty() {
            return Ok(Vec::new());
        }
        // Per session: the newest acknowledgement and last use among the records.
        let mut touched: std::collections::BTreeMap<u64, (u64, u64)> = std::collections::BTreeMap::new();
        for (position, stored_result) in session_results {
            let recorded = codec::stored_result_recorded_at(stored_result)
                .ok_or(StorageError::Corrupt { what: "session result" })?;
            let acknowledged = position.first_unanswered.min(position.sequence);
            let (first_unanswered, last_used) = touched.entry(position.session).or_insert((1, 0));
            *first_unanswered = (*first_unanswered).max(acknowledged);
            *last_used = (*last_used).max(recorded);
        }
        let keys: Vec<[u8; 8]> = touched.keys().map(|session| session.to_be_bytes()).collect();
        let stored = self.db.batched_multi_get_cf(self.cf(CF_SESSIONS), &keys, true);
        // In session order, as the checkpoint writes them.
        let mut sessions: std::collections::BTreeMap<u64, StoredSession> = std::collections::BTreeMap::new();
        for ((&session, &(first_unanswered, last_used)), stored) in touched.iter().zip(stored) {
            let mut folded = match stored? {
                Some(bytes) => codec::decode_stored_session(session, &bytes)
                    .ok_or(StorageError::Corrupt { what: "stored session" })?,
                // Dropped by retention while the node still had it open: it lives on.
                None => StoredSession { session, first_unanswered: 1, last_used_unix_seconds: 0, outcomes: Vec::new() },
            };
            folded.first_unanswered = folded.first_unanswered.max(first_unanswered);
            folded.last_used_unix_seconds = folded.last_used_unix_seconds.max(last_used);
            let first_unanswered = folded.first_unanswered;
            folded.outcomes.retain(|(sequence, _)| *sequence >= first_unanswered);
            sessions.insert(session, folded);
        }
        for (position, stored_result) in session_results {
            let session = sessions.get_mut(&position.session).expect("every touched session was folded above");
            if position.sequence < session.first_unanswered {
                continue;
            }
            let outcome =
                codec::decode_stored_result(stored_result).ok_or(StorageError::Corrupt { what: "session result" })?;
            session.outcomes.push((position.sequence, outcome));
        }
        let mut sessions: Vec<StoredSession> = sessions.into_values().collect();
        for session in &mut sessions {
            // A sequence number has one durable outcome; keep the newest should a record
            // repeat it.
            session.outcomes.reverse();
            session.outcomes.sort_by_key(|(sequence, _)| *sequence);
            session.outcomes.dedup_by_key(|(sequence, _)| *sequence);
        }
        Ok(sessions)
    }

    /// Opens a new client session, durably (synced), and returns its number: a count of
    /// the sessions this node ever opened, times `node_count`, plus `node`, so that no two
    /// nodes of a cluster and no two starts of a node give out the same number. Never 0.
    pub fn open_session(&self, node: u16, node_count: u16, now_unix_seconds: u64) -> Result<u64, StorageError> {
        let meta = self.cf(CF_META);
        let _counting = self.session_count.lock();
        let count = self.meta_number(META_SESSIONS_OPENED, "session count")? + 1;
        let session = count
            .checked_mul(u64::from(node_count.max(1)))
            .and_then(|number| number.checked_add(u64::from(node)))
            .ok_or(StorageError::Corrupt { what: "session count" })?;
        let stored = StoredSession {
            session,
            first_unanswered: 1,
            last_used_unix_seconds: now_unix_seconds,
            outcomes: Vec::new(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, META_SESSIONS_OPENED, count.to_be_bytes());
        batch.put_cf(self.cf(CF_SESSIONS), session.to_be_bytes(), codec::encode_stored_session(&stored));
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(session)
    }

    /// Every stored session (after the log was folded: complete).
    pub fn stored_sessions(&self) -> Result<Vec<StoredSession>, StorageError> {
        let mut sessions = Vec::new();
        for entry in self.db.iterator_cf(self.cf(CF_SESSIONS), rocksdb::IteratorMode::Start) {
            let (key, bytes) = entry?;
            let session = codec::decode_u64(&key).ok_or(StorageError::Corrupt { what: "session key" })?;
            sessions.push(
                codec::decode_stored_session(session, &bytes)
                    .ok_or(StorageError::Corrupt { what: "stored session" })?,
            );
        }
        Ok(sessions)
    }

    /// The id of table `table` of plugin `plugin`, assigned on first use and kept forever,
    /// so that a redeployed plugin finds its data again.
    pub fn table_id(&self, plugin: &str, table: &str) -> Result<u32, StorageError> {
        let meta = self.cf(CF_META);
        let mut name = META_TABLE_PREFIX.to_vec();
        name.extend_from_slice(plugin.as_bytes());
        name.push(b'/');
        name.extend_from_slice(table.as_bytes());
        if let Some(bytes) = self.db.get_cf(meta, &name)? {
            let id = codec::decode_u64(&bytes).ok_or(StorageError::Corrupt { what: "table id" })?;
            return u32::try_from(id).map_err(|_| StorageError::Corrupt { what: "table id" });
        }
        // Every node of a cluster must give a table the same id (keys travel between nodes
        // as storage keys), so new ids derive from the names rather than from a counter.
        let id = table_id_of(plugin, table);
        let owner_key = [META_TABLE_OWNER_PREFIX, &id.to_be_bytes()[..]].concat();
        if let Some(owner) = self.db.get_cf(meta, &owner_key)? {
            if owner != name[META_TABLE_PREFIX.len()..] {
                return Err(StorageError::TableIdCollision {
                    table: format!("{plugin}/{table}"),
                    other: String::from_utf8_lossy(&owner).into_owned(),
                });
            }
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, &name, u64::from(id).to_be_bytes());
        batch.put_cf(meta, &owner_key, &name[META_TABLE_PREFIX.len()..]);
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(id)
    }

    /// Records `library` as the deployed version of `plugin` (durably).
    pub fn store_plugin(&self, plugin: &str, library: &[u8]) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.put_cf_opt(self.cf(CF_PLUGINS), plugin.as_bytes(), library, &options)?;
        Ok(())
    }

    /// Every deployed plugin: name and library bytes.
    pub fn stored_plugins(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut plugins = Vec::new();
        for entry in self.db.iterator_cf(self.cf(CF_PLUGINS), rocksdb::IteratorMode::Start) {
            let (name, library) = entry?;
            let name = String::from_utf8(name.to_vec()).map_err(|_| StorageError::Corrupt { what: "plugin name" })?;
            plugins.push((name, library.to_vec()));
        }
        Ok(plugins)
    }

    /// Flushes memtables so that the next start replays little write-ahead log.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AbortKind, Timestamp};

    fn outcome(epoch: u64) -> Outcome {
        Outcome::Aborted {
            timestamp: Timestamp { epoch, node: 0, sequence: 1 },
            kind: AbortKind::Logic,
            message: "no".into(),
        }
    }

    #[test]
    fn logged_epochs_survive_reopening_and_the_newest_value_wins() {
        let directory = tempfile::tempdir().expect("temporary directory");
        {
            let storage = Storage::open(directory.path()).expect("open");
            let mut first = EpochRecord::new(1);
            first.stage_value(b"\0\0\0\x01a", Some(b"one"));
            first.stage_value(b"\0\0\0\x01b", Some(b"gone soon"));
            first.stage_result(&RequestId::Id(b"r1".to_vec().into()), &outcome(1), &mut Vec::new());
            storage.write_epoch(&first, true).expect("write epoch 1");
            storage.checkpoint(std::slice::from_ref(&first)).expect("checkpoint epoch 1");
            let mut second = EpochRecord::new(2);
            second.stage_value(b"\0\0\0\x01a", Some(b"two"));
            second.stage_value(b"\0\0\0\x01b", None);
            second.stage_result(&RequestId::Id(b"r2".to_vec().into()), &outcome(2), &mut Vec::new());
            // Epoch 2 is durable only in the log: the process "crashes" here.
            storage.write_epoch(&second, true).expect("write epoch 2");
        }
        let storage = Storage::open(directory.path()).expect("reopen folds the log");
        assert_eq!(storage.durable_epoch().expect("durable epoch"), 2);
        let values = storage.read_values(&[b"\0\0\0\x01a", b"\0\0\0\x01b", b"\0\0\0\x01c"]).expect("read");
        assert_eq!(values, vec![Some(b"two".to_vec()), None, None]);
        let (r1, r2, r3) = (
            RequestId::Id(b"r1".to_vec().into()),
            RequestId::Id(b"r2".to_vec().into()),
            RequestId::Id(b"r3".to_vec().into()),
        );
        let results = storage.read_results(&[&r1, &r2, &r3]).expect("results");
        assert_eq!(results, vec![Some(outcome(1)), Some(outcome(2)), None]);
    }

    #[test]
    fn sessions_fold_their_outcomes_and_acknowledgements_and_survive_reopening() {
        use crate::model::SessionPosition;
        let directory = tempfile::tempdir().expect("temporary directory");
        let at = |session, sequence, first_unanswered| {
            RequestId::Session(SessionPosition { session, sequence, first_unanswered })
        };
        let (first, second);
        {
            let storage = Storage::open(directory.path()).expect("open");
            // Node 1 of 3: numbers 1 * 3 + 1 and 2 * 3 + 1.
            first = storage.open_session(1, 3, 10).expect("open a session");
            second = storage.open_session(1, 3, 10).expect("open another");
            assert_eq!((first, second), (4, 7));
            let mut one = EpochRecord::new(1);
            for sequence in 1..=3 {
                one.stage_result(&at(first, sequence, 1), &outcome(sequence), &mut Vec::new());
            }
            storage.write_epoch(&one, true).expect("write epoch 1");
            storage.checkpoint(std::slice::from_ref(&one)).expect("checkpoint epoch 1");
            let mut two = EpochRecord::new(2);
            // The client has the answers of 1 and 2 now.
            two.stage_result(&at(first, 4, 3), &outcome(4), &mut Vec::new());
            // Only in the log when the process "crashes".
            storage.write_epoch(&two, true).expect("write epoch 2");
        }
        let storage = Storage::open(directory.path()).expect("reopen folds the log");
        let mut stored = storage.stored_sessions().expect("stored sessions");
        stored.sort_by_key(|session| session.session);
        assert_eq!(stored.len(), 2);
        assert_eq!((stored[0].session, stored[0].first_unanswered), (first, 3));
        assert_eq!(stored[0].outcomes, vec![(3, outcome(3)), (4, outcome(4))]);
        assert_eq!((stored[1].session, stored[1].first_unanswered, stored[1].outcomes.len()), (second, 1, 0));
        assert!(stored[0].last_used_unix_seconds >= 10);
        assert_eq!(storage.open_session(1, 3, 20).expect("numbers go on after a restart"), 10);
    }

    #[test]
    fn a_corrupt_record_is_refused_by_the_checkpoint() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let storage = Storage::open(directory.path()).expect("open");
        let record = EpochRecord { epoch: 1, bytes: vec![9, 9, 9] };
        assert!(matches!(storage.checkpoint(&[record]), Err(StorageError::Corrupt { .. })));
    }

    #[test]
    fn outcomes_past_their_retention_are_dropped_by_compaction() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let options = StorageOptions { result_retention: std::time::Duration::ZERO, ..Default::default() };
        let storage = Storage::open_with(directory.path(), options).expect("open");
        let id = RequestId::Id(b"old".to_vec().into());
        let mut record = EpochRecord::new(1);
        record.stage_result(&id, &outcome(1), &mut Vec::new());
        storage.write_epoch(&record, false).expect("write");
        storage.checkpoint(std::slice::from_ref(&record)).expect("checkpoint");
        assert_eq!(storage.read_results(&[&id]).expect("read"), vec![Some(outcome(1))], "kept until compaction");
        // Recorded "now" with zero retention: expired once the clock moves past it.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        storage.db.flush_cf(storage.cf(CF_RESULTS)).expect("flush");
        storage.db.compact_range_cf(storage.cf(CF_RESULTS), None::<&[u8]>, None::<&[u8]>);
        assert_eq!(storage.read_results(&[&id]).expect("read"), vec![None], "expired outcome dropped");
    }

    #[test]
    fn request_id_keys_past_their_retention_are_dropped_and_other_keys_kept() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let options = StorageOptions { result_retention: std::time::Duration::ZERO, ..Default::default() };
        let storage = Storage::open_with(directory.path(), options).expect("open");
        let mut id_key = Vec::new();
        data_key_into(&mut id_key, 0, b"request-7");
        let mut account_key = Vec::new();
        data_key_into(&mut account_key, 5, b"account-7");
        let mut stored = Vec::new();
        codec::encode_stored_result_into(&mut stored, &outcome(1), unix_seconds_now());
        let mut record = EpochRecord::new(1);
        record.stage_value(&id_key, Some(&stored));
        record.stage_value(&account_key, Some(&stored));
        storage.write_epoch(&record, false).expect("write");
        storage.checkpoint(std::slice::from_ref(&record)).expect("checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        storage.db.flush_cf(storage.cf(CF_DATA)).expect("flush");
        storage.db.compact_range_cf(storage.cf(CF_DATA), None::<&[u8]>, None::<&[u8]>);
        let values = storage.read_values(&[&id_key, &account_key]).expect("read");
        assert_eq!(values[0], None, "an expired request outcome is dropped");
        assert_eq!(values[1].as_deref(), Some(&stored[..]), "a plugin table's key is kept, whatever it holds");
    }

    #[test]
    fn table_ids_are_stable_and_distinct() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let storage = Storage::open(directory.path()).expect("open");
        let a = storage.table_id("bank", "accounts").expect("id");
        let b = storage.table_id("bank", "audit").expect("id");
        assert_ne!(a, b);
        drop(storage);
        let storage = Storage::open(directory.path()).expect("reopen");
        assert_eq!(storage.table_id("bank", "accounts").expect("id"), a);
    }
}
