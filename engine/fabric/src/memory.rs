//! Registered memory: the bytes of a region, and the operations of the fabric's memory
//! model on them, as the owner and every backend's responder perform them.
//!
//! Region memory is shared with other threads and, for shm, other processes that write
//! it at any moment. So it is never seen as a Rust slice: every access is an atomic load
//! or store (relaxed for the bytes, 8 bytes at a time where aligned), a WRITE begins with
//! a release fence and a READ ends with an acquire fence. That makes a WRITE of a value
//! followed by a WRITE of a flag, observed by a READ of the flag followed by a READ of the
//! value, a proper release/acquire pair, and aligned words are never torn.

use super::{FabricError, NodeId, Operation, RegionId, RemoteRegion, MAX_TRANSFER_BYTES};
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};

/// Alignment of heap-backed regions: a page, as RDMA memory registration prefers, and in
/// any case a multiple of 8 so that offset alignment equals address alignment.
const HEAP_REGION_ALIGNMENT_BYTES: usize = 4096;

/// An addressing error before node and region are known; see [`AccessError::at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccessError {
    OutOfBounds { offset: u64, length: u64, size_bytes: u64 },
    Misaligned { offset: u64 },
    TransferTooLarge { length: u64 },
}

impl AccessError {
    /// The full error, naming the region it happened in.
    pub(crate) fn at(self, node: NodeId, region: RegionId) -> FabricError {
        match self {
            AccessError::OutOfBounds { offset, length, size_bytes } => {
                FabricError::OutOfBounds { node, region, offset, length, size_bytes }
            }
            AccessError::Misaligned { offset } => FabricError::Misaligned { node, region, offset },
            AccessError::TransferTooLarge { length } => {
                FabricError::TransferTooLarge { length, limit: MAX_TRANSFER_BYTES }
            }
        }
    }
}

/// Checks that `length` bytes at `offset` lie inside a region of `size_bytes`.
pub(crate) fn check_range(offset: u64, length: u64, size_bytes: u64) -> Result<(), AccessError> {
    if length > MAX_TRANSFER_BYTES {
        return Err(AccessError::TransferTooLarge { length });
    }
    match offset.checked_add(length) {
        Some(end) if end <= size_bytes => Ok(()),
        _ => Err(AccessError::OutOfBounds { offset, length, size_bytes }),
    }
}

/// Checks that `offset` addresses a whole, aligned word of a region of `size_bytes`.
pub(crate) fn check_word(offset: u64, size_bytes: u64) -> Result<(), AccessError> {
    if !offset.is_multiple_of(8) {
        return Err(AccessError::Misaligned { offset });
    }
    check_range(offset, 8, size_bytes)
}

/// What keeps a region's memory alive.
enum Backing {
    /// Zeroed heap memory, owned here (tcp, rdma).
    Heap { layout: Layout },
    /// A shared mapping of a file (shm); unmapped on drop.
    Mapped { _mapping: memmap2::MmapRaw },
}

/// A block of shared memory: base address and size, with bounds-checked atomic access.
pub(crate) struct RegionMemory {
    base: NonNull<u8>,
    size_bytes: u64,
    backing: Backing,
}

// SAFETY: the memory is only ever accessed through atomics (see the module doc), so any
// number of threads may share and send it; the backing is owned and freed exactly once.
unsafe impl Send for RegionMemory {}
unsafe impl Sync for RegionMemory {}

impl RegionMemory {
    /// Allocates `size_bytes` of zeroed, page-aligned heap memory.
    pub(crate) fn zeroed_heap(size_bytes: u64) -> Result<RegionMemory, FabricError> {
        let size = usize::try_from(size_bytes).map_err(|_| FabricError::InvalidRegionSize { size_bytes })?;
        if size == 0 || !size.is_multiple_of(8) {
            return Err(FabricError::InvalidRegionSize { size_bytes });
        }
        let layout = Layout::from_size_align(size, HEAP_REGION_ALIGNMENT_BYTES)
            .map_err(|_| FabricError::InvalidRegionSize { size_bytes })?;
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(base) = NonNull::new(pointer) else { std::alloc::handle_alloc_error(layout) };
        Ok(RegionMemory { base, size_bytes, backing: Backing::Heap { layout } })
    }

