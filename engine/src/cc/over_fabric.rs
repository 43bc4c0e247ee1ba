//! One transaction under 2PL or OCC over record slots in fabric memory
//! (`fabric_records`): the baselines of a cluster (`cc = "2pl" | "occ"` with a cluster
//! file). Each declared key is a slot in its holder's record region, reached through a
//! [`RemoteRegion`] (the holder's own `LocalRegion` for keys held here), so that locks are
//! taken with fabric CAS and fetch-add and values are read and written one-sidedly.
//!
//! The protocols are the single-node ones (`twopl`, `occ`) on the slot's words; what
//! differs is what an attempt leaves behind: the values it installed with their write
//! versions ([`Installed`]), which the node sends to each key's holder at the end of the
//! epoch, so that the holder logs the newest of them. Locks are released when the
//! transaction installs, as on a single node: its reply and those of everything that saw
//! its writes wait until the whole epoch is durable on every node, and a crash rolls the
//! cluster back to an epoch durable everywhere (see `cluster::baseline`).
//!
//! Every wait (a lock held by an older transaction, a value being installed) gives up
//! once `cancelled` is set: the holder of the lock may be on a node that died, and the
//! new view fences the old regions off anyway.

use super::fabric_records::{take_commit_number, RecordError, RecordSlot};
use super::twopl::{self, LockWords, NotTaken};
use super::{occ, pause_before_retry};
use crate::model::Outcome;
use crate::storage::Slot;
use crate::txn::access::AccessMode;
use crate::txn::executor::{execute, now_us, Claim};
use crate::txn::PreparedTransaction;
use leasehold_fabric::RemoteRegion;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Which baseline protocol runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    TwoPhaseLocking,
    Optimistic,
}

/// A value a committed transaction installed in the slot of its access number `access`,
/// with the write version it installed (2PL: the slot's write version; OCC: its version
/// word after the install). A key's newest install has the highest version.
#[derive(Debug, PartialEq, Eq)]
pub struct Installed {
    pub(crate) access: usize,
    pub(crate) version: u64,
    pub(crate) value: Option<Vec<u8>>,
}

/// How a transaction ended: its outcome, its commit number in the epoch (see
/// `fabric_records::take_commit_number`), what it installed, and how many times it ran
/// again after a concurrency abort.
pub struct Ran {
    pub(crate) outcome: Outcome,
    pub(crate) commit_number: u32,
    pub(crate) installed: Vec<Installed>,
    pub(crate) retries: u64,
}

/// A slot whose lock operations give up once the view changed.
struct Guarded<'a> {
    slot: RecordSlot<'a>,
    cancelled: &'a AtomicBool,
}

impl Guarded<'_> {
    fn check(&self) -> Result<(), RecordError> {
        if self.cancelled.load(Ordering::Acquire) {
            return Err(RecordError::Cancelled);
        }
        Ok(())
    }
}

impl LockWords for Guarded<'_> {
    type Error = RecordError;

    fn compare_exchange(&self, current: u64, new: u64) -> Result<Result<u64, u64>, RecordError> {
        self.check()?;
        Ok(self.slot.compare_exchange(current, new)?)
    }

    fn fetch_add(&self, delta: u64) -> Result<u64, RecordError> {
        Ok(self.slot.fetch_add(delta)?)
    }

    fn load(&self) -> Result<u64, RecordError> {
        self.check()?;
        Ok(self.slot.load()?)
    }

    fn oldest_reader(&self) -> Result<u64, RecordError> {
        Ok(self.slot.oldest_reader()?)
    }

    fn lower_oldest_reader(&self, timestamp: u64) -> Result<(), RecordError> {
        Ok(self.slot.lower_oldest_reader(timestamp)?)
    }

    fn clear_oldest_reader(&self) -> Result<(), RecordError> {
        Ok(self.slot.clear_oldest_reader()?)
    }
}

/// Where a transaction takes its commit number: the commit counter's region (node 0's
/// record region) and the epoch.
pub(crate) struct CommitCounter<'a> {
    pub(crate) region: &'a dyn RemoteRegion,
    pub(crate) epoch: u64,
}

