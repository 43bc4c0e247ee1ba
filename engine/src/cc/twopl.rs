//! Two-phase locking with wait-die, the Beldi-style baseline (DESIGN §5, `--cc 2pl`).
//!
//! A transaction runs on an executor as soon as the dispatcher hands it over. It takes
//! the lock word of every declared key, in access-set order (table, then key bytes):
//! exclusive for keys it may write (a compare-and-swap from free to its timestamp), shared
//! for keys it only reads (a fetch-add of the reader count). It then copies the values
//! into private slots, runs, installs its writes, reserves its commit sequence number and
//! releases the locks.
//!
//! Conflicts are decided by wait-die ([`decide`]): a requester older than every holder
//! (smaller timestamp) waits; otherwise it dies, releases what it holds and runs again
//! later with the same timestamp, so it eventually becomes the oldest and cannot starve.
//! Only waits of older for younger transactions exist, so waits never form a cycle (the
//! fixed acquisition order would prevent that too; wait-die is kept because it is the
//! protocol being compared, and it decides the abort rate under contention).
//!
//! # The lock word
//!
//! One 64-bit word per key: the low [`READER_BITS`] bits count shared holders; the bits
//! above hold the exclusive holder's timestamp (0: none; [`MAINTENANCE`]: a momentary
//! hold that resets the oldest-reader bound). A reader's fetch-add may land while a writer
//! holds the key; it sees the holder in the previous value and takes its increment back,
//! so a writer releases by subtracting its timestamp, never by storing zero.
//!
//! Wait-die needs the age of the holders. A writer's is in the word; readers' ages are
//! kept as a lower bound in the record's `oldest_reader` word: a reader lowers it (fetch-
//! min) right after its fetch-add succeeded. A requester that finds readers compares with
//! that bound, which only errs towards dying (safe). A new reader briefly missing from the
//! bound can only make a younger writer wait for one step of that reader, which is not
//! blocked, so no cycle persists. The bound is reset to "none" when nobody can hold the
//! key shared: by a writer before it releases, and by the last reader to leave under a
//! momentary [`MAINTENANCE`] hold (readers that arrive meanwhile back off and retry).
//!
//! # When locks are released
//!
//! At commit hand-off, not after the commit is durable (early lock release). That keeps
//! every guarantee, because:
//! * the commit sequence number is reserved while all locks are held, so a transaction
//!   that depends on another (reads or overwrites its value) reserves a larger number,
//!   and the sequencer logs records strictly in sequence order: a record is never logged
//!   before one it depends on;
//! * the commit thread writes records in order and releases a record's replies only
//!   after it is durable, and a storage failure refuses every later record's replies;
//!   so a reply never reports a transaction whose dependencies could still be lost, and a
//!   crash loses a suffix of the log, which is a serial prefix of the history.
//!
//! Holding locks through the fsync would instead put the fsync latency (milliseconds)
//! on every hot key's critical path, which the lease protocol does not pay either: its
//! epoch `e+1` executes while epoch `e` is being made durable.

use super::keys::KeyRecord;
use super::{pause_before_retry, Attempt, AttemptEnd, Backoff, WorkerContext};
use crate::txn::access::AccessMode;
use std::sync::atomic::Ordering;

/// Bits of the lock word that count shared holders.
pub(crate) const READER_BITS: u32 = 20;
const READER_MASK: u64 = (1 << READER_BITS) - 1;
/// The holder field of a momentary hold that resets the oldest-reader bound.
pub(crate) const MAINTENANCE: u64 = 1;
/// The first transaction timestamp (0 and [`MAINTENANCE`] are not timestamps).
pub(crate) const FIRST_TIMESTAMP: u64 = 2;
/// The largest timestamp that fits the holder field.
pub(crate) const TIMESTAMP_MAX: u64 = u64::MAX >> READER_BITS;

/// What a lock word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockState {
    Free,
    /// Held exclusively by the transaction with this timestamp (readers that are backing
    /// off may still be counted).
    Exclusive {
        holder: u64,
    },
    /// Held shared by this many transactions.
    Shared {
        readers: u64,
    },
    /// Held for a moment to reset the oldest-reader bound.
    Maintenance,
}

impl LockState {
    pub(crate) fn of(word: u64) -> LockState {
        match (word >> READER_BITS, word & READER_MASK) {
            (0, 0) => LockState::Free,
            (0, readers) => LockState::Shared { readers },
            (MAINTENANCE, _) => LockState::Maintenance,
            (holder, _) => LockState::Exclusive { holder },
        }
    }
}