    /// Wraps a shared mapping of a whole region file.
    pub(crate) fn mapped(mapping: memmap2::MmapRaw) -> RegionMemory {
        assert!(mapping.len().is_multiple_of(8) && mapping.len() > 0, "region files hold whole words");
        let base = NonNull::new(mapping.as_mut_ptr()).expect("a mapping is never at address 0");
        assert!((base.as_ptr() as usize).is_multiple_of(8), "mappings are page aligned");
        RegionMemory { base, size_bytes: mapping.len() as u64, backing: Backing::Mapped { _mapping: mapping } }
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The memory's base address, for registering it with an RDMA device.
    #[cfg_attr(not(feature = "rdma"), allow(dead_code))]
    pub(crate) fn base_address(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The address `offset` bytes into the region. The caller checked the range.
    fn address(&self, offset: u64) -> *mut u8 {
        debug_assert!(offset <= self.size_bytes);
        // SAFETY: offset is within the allocation (checked by the caller), and the size
        // fits in usize because the memory exists.
        unsafe { self.base.as_ptr().add(offset as usize) }
    }

    /// A checked reference to the aligned word at `offset`.
    pub(crate) fn word(&self, offset: u64) -> Result<&AtomicU64, AccessError> {
        check_word(offset, self.size_bytes)?;
        // SAFETY: the word is in bounds and 8-byte aligned (the base is page aligned and
        // the offset a multiple of 8), the memory lives as long as `self`, and it is only
        // ever accessed atomically.
        Ok(unsafe { AtomicU64::from_ptr(self.address(offset).cast::<u64>()) })
    }

    /// A READ: copies `buffer.len()` bytes at `offset`, then an acquire fence.
    pub(crate) fn read(&self, offset: u64, buffer: &mut [u8]) -> Result<(), AccessError> {
        check_range(offset, buffer.len() as u64, self.size_bytes)?;
        // SAFETY: the range is in bounds, checked just above.
        unsafe { load_bytes(self.address(offset), buffer) };
        fence(Ordering::Acquire);
        Ok(())
    }

    /// A WRITE: a release fence, then copies `bytes` to `offset`.
    pub(crate) fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), AccessError> {
        check_range(offset, bytes.len() as u64, self.size_bytes)?;
        fence(Ordering::Release);
        // SAFETY: the range is in bounds, checked just above.
        unsafe { store_bytes(self.address(offset), bytes) };
        Ok(())
    }

    pub(crate) fn compare_and_swap(&self, offset: u64, expected: u64, new: u64) -> Result<u64, AccessError> {
        let word = self.word(offset)?;
        Ok(match word.compare_exchange(expected, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(previous) | Err(previous) => previous,
        })
    }

    pub(crate) fn fetch_add(&self, offset: u64, delta: u64) -> Result<u64, AccessError> {
        Ok(self.word(offset)?.fetch_add(delta, Ordering::AcqRel))
    }

    /// Runs a batch in order, stopping at the first failure (the memory model's batch rule).
    pub(crate) fn execute(&self, operations: &mut [Operation<'_>]) -> Result<(), AccessError> {
        for operation in operations.iter_mut() {
            match operation {
                Operation::Read { offset, buffer } => self.read(*offset, buffer)?,
                Operation::Write { offset, bytes } => self.write(*offset, bytes)?,
                Operation::CompareAndSwap { offset, expected, new, previous } => {
                    *previous = self.compare_and_swap(*offset, *expected, *new)?
                }
                Operation::FetchAdd { offset, delta, previous } => *previous = self.fetch_add(*offset, *delta)?,
            }
        }
        Ok(())
    }
}

impl Drop for RegionMemory {
    fn drop(&mut self) {
        if let Backing::Heap { layout } = self.backing {
            // SAFETY: allocated in `zeroed_heap` with exactly this layout, freed once.
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) };
        }
    }
}

/// Copies bytes out of shared memory with relaxed atomic loads, a word at a time where the
/// source is aligned.
///
/// # Safety
/// `source .. source + buffer.len()` must be valid memory that is only accessed atomically.
unsafe fn load_bytes(source: *const u8, buffer: &mut [u8]) {
    // SAFETY (for every access below): the caller guarantees the range is valid and only
    // accessed atomically; each access stays inside it and word accesses are aligned.
    let byte = |index: usize| unsafe { AtomicU8::from_ptr(source.add(index).cast_mut()) }.load(Ordering::Relaxed);
    let length = buffer.len();
    let mut index = 0;
    while index < length && !(source as usize + index).is_multiple_of(8) {
        buffer[index] = byte(index);
        index += 1;
    }
    while index + 8 <= length {
        // SAFETY: see above; the address is 8-byte aligned here.
        let word = unsafe { AtomicU64::from_ptr(source.add(index).cast_mut().cast::<u64>()) }.load(Ordering::Relaxed);
        buffer[index..index + 8].copy_from_slice(&word.to_ne_bytes());
        index += 8;
    }
    while index < length {
        buffer[index] = byte(index);
        index += 1;
    }
}

/// Copies bytes into shared memory with relaxed atomic stores, a word at a time where the
/// destination is aligned (so an aligned 8-byte WRITE is a single, untorn store).
///
/// # Safety
/// `destination .. destination + bytes.len()` must be valid memory that is only accessed
/// atomically.
unsafe fn store_bytes(destination: *mut u8, bytes: &[u8]) {
    // SAFETY (for every access below): the caller guarantees the range is valid and only
    // accessed atomically; each access stays inside it and word accesses are aligned.
    let store_byte =
        |index: usize| unsafe { AtomicU8::from_ptr(destination.add(index)) }.store(bytes[index], Ordering::Relaxed);
    let length = bytes.len();
    let mut index = 0;
    while index < length && !(destination as usize + index).is_multiple_of(8) {
        store_byte(index);
        index += 1;
    }
    while index + 8 <= length {
        let word = u64::from_ne_bytes(bytes[index..index + 8].try_into().expect("eight bytes"));
        // SAFETY: see above; the address is 8-byte aligned here.
        unsafe { AtomicU64::from_ptr(destination.add(index).cast::<u64>()) }.store(word, Ordering::Relaxed);
        index += 8;
    }
    while index < length {
        store_byte(index);
        index += 1;
    }
}