impl CommitCounter<'_> {
    fn take(&self) -> Result<u32, RecordError> {
        take_commit_number(self.region, self.epoch)
    }
}

/// How the driver watches a transaction's plugin calls, so that it can abandon one that
/// does not return (`plugin_call_abandon_ms`): the claim the executor thread and the
/// driver race for, and when the running call started (0: none running). The driver
/// abandons only a call that is running, so under 2PL it knows the transaction holds
/// every lock, and it releases them itself.
pub(crate) struct CallWatch<'a> {
    pub(crate) claim: Option<&'a Claim>,
    pub(crate) started_us: &'a AtomicU64,
}

impl CallWatch<'_> {
    /// Runs the plugin; `None` when the driver abandoned the call meanwhile.
    fn execute(&self, prepared: &PreparedTransaction) -> Option<Outcome> {
        if let Some(claim) = self.claim {
            claim.rearm();
        }
        self.started_us.store(now_us(), Ordering::Release);
        let outcome = execute(prepared, self.claim);
        self.started_us.store(0, Ordering::Release);
        outcome
    }
}

/// Runs `prepared` (whose slots point at `copies`, one private copy per declared key) on
/// the keys' record `slots` until it has an outcome (`None`: the driver abandoned its
/// plugin call and answers for it). A fabric failure or a cancellation ends it with an
/// error; a failure while installing may leave part of its writes in the slots (see the
/// note on fabric failures in `cluster::driver::baseline`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    protocol: Protocol,
    prepared: &PreparedTransaction,
    copies: &[Slot],
    slots: &[RecordSlot<'_>],
    timestamp: u64,
    counter: &CommitCounter<'_>,
    call: &CallWatch<'_>,
    cancelled: &AtomicBool,
) -> Result<Option<Ran>, RecordError> {
    assert_eq!(copies.len(), slots.len(), "one private copy per record slot");
    assert_eq!(slots.len(), prepared.planned.accesses.len(), "one record slot per declared key");
    match protocol {
        Protocol::TwoPhaseLocking => run_two_phase(prepared, copies, slots, timestamp, counter, call, cancelled),
        Protocol::Optimistic => run_optimistic(prepared, copies, slots, counter, call, cancelled),
    }
}

fn modes(prepared: &PreparedTransaction) -> impl Iterator<Item = AccessMode> + '_ {
    prepared.planned.accesses.entries().iter().map(|entry| entry.mode)
}

/// The values a committed run left in its private copies, for every key declared for
/// writing (written or not, as the lease protocol stages them).
fn written_values(prepared: &PreparedTransaction, copies: &[Slot]) -> Vec<(usize, Option<Vec<u8>>)> {
    modes(prepared)
        .enumerate()
        .filter(|(_, mode)| *mode == AccessMode::Write)
        // SAFETY: the run returned; only this thread uses its copies.
        .map(|(index, _)| (index, unsafe { copies[index].value() }.map(<[u8]>::to_vec)))
        .collect()
}