/// Who is in a requester's way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// An exclusive holder with this timestamp.
    Exclusive(u64),
    /// Shared holders, all at least as young as this timestamp.
    Readers { oldest: u64 },
    /// A momentary maintenance hold, which waits for nobody.
    Maintenance,
}

/// What a requester does about a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Wait,
    /// Abort, release everything, and run again later with the same timestamp.
    Die,
}

/// Wait-die: a requester waits only for holders that are all younger than itself
/// (larger timestamps); otherwise it dies. A maintenance hold is waited for: it is
/// released without waiting for anyone.
pub(crate) fn decide(requester: u64, holder: Holder) -> Decision {
    match holder {
        Holder::Maintenance => Decision::Wait,
        Holder::Exclusive(oldest) | Holder::Readers { oldest } if requester < oldest => Decision::Wait,
        Holder::Exclusive(_) | Holder::Readers { .. } => Decision::Die,
    }
}

/// The two words of a key that 2PL works on, wherever they live: a resident record's
/// atomics on this node ([`KeyRecord`]), or a record slot in another node's registered
/// memory, reached with one-sided fabric operations (`cc::fabric_records`). The protocol
/// below is written once against this trait, so the lock word means the same on both.
///
/// Orderings: the local implementation uses acquire/release as the protocol needs; a
/// fabric operation is ordered after the same thread's earlier ones by the fabric's
/// memory model.
pub(crate) trait LockWords {
    /// Why an operation on the words failed (never, for local words).
    type Error;
    /// Replaces the lock word with `new` if it is `current`: `Ok(previous)` when swapped,
    /// `Err(previous)` when not.
    fn compare_exchange(&self, current: u64, new: u64) -> Result<Result<u64, u64>, Self::Error>;
    /// Adds `delta` (wrapping) to the lock word; returns its previous value.
    fn fetch_add(&self, delta: u64) -> Result<u64, Self::Error>;
    /// The lock word now.
    fn load(&self) -> Result<u64, Self::Error>;
    /// The oldest-reader bound now.
    fn oldest_reader(&self) -> Result<u64, Self::Error>;
    /// Lowers the oldest-reader bound to `timestamp` if it is above.
    fn lower_oldest_reader(&self, timestamp: u64) -> Result<(), Self::Error>;
    /// Sets the oldest-reader bound to "none" (`u64::MAX`).
    fn clear_oldest_reader(&self) -> Result<(), Self::Error>;
}

impl LockWords for KeyRecord {
    type Error = std::convert::Infallible;

    fn compare_exchange(&self, current: u64, new: u64) -> Result<Result<u64, u64>, Self::Error> {
        Ok(self.lock_word.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire))
    }

    fn fetch_add(&self, delta: u64) -> Result<u64, Self::Error> {
        Ok(self.lock_word.fetch_add(delta, Ordering::AcqRel))
    }

    fn load(&self) -> Result<u64, Self::Error> {
        Ok(self.lock_word.load(Ordering::Acquire))
    }

    fn oldest_reader(&self) -> Result<u64, Self::Error> {
        Ok(self.oldest_reader.load(Ordering::Acquire))
    }

    fn lower_oldest_reader(&self, timestamp: u64) -> Result<(), Self::Error> {
        self.oldest_reader.fetch_min(timestamp, Ordering::AcqRel);
        Ok(())
    }

    fn clear_oldest_reader(&self) -> Result<(), Self::Error> {
        self.oldest_reader.store(u64::MAX, Ordering::Release);
        Ok(())
    }
}

/// Why a lock was not taken.
#[derive(Debug)]
pub(crate) enum NotTaken<E> {
    /// The transaction died on a conflict (wait-die).
    Died,
    /// An operation on the lock words failed (a fabric error; never for local words).
    Failed(E),
}

impl<E> From<E> for NotTaken<E> {
    fn from(error: E) -> NotTaken<E> {
        NotTaken::Failed(error)
    }
}

fn exclusive_holder(field: u64) -> Holder {
    if field == MAINTENANCE {
        Holder::Maintenance
    } else {
        Holder::Exclusive(field)
    }
}

