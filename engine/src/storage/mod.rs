//! Durable state of one node in embedded RocksDB, and the in-memory slots that hold the
//! keys the node works on.
//!
//! Column families:
//! * `data`: table id (u32, big-endian) followed by the key, to the value;
//! * `results`: request id to the encoded [`Outcome`] (exactly-once retries);
//! * `meta`: node metadata: the durable epoch, table id assignments;
//! * `plugins`: plugin name to the library bytes of its deployed version.
//!
//! Everything an epoch changes is written in one `WriteBatch` ([`EpochBatch`]), so an
//! epoch is either entirely on disk or not at all.

pub mod codec;
pub mod slots;

use crate::model::{Outcome, RequestId};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};

pub use slots::{Slot, SlotStore};

const CF_DATA: &str = "data";
const CF_RESULTS: &str = "results";
const CF_META: &str = "meta";
const CF_PLUGINS: &str = "plugins";

const META_DURABLE_EPOCH: &[u8] = b"durable_epoch";
const META_NEXT_TABLE_ID: &[u8] = b"next_table_id";
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
}

/// The node's RocksDB database.
pub struct Storage {
    db: DB,
}

/// The writes of one epoch, applied atomically by [`Storage::write_epoch`].
pub struct EpochBatch {
    pub epoch: u64,
    batch: WriteBatch,
}

impl EpochBatch {
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

/// Builds the storage key of `key` in table `table_id`, reusing `buffer`.
pub fn data_key_into(buffer: &mut Vec<u8>, table_id: u32, key: &[u8]) {
    buffer.clear();
    buffer.extend_from_slice(&table_id.to_be_bytes());
    buffer.extend_from_slice(key);
}

impl Storage {
    /// Opens (creating if needed) the database under `path`.
    pub fn open(path: &Path) -> Result<Storage, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.increase_parallelism(2);
        let mut data_options = Options::default();
        data_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Point lookups dominate (key loads, result lookups for new request ids), so a
        // bloom filter on whole keys saves most disk reads of misses.
        let mut table_options = rocksdb::BlockBasedOptions::default();
        table_options.set_bloom_filter(10.0, false);
        data_options.set_block_based_table_factory(&table_options);
        let mut results_options = data_options.clone();
        results_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let families = vec![
            ColumnFamilyDescriptor::new(CF_DATA, data_options),
            ColumnFamilyDescriptor::new(CF_RESULTS, results_options),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_PLUGINS, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&options, path, families)
            .map_err(|source| StorageError::Open { path: path.into(), source })?;
        Ok(Storage { db })
    }

    fn cf(&self, name: &'static str) -> &ColumnFamily {
        // The families are created in `open`, so their absence is a programming error.
        self.db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} missing"))
    }

    /// The newest epoch whose batch is on disk (0 when none).
    pub fn durable_epoch(&self) -> Result<u64, StorageError> {
        match self.db.get_cf(self.cf(CF_META), META_DURABLE_EPOCH)? {
            None => Ok(0),
            Some(bytes) => codec::decode_u64(&bytes).ok_or(StorageError::Corrupt { what: "durable epoch" }),
        }
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

    /// Looks up the durable outcomes of several request ids at once.
    pub fn read_results(&self, ids: &[&RequestId]) -> Result<Vec<Option<Outcome>>, StorageError> {
        let cf = self.cf(CF_RESULTS);
        let keys: Vec<&[u8]> = ids.iter().map(|id| &*id.0).collect();
        self.db
            .batched_multi_get_cf(cf, &keys, false)
            .into_iter()
            .map(|result| match result? {
                None => Ok(None),
                Some(bytes) => codec::decode_outcome(&bytes).map(Some).ok_or(StorageError::Corrupt { what: "request result" }),
            })
            .collect()
    }

    /// Starts the batch of `epoch`.
    pub fn begin_epoch(&self, epoch: u64) -> EpochBatch {
        EpochBatch { epoch, batch: WriteBatch::default() }
    }

    /// Adds a changed value (or a deletion, for `None`) to the batch.
    pub fn stage_value(&self, batch: &mut EpochBatch, storage_key: &[u8], value: Option<&[u8]>) {
        match value {
            Some(value) => batch.batch.put_cf(self.cf(CF_DATA), storage_key, value),
            None => batch.batch.delete_cf(self.cf(CF_DATA), storage_key),
        }
    }

    /// Adds a request's outcome to the batch.
    pub fn stage_result(&self, batch: &mut EpochBatch, id: &RequestId, outcome: &Outcome, scratch: &mut Vec<u8>) {
        codec::encode_outcome_into(scratch, outcome);
        batch.batch.put_cf(self.cf(CF_RESULTS), &id.0, &scratch[..]);
    }

    /// Writes an epoch's batch, with its epoch marker, atomically. With `sync` the
    /// write-ahead log is fsynced before this returns (and with it every earlier
    /// unsynced write).
    pub fn write_epoch(&self, mut batch: EpochBatch, sync: bool) -> Result<(), StorageError> {
        batch.batch.put_cf(self.cf(CF_META), META_DURABLE_EPOCH, batch.epoch.to_be_bytes());
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch.batch, &options)?;
        Ok(())
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
        let next = match self.db.get_cf(meta, META_NEXT_TABLE_ID)? {
            None => 1,
            Some(bytes) => codec::decode_u64(&bytes).ok_or(StorageError::Corrupt { what: "next table id" })?,
        };
        let id = u32::try_from(next).map_err(|_| StorageError::Corrupt { what: "next table id" })?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, &name, u64::from(id).to_be_bytes());
        batch.put_cf(meta, META_NEXT_TABLE_ID, (next + 1).to_be_bytes());
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