fn run_two_phase(
    prepared: &PreparedTransaction,
    copies: &[Slot],
    slots: &[RecordSlot<'_>],
    timestamp: u64,
    counter: &CommitCounter<'_>,
    call: &CallWatch<'_>,
    cancelled: &AtomicBool,
) -> Result<Option<Ran>, RecordError> {
    let guarded: Vec<Guarded<'_>> = slots.iter().map(|&slot| Guarded { slot, cancelled }).collect();
    let modes: Vec<AccessMode> = modes(prepared).collect();
    let mut retries = 0u64;
    loop {
        // Every lock in access-set order. A release that fails leaves its lock to the
        // region, which the next view replaces.
        match twopl::lock_in_order(guarded.len(), |index| &guarded[index], |index| modes[index], timestamp) {
            Ok(()) => {}
            Err(NotTaken::Died) => {
                retries += 1;
                pause_before_retry(retries);
                continue;
            }
            Err(NotTaken::Failed(error)) => return Err(error),
        }
        let result = run_locked(prepared, copies, slots, counter, call);
        if let Ok(None) = result {
            // Abandoned: the driver released the locks and answered.
            return Ok(None);
        }
        for (words, mode) in guarded.iter().zip(&modes) {
            let _ = twopl::release_held(words, *mode, timestamp);
        }
        let (outcome, commit_number, installed) = result?.expect("not abandoned: checked above");
        return Ok(Some(Ran { outcome, commit_number, installed, retries }));
    }
}

/// 2PL's part under every lock: read, run, take the commit number, install.
fn run_locked(
    prepared: &PreparedTransaction,
    copies: &[Slot],
    slots: &[RecordSlot<'_>],
    counter: &CommitCounter<'_>,
    call: &CallWatch<'_>,
) -> Result<Option<(Outcome, u32, Vec<Installed>)>, RecordError> {
    let mut versions = Vec::with_capacity(slots.len());
    for (slot, copy) in slots.iter().zip(copies) {
        let (value, version) = slot.read_locked()?;
        // SAFETY: the copies belong to this run alone; no reference into them is alive.
        unsafe { copy.set(value.as_deref()) };
        versions.push(version);
    }
    let Some(outcome) = call.execute(prepared) else { return Ok(None) };
    let commit_number = counter.take()?;
    let mut installed = Vec::new();
    if outcome.is_committed() {
        for (access, value) in written_values(prepared, copies) {
            let version = versions[access] + 1;
            slots[access].install_locked(version, value.as_deref())?;
            installed.push(Installed { access, version, value });
        }
    }
    Ok(Some((outcome, commit_number, installed)))
}

fn run_optimistic(
    prepared: &PreparedTransaction,
    copies: &[Slot],
    slots: &[RecordSlot<'_>],
    counter: &CommitCounter<'_>,
    call: &CallWatch<'_>,
    cancelled: &AtomicBool,
) -> Result<Option<Ran>, RecordError> {
    let writes: Vec<usize> =
        modes(prepared).enumerate().filter(|(_, mode)| *mode == AccessMode::Write).map(|(index, _)| index).collect();
    let mut versions = vec![0u64; slots.len()];
    let mut retries = 0u64;
    loop {
        for ((slot, copy), version) in slots.iter().zip(copies).zip(versions.iter_mut()) {
            let (value, read) = slot.read_consistent(cancelled)?;
            // SAFETY: as in `run_locked`.
            unsafe { copy.set(value.as_deref()) };
            *version = read;
        }
        let Some(outcome) = call.execute(prepared) else { return Ok(None) };
        // An aborted run installs nothing, but its outcome rests on its reads as well:
        // they are validated all the same, with no write set locked.
        let locking: &[usize] = if outcome.is_committed() { &writes } else { &[] };
        let mut locked = 0;
        let mut failure = None;
        for &index in locking {
            match slots[index].lock_version(versions[index]) {
                Ok(true) => locked += 1,
                Ok(false) => break,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let unlock = |count: usize| {
            for &index in &locking[..count] {
                let _ = slots[index].unlock_version(versions[index]);
            }
        };
        if let Some(error) = failure {
            unlock(locked);
            return Err(error);
        }
        if locked < locking.len() {
            unlock(locked);
            retries += 1;
            pause_before_retry(retries);
            continue;
        }
        // Taken with the write set locked and before validation, as on a single node.
        let commit_number = match counter.take() {
            Ok(number) => number,
            Err(error) => {
                unlock(locked);
                return Err(error);
            }
        };
        let mut read_set = Vec::with_capacity(slots.len());
        for index in (0..slots.len()).filter(|index| locking.binary_search(index).is_err()) {
            match slots[index].version_word() {
                Ok(now) => read_set.push((versions[index], now)),
                Err(error) => {
                    unlock(locked);
                    return Err(error);
                }
            }
        }
        if occ::validate(read_set).is_err() {
            unlock(locked);
            retries += 1;
            pause_before_retry(retries);
            continue;
        }
        let mut installed = Vec::with_capacity(locking.len());
        let values = if outcome.is_committed() { written_values(prepared, copies) } else { Vec::new() };
        for (access, value) in values {
            slots[access].install(versions[access], value.as_deref())?;
            installed.push(Installed { access, version: versions[access] + 1, value });
        }
        return Ok(Some(Ran { outcome, commit_number, installed, retries }));
    }
}
