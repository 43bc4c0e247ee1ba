//! The request ledger: what the node knows about each tracked request id, so that a
//! retry is answered with the original outcome and never runs twice.
//!
//! An id is `Pending` from the moment its transaction enters an epoch until the epoch is
//! durable; a retry arriving meanwhile waits for the same outcome. It is then `Done`,
//! kept in memory for the most recent `capacity` ids; older ones are found in RocksDB's
//! `results` column family. An id is only forgotten once its epoch is checkpointed, since
//! before that its outcome is only in the epoch log, where lookups do not search.

use super::Reply;
use crate::model::{Outcome, RequestId};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

enum Entry {
    Pending(Vec<Reply>),
    Done(Outcome),
}

/// What the ledger says about an arriving request.
pub enum Lookup {
    /// Completed and durable: answer the reply with this outcome.
    Done(Outcome, Reply),
    /// Running in an epoch not yet durable: the reply was queued behind it.
    Joined,
    /// Not in memory: look in storage, then run it if it is not there either.
    Unknown(Reply),
}

pub struct Ledger {
    entries: FxHashMap<RequestId, Entry>,
    /// Done ids in completion order, with the epoch that holds their outcome.
    done_order: VecDeque<(RequestId, u64)>,
    capacity: usize,
    checkpointed_epoch: u64,
}

impl Ledger {
    pub fn new(capacity: usize) -> Ledger {
        Ledger { entries: FxHashMap::default(), done_order: VecDeque::new(), capacity, checkpointed_epoch: 0 }
    }

    pub fn lookup(&mut self, id: &RequestId, reply: Reply) -> Lookup {
        match self.entries.get_mut(id) {
            Some(Entry::Done(outcome)) => Lookup::Done(outcome.clone(), reply),
            Some(Entry::Pending(waiters)) => {
                waiters.push(reply);
                Lookup::Joined
            }
            None => Lookup::Unknown(reply),
        }
    }

    /// Records that `id` is about to run.
    pub fn start(&mut self, id: RequestId) {
        let previous = self.entries.insert(id, Entry::Pending(Vec::new()));
        assert!(previous.is_none(), "a request id started while the ledger knew it");
    }

    /// Records a durable outcome found in storage (so already checkpointed).
    pub fn remember(&mut self, id: RequestId, outcome: Outcome) {
        self.entries.insert(id.clone(), Entry::Done(outcome));
        self.push_done(id, 0);
    }

    /// Completes a running id with its durable outcome, logged in `epoch`; returns the
    /// replies that waited.
    pub fn complete(&mut self, id: &RequestId, outcome: &Outcome, epoch: u64) -> Vec<Reply> {
        // The entry is updated in place: the map keeps its own copy of the id.
        let entry = self.entries.get_mut(id).expect("completed a request id that was not running");
        let waiters = match std::mem::replace(entry, Entry::Done(outcome.clone())) {
            Entry::Pending(waiters) => waiters,
            Entry::Done(_) => panic!("completed a request id twice"),
        };
        self.push_done(id.clone(), epoch);
        waiters
    }

    /// Every epoch up to `epoch` is now in the `results` column family.
    pub fn checkpointed(&mut self, epoch: u64) {
        self.checkpointed_epoch = self.checkpointed_epoch.max(epoch);
        self.evict();
    }

    /// Forgets a running id whose transaction could not be made durable; returns the
    /// replies that waited.
    pub fn abandon(&mut self, id: &RequestId) -> Vec<Reply> {
        match self.entries.remove(id) {
            Some(Entry::Pending(waiters)) => waiters,
            Some(done @ Entry::Done(_)) => {
                self.entries.insert(id.clone(), done);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    fn push_done(&mut self, id: RequestId, epoch: u64) {
        self.done_order.push_back((id, epoch));
        self.evict();
    }

    fn evict(&mut self) {
        while self.done_order.len() > self.capacity {
            match self.done_order.front() {
                Some((_, epoch)) if *epoch <= self.checkpointed_epoch => {}
                _ => break,
            }
            let Some((oldest, _)) = self.done_order.pop_front() else { break };
            // Only evict finished entries; a retry finds the outcome in storage.
            if matches!(self.entries.get(&oldest), Some(Entry::Done(_))) {
                self.entries.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
impl Ledger {
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn id(n: u8) -> RequestId {
        RequestId(vec![n].into())
    }

    fn outcome(n: u8) -> Outcome {
        Outcome::Committed { timestamp: Timestamp { epoch: n as u64, node: 0, sequence: 0 }, output: vec![n] }
    }

    #[test]
    fn retries_join_then_get_the_first_outcome() {
        let mut ledger = Ledger::new(10);
        let (first, _first_rx) = tokio::sync::oneshot::channel();
        let Lookup::Unknown(_) = ledger.lookup(&id(1), first) else { panic!("new id must be unknown") };
        ledger.start(id(1));
        let (retry, mut retry_rx) = tokio::sync::oneshot::channel();
        assert!(matches!(ledger.lookup(&id(1), retry), Lookup::Joined));
        for waiter in ledger.complete(&id(1), &outcome(1), 1) {
            let _ = waiter.send(Ok(outcome(1)));
        }
        assert_eq!(retry_rx.try_recv().ok().and_then(Result::ok), Some(outcome(1)));
        let (late, _) = tokio::sync::oneshot::channel();
        match ledger.lookup(&id(1), late) {
            Lookup::Done(found, _) => assert_eq!(found, outcome(1)),
            _ => panic!("completed id must be done"),
        }
    }

    #[test]
    fn outcomes_are_kept_until_their_epoch_is_checkpointed() {
        let mut ledger = Ledger::new(1);
        for n in 1..4 {
            ledger.start(id(n));
            ledger.complete(&id(n), &outcome(n), u64::from(n));
        }
        assert_eq!(ledger.len(), 3, "nothing is checkpointed yet");
        ledger.checkpointed(2);
        assert_eq!(ledger.len(), 1, "ids of checkpointed epochs may go");
        let (reply, _) = tokio::sync::oneshot::channel();
        assert!(matches!(ledger.lookup(&id(3), reply), Lookup::Done(..)));
    }

    #[test]
    fn old_outcomes_are_evicted_but_running_ids_are_not() {
        let mut ledger = Ledger::new(2);
        ledger.start(id(9));
        for n in 0..5 {
            ledger.remember(id(n), outcome(n));
        }
        assert_eq!(ledger.len(), 3);
        let (reply, _) = tokio::sync::oneshot::channel();
        assert!(matches!(ledger.lookup(&id(0), reply), Lookup::Unknown(_)));
        let (reply, _) = tokio::sync::oneshot::channel();
        assert!(matches!(ledger.lookup(&id(9), reply), Lookup::Joined));
    }
}
