//! Optimistic concurrency control, the Boki/FaRM-style baseline (DESIGN §5, `--cc occ`).
//!
//! A transaction runs on an executor as soon as the dispatcher hands it over, without
//! locks: it copies every declared key's value and version into a private cache (a
//! consistent pair per key: the version is read before and after the value), runs
//! against the cache, then commits:
//! 1. lock the write set in access-set order, each by a compare-and-swap from the version
//!    it read (unlocked) to the same version with the lock bit; a failure means another
//!    transaction holds or changed the key: abort and run again;
//! 2. reserve the commit sequence number;
//! 3. re-read the versions of the read set ([`validate`]); a change or a lock means the
//!    cache was stale: give the number back as void, unlock, abort and run again;
//! 4. install the writes and store version + 1 without the lock bit.
//!
//! A transaction whose plugin aborted (logic, panic, undeclared access) locks nothing but
//! still validates every key it read: its outcome is recorded and depends on those reads.
//!
//! # Why the sequence order is a serial order
//!
//! The sequencer logs in commit sequence order and outcomes carry that order as their
//! timestamp, so every pair of conflicting transactions must have their numbers in the
//! order of their dependency:
//! * T2 reads T1's write: T2 read after T1 installed, which is after T1 reserved; T2
//!   reserves after it ran.
//! * T2 overwrites T1's write: T2 locks the key after T1 unlocked it, which is after T1
//!   reserved; T2 reserves after locking.
//! * T2 overwrites what T1 read (T1 before T2): T1 validated after reserving and found the
//!   key unlocked with the version it read, so T2 locked it after that validation, and
//!   reserves after locking.
//!
//! The last case relates a load to a later compare-and-swap on another thread, which only
//! sequentially consistent operations order; so the reservation, the validation loads and
//! the write-set compare-and-swaps are `SeqCst`.

use super::keys::KeyRecord;
use super::{pause_before_retry, Attempt, AttemptEnd, Backoff, WorkerContext};
use crate::txn::access::AccessMode;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

/// The lock bit of a version word; the other bits are the version.
pub(crate) const LOCKED: u64 = 1 << 63;

/// Why validation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Another transaction holds the key's lock (it is committing a write to it).
    Locked { index: usize },
    /// Another transaction installed a new value since this one read it.
    Changed { index: usize },
}

/// Checks the read set: each pair is (the version word read into the cache, the word
/// now). Valid when every key still has the version that was read and nobody holds it.
pub(crate) fn validate(read_set: impl IntoIterator<Item = (u64, u64)>) -> Result<(), Conflict> {
    for (index, (read, now)) in read_set.into_iter().enumerate() {
        debug_assert_eq!(read & LOCKED, 0, "a cached version is never a locked word");
        if now & LOCKED != 0 {
            return Err(Conflict::Locked { index });
        }
        if now != read {
            return Err(Conflict::Changed { index });
        }
    }
    Ok(())
}

/// Reads a key's value and the version it belongs to (FaRM's consistent object read).
fn read_consistent(record: &KeyRecord) -> (Option<Arc<Vec<u8>>>, u64) {
    let mut backoff = Backoff::new();
    loop {
        let before = record.lock_word.load(Ordering::Acquire);
        if before & LOCKED != 0 {
            // A writer is installing: its value and version come together shortly.
            backoff.snooze();
            continue;
        }
        let value = record.load_value();
        // The version load must not move before the value load.
        fence(Ordering::Acquire);
        if record.lock_word.load(Ordering::Acquire) == before {
            return (value, before);
        }
    }
}

/// The access-set indices a transaction writes, in access-set order.
fn write_set(attempt: &Attempt, committed: bool) -> Vec<usize> {
    if !committed {
        return Vec::new();
    }
    let entries = attempt.entries();
    (0..entries.len()).filter(|&index| entries[index].mode == AccessMode::Write).collect()
}