/// Takes the key exclusively for the transaction with wait-die `timestamp`.
pub(crate) fn lock_exclusive<W: LockWords + ?Sized>(words: &W, timestamp: u64) -> Result<(), NotTaken<W::Error>> {
    let mine = timestamp << READER_BITS;
    let mut backoff = Backoff::new();
    loop {
        let current = match words.compare_exchange(0, mine)? {
            Ok(_) => return Ok(()),
            Err(current) => current,
        };
        let holder = match LockState::of(current) {
            // Freed between the attempt and the load: try again at once.
            LockState::Free => continue,
            LockState::Exclusive { holder } => Holder::Exclusive(holder),
            LockState::Maintenance => Holder::Maintenance,
            LockState::Shared { .. } => Holder::Readers { oldest: words.oldest_reader()? },
        };
        match decide(timestamp, holder) {
            Decision::Wait => backoff.snooze(),
            Decision::Die => return Err(NotTaken::Died),
        }
    }
}

/// Releases an exclusive hold of the transaction with wait-die `timestamp`.
pub(crate) fn unlock_exclusive<W: LockWords + ?Sized>(words: &W, timestamp: u64) -> Result<(), W::Error> {
    // Nobody holds the key shared now, so "no reader" is the exact bound.
    words.clear_oldest_reader()?;
    let previous = words.fetch_add((timestamp << READER_BITS).wrapping_neg())?;
    assert_eq!(previous >> READER_BITS, timestamp, "released an exclusive lock held by another transaction");
    Ok(())
}

/// Takes the key shared for the transaction with wait-die `timestamp`.
pub(crate) fn lock_shared<W: LockWords + ?Sized>(words: &W, timestamp: u64) -> Result<(), NotTaken<W::Error>> {
    let mut backoff = Backoff::new();
    loop {
        let previous = words.fetch_add(1)?;
        assert!(previous & READER_MASK < READER_MASK, "the reader count of a lock word overflowed");
        let field = previous >> READER_BITS;
        if field == 0 {
            words.lower_oldest_reader(timestamp)?;
            return Ok(());
        }
        // A writer (or maintenance) holds the key: take the increment back and decide.
        words.fetch_add(1u64.wrapping_neg())?;
        let mut holder = exclusive_holder(field);
        loop {
            if decide(timestamp, holder) == Decision::Die {
                return Err(NotTaken::Died);
            }
            backoff.snooze();
            match words.load()? >> READER_BITS {
                0 => break,
                field => holder = exclusive_holder(field),
            }
        }
    }
}

/// Releases a shared hold.
pub(crate) fn unlock_shared<W: LockWords + ?Sized>(words: &W) -> Result<(), W::Error> {
    let previous = words.fetch_add(1u64.wrapping_neg())?;
    assert!(previous & READER_MASK > 0, "released a shared lock that was not held");
    // The last reader left: reset the bound under a momentary hold, so that a reader
    // arriving now cannot be left out of it.
    if previous == 1 {
        let maintenance = MAINTENANCE << READER_BITS;
        if words.compare_exchange(0, maintenance)?.is_ok() {
            words.clear_oldest_reader()?;
            words.fetch_add(maintenance.wrapping_neg())?;
        }
    }
    Ok(())
}

/// Takes the locks of keys `0..count` in that order (access-set order), exclusive for
/// writes and shared for reads, on any lock words. If the transaction dies or an
/// operation fails, it releases the locks it took and says why (a release that fails
/// then is left to the caller's recovery: the first failure is the one reported).
pub(crate) fn lock_in_order<'w, W: LockWords + 'w>(
    count: usize,
    words: impl Fn(usize) -> &'w W,
    mode: impl Fn(usize) -> AccessMode,
    timestamp: u64,
) -> Result<(), NotTaken<W::Error>> {
    for index in 0..count {
        let taken = match mode(index) {
            AccessMode::Read => lock_shared(words(index), timestamp),
            AccessMode::Write => lock_exclusive(words(index), timestamp),
        };
        if let Err(not_taken) = taken {
            for held in 0..index {
                let _ = release_held(words(held), mode(held), timestamp);
            }
            return Err(not_taken);
        }
    }
    Ok(())
}

/// Releases every lock of the access set.
fn unlock(attempt: &Attempt) {
    for (index, entry) in attempt.entries().iter().enumerate() {
        release(attempt.record(index), entry.mode, attempt.timestamp);
    }
}

/// Releases one lock taken in `mode` by the transaction with wait-die `timestamp`, on any
/// lock words (also the way to release the locks of an abandoned call).
pub(crate) fn release_held<W: LockWords + ?Sized>(words: &W, mode: AccessMode, timestamp: u64) -> Result<(), W::Error> {
    match mode {
        AccessMode::Read => unlock_shared(words),
        AccessMode::Write => unlock_exclusive(words, timestamp),
    }
}

