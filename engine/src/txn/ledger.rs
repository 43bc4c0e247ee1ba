//! The request ledger: what the node knows about each tracked request id, so that a
//! retry is answered with the original outcome and never runs twice.
//!
//! An id is `Pending` from the moment its transaction enters an epoch until the epoch is
//! durable; a retry arriving meanwhile waits for the same outcome. It is then `Done`,
//! kept in memory for at least the most recent `capacity / 2` and at most `capacity`
//! done ids; older ones are found in RocksDB's `results` column family. An id is only
//! forgotten once its epoch is checkpointed, since before that its outcome is only in the
//! epoch log, where lookups do not search.
//!
//! The ids live in two generations of hash maps, each sized up front for half the
//! capacity: new ids go to the current one, and when it holds `capacity / 2` done ids the
//! previous generation is retired whole and the current one becomes the previous. So the
//! maps never grow and never delete one by one. Why: a hash map that grows rehashes every
//! entry at once, and one that deletes leaves tombstones until a full rehash; with a
//! million ids either stalled the epoch driver, and every request in flight, for about
//! 400 ms.
//!
//! The memory of the maps is recycled, never given back ([`Recycler`]): a thread of the
//! ledger's own empties a retired generation (freeing half a million ids and outcomes
//! takes 60-170 ms) and hands it back as the next fresh one, and it touches every page
//! of the first spare before it is needed. Why: a freshly allocated map of 80 MB is
//! mapped lazily, so the first inserts after a turnover each fault a page in, under the
//! ledger's lock. Those faults stalled every request for 130-170 ms at each turnover
//! (every 2.5 s at 200k requests/s), the p99.9 latency of the node.

use super::sessions::{SessionLimits, SessionTable};
use super::Reply;
use crate::model::{Outcome, Rejection, RequestId};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry as MapEntry;

/// A tracked request, running or done (by id here, by number in a session).
pub(super) enum Entry {
    /// Running; the replies of retries that arrived meanwhile wait here.
    Pending(Vec<Reply>),
    Done(Outcome),
}

impl Entry {
    /// Marks a running request done with its durable outcome; returns the replies that
    /// waited for it.
    pub(super) fn complete(&mut self, outcome: &Outcome) -> Vec<Reply> {
        match std::mem::replace(self, Entry::Done(outcome.clone())) {
            Entry::Pending(waiters) => waiters,
            Entry::Done(_) => panic!("completed a tracked request twice"),
        }
    }

    /// What an arriving retry gets: the outcome if done, or a place among the waiters.
    pub(super) fn answer(&mut self, reply: Reply) -> Admission {
        match self {
            Entry::Done(outcome) => Admission::Done(outcome.clone(), reply),
            Entry::Pending(waiters) => {
                waiters.push(reply);
                Admission::Joined
            }
        }
    }
}

/// What the ledger says about an arriving request.
pub enum Admission {
    /// Completed and durable: answer the reply with this outcome.
    Done(Outcome, Reply),
    /// Running in an epoch not yet durable: the reply was queued behind it.
    Joined,
    /// Not in memory, and now started: look in storage ([`Ledger::found_in_storage`] if
    /// it is there), and run it if it is not.
    Started(Reply),
    /// New in its session, and now started: run it (nothing to look up).
    New(Reply),
    /// Refused before it ran (a session request the session cannot take).
    Refused(Rejection, Reply),
}

/// One generation of ids.
#[derive(Default)]
struct Generation {
    entries: FxHashMap<RequestId, Entry>,
    /// Done entries, and running ones.
    done: usize,
    pending: usize,
    /// The newest epoch holding one of its outcomes: the generation may be retired once
    /// that epoch is checkpointed.
    newest_epoch: u64,
}

impl Generation {
    fn sized_for(ids: usize) -> Generation {
        Generation { entries: FxHashMap::with_capacity_and_hasher(ids, Default::default()), ..Default::default() }
    }

