//! The request ledger: what the node knows about each tracked request id, so that a
//! retry is answered with the original outcome and never runs twice.
//!
//! An id is `Pending` from the moment its transaction enters an epoch until the epoch is
//! durable; a retry arriving meanwhile waits for the same outcome. It is then `Done`,
//! kept in memory for the most recent `capacity` ids; older ones are found in RocksDB's
//! `results` column family, which holds every outcome durably.

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
    done_order: VecDeque<RequestId>,
    capacity: usize,
}

impl Ledger {
    pub fn new(capacity: usize) -> Ledger {
        Ledger { entries: FxHashMap::default(), done_order: VecDeque::new(), capacity }
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

    /// Records a durable outcome found in storage.
    pub fn remember(&mut self, id: RequestId, outcome: Outcome) {
        self.entries.insert(id.clone(), Entry::Done(outcome));
        self.push_done(id);
    }

    /// Completes a running id with its durable outcome; returns the replies that waited.
    pub fn complete(&mut self, id: &RequestId, outcome: &Outcome) -> Vec<Reply> {
        let waiters = match self.entries.insert(id.clone(), Entry::Done(outcome.clone())) {
            Some(Entry::Pending(waiters)) => waiters,
            _ => panic!("completed a request id that was not running"),
        };
        self.push_done(id.clone());
        waiters
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

    fn push_done(&mut self, id: RequestId) {
        self.done_order.push_back(id);
        while self.done_order.len() > self.capacity {
            let Some(oldest) = self.done_order.pop_front() else { break };
            // Only evict finished entries; the outcome is durable in storage.
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
        for waiter in ledger.complete(&id(1), &outcome(1)) {
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