/// [`release_held`] on a single node's record, where releasing cannot fail.
pub(crate) fn release(record: &KeyRecord, mode: AccessMode, timestamp: u64) {
    let Ok(()) = release_held(record, mode, timestamp);
}

/// Runs one transaction to its outcome under 2PL and hands it to the sequencer (unless the
/// watchdog abandoned its call, which releases its locks and answers for it).
pub(crate) fn run(mut attempt: Attempt, context: &WorkerContext) -> AttemptEnd {
    loop {
        let entries = attempt.entries();
        let taken =
            lock_in_order(entries.len(), |index| attempt.record(index), |index| entries[index].mode, attempt.timestamp);
        if let Err(not_taken) = taken {
            match not_taken {
                NotTaken::Died => {}
                NotTaken::Failed(never) => match never {},
            }
            attempt.retries += 1;
            pause_before_retry(attempt.retries);
            continue;
        }
        for index in 0..attempt.entries().len() {
            let value = attempt.record(index).load_value();
            attempt.fill(index, value.as_deref().map(Vec::as_slice));
        }
        let Some(outcome) = context.execute_watched(&mut attempt, true) else { return AttemptEnd::Abandoned };
        let writes = attempt.install_writes(&outcome);
        // Reserved with every lock held: see "When locks are released" above.
        let sequence = context.reserve_sequence();
        unlock(&attempt);
        context.hand_over(attempt.finish(sequence, outcome, writes));
        return AttemptEnd::HandedOver;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cc::keys::ResidentKeys;

    #[test]
    fn lock_words_follow_wait_die_and_reset_the_reader_bound() {
        let mut keys = ResidentKeys::new();
        let pointer = keys.insert(b"k", None);
        // SAFETY: `keys` (and so the arena) is alive.
        let record = unsafe { pointer.get() };
        let word = || record.lock_word.load(Ordering::Acquire);
        assert!(lock_shared(record, 8).is_ok());
        assert!(lock_shared(record, 5).is_ok());
        assert_eq!(LockState::of(word()), LockState::Shared { readers: 2 });
        assert_eq!(record.oldest_reader.load(Ordering::Acquire), 5);
        // Younger than the oldest reader: dies instead of waiting.
        assert!(lock_exclusive(record, 9).is_err());
        let Ok(()) = unlock_shared(record);
        assert_eq!(record.oldest_reader.load(Ordering::Acquire), 5, "a lower bound may stay low while readers remain");
        let Ok(()) = unlock_shared(record);
        assert_eq!(word(), 0, "the last reader leaves the word free");
        assert_eq!(record.oldest_reader.load(Ordering::Acquire), u64::MAX, "and resets the bound");

        assert!(lock_exclusive(record, 9).is_ok());
        assert_eq!(LockState::of(word()), LockState::Exclusive { holder: 9 });
        // Younger requesters of either mode die, and a dying reader takes its count back.
        assert!(lock_shared(record, 12).is_err());
        assert!(lock_exclusive(record, 10).is_err());
        assert_eq!(word(), 9 << READER_BITS);
        let Ok(()) = unlock_exclusive(record, 9);
        assert_eq!(word(), 0);
        assert_eq!(record.oldest_reader.load(Ordering::Acquire), u64::MAX);
    }

    #[test]
    fn an_older_requester_waits_and_a_younger_one_dies() {
        assert_eq!(decide(5, Holder::Exclusive(9)), Decision::Wait);
        assert_eq!(decide(9, Holder::Exclusive(5)), Decision::Die);
        assert_eq!(decide(5, Holder::Readers { oldest: 9 }), Decision::Wait);
        assert_eq!(decide(9, Holder::Readers { oldest: 5 }), Decision::Die);
        // Equal ages never wait: waiting must strictly go from older to younger.
        assert_eq!(decide(7, Holder::Exclusive(7)), Decision::Die);
        assert_eq!(decide(7, Holder::Readers { oldest: 7 }), Decision::Die);
        // No reader bound yet ("none") means every requester may wait.
        assert_eq!(decide(TIMESTAMP_MAX, Holder::Readers { oldest: u64::MAX }), Decision::Wait);
        assert_eq!(decide(FIRST_TIMESTAMP, Holder::Maintenance), Decision::Wait);
        assert_eq!(decide(TIMESTAMP_MAX, Holder::Maintenance), Decision::Wait);
    }

    #[test]
    fn waits_only_point_from_older_to_younger_so_they_form_no_cycle() {
        // Every pair of distinct timestamps: at most one of the two may wait for the other.
        for a in FIRST_TIMESTAMP..FIRST_TIMESTAMP + 20 {
            for b in FIRST_TIMESTAMP..FIRST_TIMESTAMP + 20 {
                let a_waits = decide(a, Holder::Exclusive(b)) == Decision::Wait;
                let b_waits = decide(b, Holder::Exclusive(a)) == Decision::Wait;
                assert!(!(a_waits && b_waits), "{a} and {b} would wait for each other");
                assert_eq!(a_waits, a < b);
            }
        }
    }

    #[test]
    fn lock_words_decode_holders_before_transient_readers() {
        assert_eq!(LockState::of(0), LockState::Free);
        assert_eq!(LockState::of(3), LockState::Shared { readers: 3 });
        assert_eq!(LockState::of(42 << READER_BITS), LockState::Exclusive { holder: 42 });
        // A reader backing off from a writer is still counted for a moment.
        assert_eq!(LockState::of((42 << READER_BITS) + 2), LockState::Exclusive { holder: 42 });
        assert_eq!(LockState::of((MAINTENANCE << READER_BITS) + 1), LockState::Maintenance);
        assert_eq!(LockState::of(TIMESTAMP_MAX << READER_BITS), LockState::Exclusive { holder: TIMESTAMP_MAX });
    }

    /// Lock words under real contention: writers move units between two keys holding
    /// both exclusively, readers hold both shared and check the total. A reader seeing a
    /// wrong total, a lost unit or a hang (a wait cycle) fails the test. Not timed.
    #[test]
    fn concurrent_writers_and_readers_stay_isolated_and_finish() {
        use std::sync::atomic::AtomicU64;
        const TOTAL: i64 = 1_000;
        let mut keys = ResidentKeys::new();
        let pointers = [
            keys.insert(b"a", Some(TOTAL.to_le_bytes().to_vec())),
            keys.insert(b"b", Some(0i64.to_le_bytes().to_vec())),
        ];
        let clock = AtomicU64::new(FIRST_TIMESTAMP);
        let value = |record: &KeyRecord| {
            let bytes = record.load_value().expect("present");
            i64::from_le_bytes(bytes.as_slice().try_into().expect("8 bytes"))
        };
        let moved = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let (clock, moved) = (&clock, &moved);
                scope.spawn(move || {
                    // SAFETY: `keys` outlives the scope.
                    let [a, b] = pointers.map(|pointer| unsafe { pointer.get() });
                    for operation in 0..3_000u64 {
                        // A transaction keeps its timestamp across retries.
                        let timestamp = clock.fetch_add(1, Ordering::Relaxed);
                        let write = (operation + thread) % 3 != 0;
                        let lock = |record: &KeyRecord| {
                            if write {
                                lock_exclusive(record, timestamp)
                            } else {
                                lock_shared(record, timestamp)
                            }
                        };
                        let unlock = |record: &KeyRecord| {
                            let released =
                                if write { unlock_exclusive(record, timestamp) } else { unlock_shared(record) };
                            let Ok(()) = released;
                        };
                        loop {
                            if lock(a).is_err() {
                                pause_before_retry(1);
                                continue;
                            }
                            if lock(b).is_err() {
                                unlock(a);
                                pause_before_retry(1);
                                continue;
                            }
                            let (in_a, in_b) = (value(a), value(b));
                            assert_eq!(in_a + in_b, TOTAL, "a transaction saw another one half done");
                            if write {
                                let unit = if in_a > 0 { 1 } else { -1 };
                                a.store_value(Some(&(in_a - unit).to_le_bytes()));
                                b.store_value(Some(&(in_b + unit).to_le_bytes()));
                                moved.fetch_add(1, Ordering::Relaxed);
                            }
                            unlock(b);
                            unlock(a);
                            break;
                        }
                    }
                });
            }
        });
        // SAFETY: `keys` is alive.
        let [a, b] = pointers.map(|pointer| unsafe { pointer.get() });
        assert_eq!(value(a) + value(b), TOTAL);
        assert_eq!(moved.load(Ordering::Relaxed), 4 * 2_000, "every write ran exactly once");
        for record in [a, b] {
            assert_eq!(record.lock_word.load(Ordering::Acquire), 0, "every lock was released");
        }
    }
}