    fn mark_done(&mut self, epoch: u64) {
        self.done += 1;
        self.newest_epoch = self.newest_epoch.max(epoch);
    }

    /// Completes `id` if it runs in this generation (one lookup); returns the replies that
    /// waited, or `None` when the id is not here.
    fn complete(&mut self, id: &RequestId, outcome: &Outcome, epoch: u64) -> Option<Vec<Reply>> {
        // The entry is updated in place: the map keeps its own copy of the id.
        let waiters = self.entries.get_mut(id)?.complete(outcome);
        self.pending -= 1;
        self.mark_done(epoch);
        Some(waiters)
    }
}

pub struct Ledger {
    current: Generation,
    previous: Generation,
    capacity: usize,
    checkpointed_epoch: u64,
    recycler: Option<Recycler>,
    /// Turnovers that took the recycler's spare rather than allocating.
    spares_taken: u64,
    /// Requests tracked by session rather than by id.
    pub sessions: SessionTable,
}

/// Generations below this many ids are allocated and dropped in place: recycling them
/// would not pay for its thread.
const RECYCLED_IDS_MIN: usize = 10_000;

impl Ledger {
    /// A ledger that keeps between `capacity / 2` and `capacity` done ids in memory.
    pub fn new(capacity: usize, session_limits: SessionLimits) -> Ledger {
        let recycler = (Self::half(capacity) >= RECYCLED_IDS_MIN).then(|| Recycler::start(capacity));
        Ledger {
            current: Self::fresh_generation(capacity),
            previous: Generation::default(),
            capacity,
            checkpointed_epoch: 0,
            recycler,
            spares_taken: 0,
            sessions: SessionTable::new(session_limits),
        }
    }

    /// An empty generation sized for its share of done ids, and a quarter more for running
    /// ids and for done ids whose epoch is not checkpointed yet.
    fn fresh_generation(capacity: usize) -> Generation {
        Generation::sized_for(Self::generation_ids(capacity))
    }

    fn generation_ids(capacity: usize) -> usize {
        let half = Self::half(capacity);
        half.saturating_add(half / 4)
    }

    fn half(capacity: usize) -> usize {
        (capacity / 2).max(1)
    }

    /// What the ledger knows of an arriving request; an id it does not know is started
    /// (pending) at once, so that a duplicate later in the same batch joins it. One probe
    /// of each generation: the admission of every new id pays for no more.
    pub fn admit(&mut self, id: &RequestId, reply: Reply, now_unix_seconds: u64) -> Admission {
        if let RequestId::Session(position) = id {
            return self.sessions.admit(position, reply, now_unix_seconds);
        }
        assert!(id.is_tracked(), "only tracked requests are admitted");
        let vacant = match self.current.entries.entry(id.clone()) {
            MapEntry::Occupied(occupied) => return occupied.into_mut().answer(reply),
            MapEntry::Vacant(vacant) => vacant,
        };
        if let Some(entry) = self.previous.entries.get_mut(id) {
            return entry.answer(reply);
        }
        vacant.insert(Entry::Pending(Vec::new()));
        self.current.pending += 1;
        Admission::Started(reply)
    }

    /// A started id turned out to be done already: its durable outcome was found in
    /// storage (so it is checkpointed). Returns the replies that joined it meanwhile.
    pub fn found_in_storage(&mut self, id: &RequestId, outcome: Outcome) -> Vec<Reply> {
        let entry = self.current.entries.get_mut(id).expect("found_in_storage of an id that was not started");
        let waiters = match std::mem::replace(entry, Entry::Done(outcome)) {
            Entry::Pending(waiters) => waiters,
            Entry::Done(_) => panic!("found_in_storage of an id that was done"),
        };
        self.current.pending -= 1;
        self.current.mark_done(0);
        self.retire_if_due();
        waiters
    }

