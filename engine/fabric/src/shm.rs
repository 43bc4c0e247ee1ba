//! The shared-memory fabric: nodes on one host map each other's regions from files in a
//! shared directory (on `/dev/shm` by default), so every operation on a peer's region is
//! a plain memory access and a remote CAS is a real atomic instruction on the owner's
//! memory. Truly one-sided: the owner's threads take no part.
//!
//! Layout: `<directory>/node-<node>/region-<region>`, one file per region, sized when
//! created and never resized (shrinking a mapped file would make a peer's access fault).
//! A region file is created under a temporary name, sized (zero-filled by the kernel) and
//! then renamed into place, so a peer never maps a file of the wrong size.
//!
//! Opening a node removes the region files a previous incarnation left behind, so
//! regions start zeroed after a restart; a peer that mapped an old file keeps the old
//! (now unlinked) memory until it opens the region again. Dropping the fabric removes its
//! files.

use super::memory::RegionMemory;
use super::{Fabric, FabricError, LocalRegion, NodeId, Operation, RegionId, RemoteRegion};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where clusters on one host keep their region files unless configured otherwise.
pub const DEFAULT_SHM_DIRECTORY: &str = "/dev/shm/leasehold";

/// The shm backend of one node.
pub struct ShmFabric {
    node: NodeId,
    directory: PathBuf,
    regions: Mutex<FxHashMap<RegionId, Arc<LocalRegion>>>,
}

impl ShmFabric {
    /// Opens node `node` of the cluster whose region files live in `directory`, creating
    /// the node's directory and clearing what a previous incarnation left there.
    pub fn open(directory: impl Into<PathBuf>, node: NodeId) -> Result<Arc<ShmFabric>, FabricError> {
        let directory = directory.into();
        let node_directory = node_directory(&directory, node);
        std::fs::create_dir_all(&node_directory)
            .map_err(|error| FabricError::io(format!("create {}", node_directory.display()), error))?;
        let entries = std::fs::read_dir(&node_directory)
            .map_err(|error| FabricError::io(format!("list {}", node_directory.display()), error))?;
        for entry in entries.flatten() {
            let stale = entry.path();
            if let Err(error) = std::fs::remove_file(&stale) {
                return Err(FabricError::io(format!("remove stale region file {}", stale.display()), error));
            }
        }
        Ok(Arc::new(ShmFabric { node, directory, regions: Mutex::new(FxHashMap::default()) }))
    }

    fn region_path(&self, node: NodeId, region: RegionId) -> PathBuf {
        node_directory(&self.directory, node).join(format!("region-{}", region.0))
    }
}

fn node_directory(directory: &Path, node: NodeId) -> PathBuf {
    directory.join(format!("node-{node}"))
}

/// Maps the whole of `file` shared and writable.
fn map_shared(file: &File, path: &Path) -> Result<memmap2::MmapRaw, FabricError> {
    memmap2::MmapOptions::new().map_raw(file).map_err(|error| FabricError::io(format!("map {}", path.display()), error))
}

impl Fabric for ShmFabric {
    fn node_id(&self) -> NodeId {
        self.node
    }

    fn backend_name(&self) -> &'static str {
        "shm"
    }

    fn register_region(&self, region: RegionId, size_bytes: u64) -> Result<Arc<LocalRegion>, FabricError> {
        if size_bytes == 0 || !size_bytes.is_multiple_of(8) || usize::try_from(size_bytes).is_err() {
            return Err(FabricError::InvalidRegionSize { size_bytes });
        }
        let mut regions = self.regions.lock();
        if regions.contains_key(&region) {
            return Err(FabricError::RegionExists { region });
        }
        let path = self.region_path(self.node, region);
        let temporary = path.with_file_name(format!(".region-{}.{}.creating", region.0, std::process::id()));
        // Owner-only: on a shared host, only processes of the nodes' user may map
        // (and so read or write) a region.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|error| FabricError::io(format!("create {}", temporary.display()), error))?;
        let created = file
            .set_len(size_bytes)
            .map_err(|error| FabricError::io(format!("size {}", temporary.display()), error))
            .and_then(|()| map_shared(&file, &temporary))
            .and_then(|mapping| {
                std::fs::rename(&temporary, &path)
                    .map_err(|error| FabricError::io(format!("publish {}", path.display()), error))?;
                Ok(mapping)
            });
        let mapping = match created {
            Ok(mapping) => mapping,
            Err(error) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(error);
            }
        };
        let local = Arc::new(LocalRegion::new(self.node, region, RegionMemory::mapped(mapping)));
        regions.insert(region, Arc::clone(&local));
        Ok(local)
    }

    fn deregister_region(&self, region: RegionId) -> Result<(), FabricError> {
        if self.regions.lock().remove(&region).is_none() {
            return Err(FabricError::UnknownRegion { node: self.node, region });
        }
        let path = self.region_path(self.node, region);
        std::fs::remove_file(&path).map_err(|error| FabricError::io(format!("remove {}", path.display()), error))
    }

    fn open_remote(&self, node: NodeId, region: RegionId) -> Result<Arc<dyn RemoteRegion>, FabricError> {
        if node == self.node {
            let local = self.regions.lock().get(&region).cloned();
            return match local {
                Some(local) => Ok(local),
                None => Err(FabricError::UnknownRegion { node, region }),
            };
        }
        if !node_directory(&self.directory, node).is_dir() {
            return Err(FabricError::UnknownPeer { node });
        }
        let path = self.region_path(node, region);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                return Err(FabricError::UnknownRegion { node, region })
            }
            Err(error) => return Err(FabricError::io(format!("open {}", path.display()), error)),
        };
        let size_bytes =
            file.metadata().map_err(|error| FabricError::io(format!("inspect {}", path.display()), error))?.len();
        if size_bytes == 0 || !size_bytes.is_multiple_of(8) {
            return Err(FabricError::Protocol {
                node,
                reason: format!("region file {} has {size_bytes} bytes, not whole words", path.display()),
            });
        }
        let memory = RegionMemory::mapped(map_shared(&file, &path)?);
        Ok(Arc::new(ShmRemoteRegion { node, region, memory }))
    }
}

impl Drop for ShmFabric {
    fn drop(&mut self) {
        let regions: Vec<RegionId> = self.regions.get_mut().keys().copied().collect();
        for region in regions {
            let _ = std::fs::remove_file(self.region_path(self.node, region));
        }
        // Succeeds only when nothing else is left in the node's directory.
        let _ = std::fs::remove_dir(node_directory(&self.directory, self.node));
    }
}

/// A peer's region, mapped into this process.
struct ShmRemoteRegion {
    node: NodeId,
    region: RegionId,
    memory: RegionMemory,
}

impl RemoteRegion for ShmRemoteRegion {
    fn node(&self) -> NodeId {
        self.node
    }

    fn region(&self) -> RegionId {
        self.region
    }

    fn size_bytes(&self) -> u64 {
        self.memory.size_bytes()
    }

    fn execute(&self, operations: &mut [Operation<'_>]) -> Result<(), FabricError> {
        super::check_batch_limits(operations)?;
        self.memory.execute(operations).map_err(|error| error.at(self.node, self.region))
    }
}