/// A region this node registered: its owner's view. Peers reach the same memory through
/// their backend's [`RemoteRegion`]; the owner uses this one, which follows the same
/// memory model (and is a [`RemoteRegion`] itself, addressed by the owner's node id).
///
/// With the rdma backend, CPU atomics here and a peer's RDMA atomics on the same word are
/// atomic with respect to each other only where the device reports `IBV_ATOMIC_GLOB`.
pub struct LocalRegion {
    node: NodeId,
    id: RegionId,
    memory: RegionMemory,
}

impl LocalRegion {
    pub(crate) fn new(node: NodeId, id: RegionId, memory: RegionMemory) -> LocalRegion {
        LocalRegion { node, id, memory }
    }

    pub(crate) fn memory(&self) -> &RegionMemory {
        &self.memory
    }

    /// The region's id on this node.
    pub fn id(&self) -> RegionId {
        self.id
    }

    /// The aligned word at `offset`, for protocols that keep words in a region (lease
    /// words, ring heads) and operate on them with the owner's CPU atomics.
    pub fn word(&self, offset: u64) -> Result<&AtomicU64, FabricError> {
        self.memory.word(offset).map_err(|error| error.at(self.node, self.id))
    }

    /// Loads the word at `offset` with acquire ordering.
    pub fn load_word(&self, offset: u64) -> Result<u64, FabricError> {
        Ok(self.word(offset)?.load(Ordering::Acquire))
    }

    /// Stores `value` to the word at `offset` with release ordering.
    pub fn store_word(&self, offset: u64, value: u64) -> Result<(), FabricError> {
        self.word(offset)?.store(value, Ordering::Release);
        Ok(())
    }
}

impl RemoteRegion for LocalRegion {
    fn node(&self) -> NodeId {
        self.node
    }

    fn region(&self) -> RegionId {
        self.id
    }

    fn size_bytes(&self) -> u64 {
        self.memory.size_bytes()
    }

    fn execute(&self, operations: &mut [Operation<'_>]) -> Result<(), FabricError> {
        super::check_batch_limits(operations)?;
        self.memory.execute(operations).map_err(|error| error.at(self.node, self.id))
    }
}

impl std::fmt::Debug for LocalRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRegion")
            .field("node", &self.node)
            .field("id", &self.id)
            .field("size_bytes", &self.memory.size_bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_transfers_round_trip_at_every_offset_and_length() {
        let memory = RegionMemory::zeroed_heap(64).expect("allocate");
        for offset in 0..24u64 {
            for length in 0..=24usize {
                let bytes: Vec<u8> = (0..length).map(|i| (offset as usize * 31 + i) as u8 | 1).collect();
                memory.write(offset, &bytes).expect("in bounds");
                let mut back = vec![0u8; length];
                memory.read(offset, &mut back).expect("in bounds");
                assert_eq!(back, bytes, "offset {offset}, length {length}");
            }
        }
    }

    #[test]
    fn addressing_errors_are_reported_before_touching_memory() {
        let memory = RegionMemory::zeroed_heap(32).expect("allocate");
        assert_eq!(
            memory.write(30, &[1, 2, 3]),
            Err(AccessError::OutOfBounds { offset: 30, length: 3, size_bytes: 32 })
        );
        assert_eq!(
            memory.write(u64::MAX, &[1]),
            Err(AccessError::OutOfBounds { offset: u64::MAX, length: 1, size_bytes: 32 })
        );
        assert_eq!(memory.compare_and_swap(4, 0, 1), Err(AccessError::Misaligned { offset: 4 }));
        assert_eq!(memory.fetch_add(32, 1), Err(AccessError::OutOfBounds { offset: 32, length: 8, size_bytes: 32 }));
        let mut buffer = [0u8; 32];
        memory.read(0, &mut buffer).expect("in bounds");
        assert_eq!(buffer, [0u8; 32], "nothing was written");
    }

    #[test]
    fn a_batch_stops_at_its_first_failure() {
        let memory = RegionMemory::zeroed_heap(16).expect("allocate");
        let mut operations = [
            Operation::FetchAdd { offset: 0, delta: 5, previous: 0 },
            Operation::Write { offset: 12, bytes: &[1; 8] },
            Operation::FetchAdd { offset: 0, delta: 5, previous: 0 },
        ];
        assert!(matches!(memory.execute(&mut operations), Err(AccessError::OutOfBounds { .. })));
        assert_eq!(memory.word(0).expect("word").load(Ordering::Relaxed), 5, "only the first operation ran");
    }

    #[test]
    fn region_sizes_must_be_positive_multiples_of_eight() {
        assert!(matches!(RegionMemory::zeroed_heap(0), Err(FabricError::InvalidRegionSize { .. })));
        assert!(matches!(RegionMemory::zeroed_heap(12), Err(FabricError::InvalidRegionSize { .. })));
    }
}