    /// Completes a running id with its durable outcome, logged in `epoch`; returns the
    /// replies that waited.
    pub fn complete(&mut self, id: &RequestId, outcome: &Outcome, epoch: u64) -> Vec<Reply> {
        if let RequestId::Session(position) = id {
            return self.sessions.complete(position, outcome);
        }
        let waiters = match self.current.complete(id, outcome, epoch) {
            Some(waiters) => waiters,
            None => self.previous.complete(id, outcome, epoch).expect("completed a request id that was not running"),
        };
        self.retire_if_due();
        waiters
    }

    /// Every epoch up to `epoch` is now in the `results` column family.
    pub fn checkpointed(&mut self, epoch: u64) {
        self.checkpointed_epoch = self.checkpointed_epoch.max(epoch);
        self.retire_if_due();
    }

    /// Forgets a running id whose transaction could not be made durable; returns the
    /// replies that waited.
    pub fn abandon(&mut self, id: &RequestId) -> Vec<Reply> {
        if let RequestId::Session(position) = id {
            return self.sessions.abandon(position);
        }
        for generation in [&mut self.current, &mut self.previous] {
            if let Some(Entry::Pending(_)) = generation.entries.get(id) {
                generation.pending -= 1;
                return match generation.entries.remove(id) {
                    Some(Entry::Pending(waiters)) => waiters,
                    _ => unreachable!("the entry was pending just above"),
                };
            }
        }
        Vec::new()
    }

    /// Retires the previous generation once the current one holds its share of done ids
    /// and every outcome of the previous one is checkpointed (retrievable from storage).
    fn retire_if_due(&mut self) {
        if self.current.done < Self::half(self.capacity) || self.previous.newest_epoch > self.checkpointed_epoch {
            return;
        }
        let spare = self.recycler.as_ref().and_then(Recycler::take_spare);
        self.spares_taken += u64::from(spare.is_some());
        let fresh = spare.unwrap_or_else(|| Self::fresh_generation(self.capacity));
        let mut retired = std::mem::replace(&mut self.previous, std::mem::replace(&mut self.current, fresh));
        // Ids still running (rare: they entered an epoch two generations ago) come along.
        if retired.pending > 0 {
            for (id, entry) in retired.entries.extract_if(|_, entry| matches!(entry, Entry::Pending(_))) {
                self.current.entries.insert(id, entry);
                self.current.pending += 1;
            }
        }
        match &self.recycler {
            Some(recycler) => recycler.recycle(retired),
            None => drop(retired),
        }
    }
}

/// The ledger's thread that empties retired generations and keeps one, its pages
/// resident, as the spare for the next turnover (see the module doc).
struct Recycler {
    retired: crossbeam_channel::Sender<Generation>,
    spares: crossbeam_channel::Receiver<Generation>,
}

impl Recycler {
    fn start(capacity: usize) -> Recycler {
        let (retired_sender, retired) = crossbeam_channel::unbounded::<Generation>();
        let (spare_sender, spares) = crossbeam_channel::bounded::<Generation>(1);
        let spawned = std::thread::Builder::new().name("ledger-recycle".to_string()).spawn(move || {
            let _ = spare_sender.try_send(Self::prefaulted(capacity));
            // Ends when the ledger (the only sender) is dropped.
            let ids = Ledger::generation_ids(capacity);
            for mut generation in retired {
                // The first generation retired is the ledger's empty starting one: a
                // spare must hold a whole generation without growing.
                let emptied = if generation.entries.capacity() >= ids {
                    generation.entries.clear();
                    Generation { entries: generation.entries, ..Generation::default() }
                } else {
                    Self::prefaulted(capacity)
                };
                // A spare is already waiting: this one is freed instead.
                let _ = spare_sender.try_send(emptied);
            }
        });
        if let Err(error) = spawned {
            // Without the thread the ledger still works: it allocates fresh generations
            // and the retired ones are dropped by the channel.
            tracing::warn!(%error, "cannot start the ledger's recycling thread");
        }
        Recycler { retired: retired_sender, spares }
    }