/// Runs one transaction to its outcome under OCC and hands it to the sequencer (unless the
/// watchdog abandoned its call and answered for it; a running transaction holds no lock).
pub(crate) fn run(mut attempt: Attempt, context: &WorkerContext) -> AttemptEnd {
    let count = attempt.entries().len();
    let mut versions = vec![0u64; count];
    loop {
        for (index, version) in versions.iter_mut().enumerate() {
            let (value, read) = read_consistent(attempt.record(index));
            attempt.fill(index, value.as_deref().map(Vec::as_slice));
            *version = read;
        }
        let Some(outcome) = context.execute_watched(&mut attempt, false) else { return AttemptEnd::Abandoned };
        let writes = write_set(&attempt, outcome.is_committed());
        let mut locked = 0;
        for &index in &writes {
            let version = versions[index];
            let word = &attempt.record(index).lock_word;
            if word.compare_exchange(version, version | LOCKED, Ordering::SeqCst, Ordering::Relaxed).is_err() {
                break;
            }
            locked += 1;
        }
        let unlock = |attempt: &Attempt, locked: usize| {
            for &index in &writes[..locked] {
                attempt.record(index).lock_word.store(versions[index], Ordering::Release);
            }
        };
        if locked < writes.len() {
            unlock(&attempt, locked);
            attempt.retries += 1;
            pause_before_retry(attempt.retries);
            continue;
        }
        let sequence = context.reserve_sequence();
        // The read set: every key not locked above (`writes` is sorted).
        let read_set = (0..count)
            .filter(|index| writes.binary_search(index).is_err())
            .map(|index| (versions[index], attempt.record(index).lock_word.load(Ordering::SeqCst)));
        if validate(read_set).is_err() {
            context.void(sequence);
            unlock(&attempt, locked);
            attempt.retries += 1;
            pause_before_retry(attempt.retries);
            continue;
        }
        let installed = attempt.install_writes(&outcome);
        for &index in &writes {
            let next = versions[index] + 1;
            assert_eq!(next & LOCKED, 0, "a version word overflowed into its lock bit");
            attempt.record(index).lock_word.store(next, Ordering::Release);
        }
        context.hand_over(attempt.finish(sequence, outcome, installed));
        return AttemptEnd::HandedOver;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_unlocked_versions_validate() {
        assert_eq!(validate([]), Ok(()));
        assert_eq!(validate([(0, 0), (7, 7), (1 << 40, 1 << 40)]), Ok(()));
    }

    #[test]
    fn a_changed_version_fails_validation_at_its_index() {
        assert_eq!(validate([(3, 3), (7, 8), (1, 1)]), Err(Conflict::Changed { index: 1 }));
        // Even a version that went back (it cannot, but a reused word could) is a change.
        assert_eq!(validate([(7, 6)]), Err(Conflict::Changed { index: 0 }));
    }

    #[test]
    fn a_locked_key_fails_validation_even_at_the_version_that_was_read() {
        // A writer locked the key at the very version this transaction read: it may be
        // installing right now, so the read cannot be trusted.
        assert_eq!(validate([(5, 5), (9, 9 | LOCKED)]), Err(Conflict::Locked { index: 1 }));
        assert_eq!(validate([(9, 10 | LOCKED)]), Err(Conflict::Locked { index: 0 }));
    }
}

/// The version word under real contention: threads that read, lock by compare-and-swap,
/// install and bump, as `run` does, lose no update. Not timed: it only counts.
#[cfg(test)]
mod concurrent {
    use super::*;
    use crate::cc::keys::ResidentKeys;

    #[test]
    fn concurrent_increments_through_the_version_word_lose_nothing() {
        let mut keys = ResidentKeys::new();
        let pointer = keys.insert(b"counter", Some(0u64.to_le_bytes().to_vec()));
        let threads = 4;
        let increments = 20_000u64;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    // SAFETY: `keys` outlives the scope.
                    let record = unsafe { pointer.get() };
                    let mut done = 0;
                    while done < increments {
                        let (value, version) = read_consistent(record);
                        let bytes: [u8; 8] = value.as_deref().expect("present").as_slice().try_into().expect("8");
                        let next = u64::from_le_bytes(bytes) + 1;
                        if record
                            .lock_word
                            .compare_exchange(version, version | LOCKED, Ordering::SeqCst, Ordering::Relaxed)
                            .is_err()
                        {
                            continue;
                        }
                        record.store_value(Some(&next.to_le_bytes()));
                        record.lock_word.store(version + 1, Ordering::Release);
                        done += 1;
                    }
                });
            }
        });
        // SAFETY: `keys` is alive.
        let record = unsafe { pointer.get() };
        let (value, version) = read_consistent(record);
        let bytes: [u8; 8] = value.as_deref().expect("present").as_slice().try_into().expect("8");
        assert_eq!(version, threads * increments);
        assert_eq!(u64::from_le_bytes(bytes), threads * increments);
    }
}