    /// A fresh generation whose table pages have all been written once, so that inserts
    /// into it fault nothing in. Filling the map to its capacity and emptying it is the
    /// portable way to touch every bucket.
    fn prefaulted(capacity: usize) -> Generation {
        let mut generation = Ledger::fresh_generation(capacity);
        let ids = generation.entries.capacity();
        for number in 0..ids as u64 {
            generation.entries.insert(RequestId::Id(number.to_le_bytes().into()), Entry::Pending(Vec::new()));
        }
        generation.entries.clear();
        generation
    }

    fn take_spare(&self) -> Option<Generation> {
        self.spares.try_recv().ok()
    }

    fn recycle(&self, retired: Generation) {
        // If the thread is gone, the send fails and the generation is dropped here.
        let _ = self.retired.send(retired);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Ledger {
        /// Starts `id` without a reply (the tests' shortcut past admission).
        fn start(&mut self, id: RequestId) {
            let (reply, _) = crate::txn::Reply::one();
            assert!(
                matches!(self.admit(&id, reply, 0), Admission::Started(_)),
                "a request id started while the ledger knew it"
            );
        }

        fn len(&self) -> usize {
            self.current.entries.len() + self.previous.entries.len()
        }
    }
    use crate::model::Timestamp;

    const SESSION_LIMITS: SessionLimits =
        SessionLimits { sessions_max: 1, outcomes_per_session_max: 1, outcomes_total_max: 1, idle_expiry_seconds: 1 };

    fn id(n: u8) -> RequestId {
        RequestId::Id(vec![n].into())
    }

    fn outcome(n: u8) -> Outcome {
        Outcome::Committed { timestamp: Timestamp { epoch: n as u64, node: 0, sequence: 0 }, output: vec![n] }
    }

    #[test]
    fn retries_join_then_get_the_first_outcome() {
        let mut ledger = Ledger::new(10, SESSION_LIMITS);
        let (first, _first_rx) = crate::txn::Reply::one();
        let Admission::Started(_) = ledger.admit(&id(1), first, 0) else { panic!("a new id must be started") };
        let (retry, mut retry_rx) = crate::txn::Reply::one();
        assert!(matches!(ledger.admit(&id(1), retry, 0), Admission::Joined));
        for waiter in ledger.complete(&id(1), &outcome(1), 1) {
            waiter.send(Ok(outcome(1)));
        }
        assert_eq!(retry_rx.try_recv().ok().and_then(Result::ok), Some(outcome(1)));
        let (late, _) = crate::txn::Reply::one();
        match ledger.admit(&id(1), late, 0) {
            Admission::Done(found, _) => assert_eq!(found, outcome(1)),
            _ => panic!("completed id must be done"),
        }
    }

    #[test]
    fn outcomes_are_kept_until_their_epoch_is_checkpointed() {
        let mut ledger = Ledger::new(1, SESSION_LIMITS);
        for n in 1..4 {
            ledger.start(id(n));
            ledger.complete(&id(n), &outcome(n), u64::from(n));
        }
        assert_eq!(ledger.len(), 3, "nothing is checkpointed yet");
        ledger.checkpointed(2);
        assert_eq!(ledger.len(), 2, "the oldest generation, checkpointed, went");
        let (reply, _) = crate::txn::Reply::one();
        assert!(matches!(ledger.admit(&id(1), reply, 0), Admission::Started(_)));
        let (reply, _) = crate::txn::Reply::one();
        assert!(matches!(ledger.admit(&id(3), reply, 0), Admission::Done(..)));
    }

    /// Each turnover takes the recycler's spare: the generation retired before, emptied,
    /// whole, and with fresh counters.
    #[test]
    fn turnovers_reuse_emptied_generations() {
        let capacity = 20_000;
        let mut ledger = Ledger::new(capacity, SESSION_LIMITS);
        let mut n = 0u64;
        for turnover in 1..=4u64 {
            // Wait for the recycler's spare (it empties the generation retired last time).
            let waited = std::time::Instant::now();
            while ledger.recycler.as_ref().is_some_and(|recycler| recycler.spares.is_empty()) {
                assert!(waited.elapsed() < std::time::Duration::from_secs(10), "no spare after turnover {turnover}");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let taken = ledger.spares_taken;
            while ledger.spares_taken == taken {
                let id = RequestId::Id(n.to_be_bytes().to_vec().into());
                ledger.start(id.clone());
                let _ = ledger.complete(&id, &outcome(1), n);
                ledger.checkpointed(n);
                n += 1;
            }
            assert_eq!(ledger.spares_taken, turnover);
            assert!(ledger.current.entries.is_empty(), "a spare comes empty");
            assert!(ledger.current.entries.capacity() >= Ledger::generation_ids(capacity), "and whole");
            assert_eq!((ledger.current.done, ledger.current.pending, ledger.current.newest_epoch), (0, 0, 0));
            // What the previous generation holds is still answered.
            let (reply, _) = crate::txn::Reply::one();
            let newest = RequestId::Id((n - 1).to_be_bytes().to_vec().into());
            assert!(matches!(ledger.admit(&newest, reply, 0), Admission::Done(..)));
        }
    }

    /// Growing a hash map rehashes every entry in one go; the ledger's maps never grow
    /// (nor collect tombstones) while it fills and turns over many times, and it keeps
    /// between half its capacity and its capacity.
    #[test]
    fn filling_and_turning_over_never_grows_a_map() {
        let capacity = 20_000;
        let mut ledger = Ledger::new(capacity, SESSION_LIMITS);
        let map_capacity = ledger.current.entries.capacity();
        assert!(map_capacity >= capacity / 2 + capacity / 8, "{map_capacity}");
        for n in 0..(5 * capacity as u64) {
            let id = RequestId::Id(n.to_be_bytes().to_vec().into());
            ledger.start(id.clone());
            assert_eq!(ledger.current.entries.capacity(), map_capacity, "the current map never grew");
            let _ = ledger.complete(&id, &outcome(1), n / 100);
            ledger.checkpointed(n / 100);
            if n >= capacity as u64 {
                assert!((capacity / 2..=capacity).contains(&ledger.len()), "{} ids at {n}", ledger.len());
            }
        }
        let newest = RequestId::Id((5 * capacity as u64 - 1).to_be_bytes().to_vec().into());
        let (reply, _) = crate::txn::Reply::one();
        assert!(matches!(ledger.admit(&newest, reply, 0), Admission::Done(..)));
        let oldest = RequestId::Id(0u64.to_be_bytes().to_vec().into());
        let (reply, _) = crate::txn::Reply::one();
        assert!(matches!(ledger.admit(&oldest, reply, 0), Admission::Started(_)));
    }

    #[test]
    fn old_outcomes_are_evicted_but_running_ids_are_not() {
        let mut ledger = Ledger::new(2, SESSION_LIMITS);
        ledger.start(id(9));
        for n in 0..5 {
            let (reply, _) = crate::txn::Reply::one();
            assert!(matches!(ledger.admit(&id(n), reply, 0), Admission::Started(_)));
            assert!(ledger.found_in_storage(&id(n), outcome(n)).is_empty());
        }
        // Generations of one done id each: the newest survives, the running id moved
        // along with every retirement.
        assert_eq!(ledger.len(), 2, "the newest done id and the running one");
        let (reply, _) = crate::txn::Reply::one();
        assert!(matches!(ledger.admit(&id(4), reply, 0), Admission::Done(..)));
        let (reply, _) = crate::txn::Reply::one();
        assert!(matches!(ledger.admit(&id(0), reply, 0), Admission::Started(_)));
        let (reply, _) = crate::txn::Reply::one();
        assert!(matches!(ledger.admit(&id(9), reply, 0), Admission::Joined));
    }
}
