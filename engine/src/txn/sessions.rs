//! Client sessions: exactly-once requests without a lookup per request.
//!
//! A client opens a session and numbers its requests 1, 2, 3, ...; with each request it
//! says which is the lowest number it has no answer for (`first_unanswered`). The node
//! keeps, per session, the outcome of every request from that number on, so:
//! - a retry finds its outcome (or joins the running request) in memory;
//! - a request the session has not seen is new, without asking storage: the session
//!   holds every outcome the client may still ask for, in memory and, after a restart,
//!   from the `sessions` column family;
//! - memory stays bounded by what clients have in flight: acknowledged outcomes are
//!   dropped as soon as a request says so, a session holds at most
//!   `outcomes_per_session_max` of them and all sessions together at most
//!   `outcomes_total_max`.
//!
//! This is the design of RIFL (Lee et al., SOSP 2015) and of Raft's client sessions. Why
//! not request ids alone: an id the node has not seen in memory must be looked up in
//! storage before it runs (it may be a retry of a forgotten one), and every outcome is
//! stored under its id. Measured on one node (banking, 2 cores): tracked ids halved the
//! throughput of untracked requests and doubled their p99 (benches/RESULTS.md).
//!
//! The table is a pure, synchronous structure: the clock comes in as an argument.

use super::ledger::{Admission, Entry};
use super::Reply;
use crate::model::{Outcome, Rejection, SessionPosition};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;

struct Session {
    /// Outcomes below this number are acknowledged and forgotten.
    first_unanswered: u64,
    /// The session's requests from `first_unanswered` on (and running ones below it,
    /// until they finish).
    entries: BTreeMap<u64, Entry>,
    last_used_unix_seconds: u64,
}

impl Session {
    fn new(first_unanswered: u64, now_unix_seconds: u64) -> Session {
        Session { first_unanswered, entries: BTreeMap::new(), last_used_unix_seconds: now_unix_seconds }
    }

    /// Forgets the outcomes below `first_unanswered` (the client has them).
    fn acknowledge(&mut self, first_unanswered: u64) {
        if first_unanswered <= self.first_unanswered {
            return;
        }
        self.first_unanswered = first_unanswered;
        let kept = self.entries.split_off(&first_unanswered);
        let acknowledged = std::mem::replace(&mut self.entries, kept);
        // A running request stays until it finishes (its reply still needs sending).
        for (sequence, entry) in acknowledged {
            if let Entry::Pending(_) = entry {
                self.entries.insert(sequence, entry);
            }
        }
    }
}

/// A session as stored: what survives a restart.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSession {
    pub session: u64,
    pub first_unanswered: u64,
    pub last_used_unix_seconds: u64,
    /// Outcomes from `first_unanswered` on, by sequence number.
    pub outcomes: Vec<(u64, Outcome)>,
}

/// Limits of the table, from the node's configuration.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    pub sessions_max: usize,
    pub outcomes_per_session_max: usize,
    /// Over all sessions: what bounds the table's memory whatever the clients do.
    pub outcomes_total_max: usize,
    pub idle_expiry_seconds: u64,
}

/// The open sessions of a node.
pub struct SessionTable {
    sessions: FxHashMap<u64, Session>,
    limits: SessionLimits,
    /// When admission next drops idle sessions.
    next_expiry_unix_seconds: u64,
    /// Entries (running and done) of all sessions together.
    entries_total: usize,
}

/// How often admission looks for idle sessions.
const EXPIRY_INTERVAL_SECONDS: u64 = 60;

impl SessionTable {
    pub fn new(limits: SessionLimits) -> SessionTable {
        SessionTable { sessions: FxHashMap::default(), limits, next_expiry_unix_seconds: 0, entries_total: 0 }
    }

    /// Whether one more session may be opened (after dropping idle ones).
    pub fn has_room(&mut self, now_unix_seconds: u64) -> Result<(), Rejection> {
        if self.sessions.len() >= self.limits.sessions_max {
            self.expire_idle(now_unix_seconds);
        }
        if self.sessions.len() >= self.limits.sessions_max {
            return Err(Rejection::TooManySessions(self.sessions.len()));
        }
        Ok(())
    }

    /// Adds a session just opened (and stored).
    pub fn open(&mut self, session: u64, now_unix_seconds: u64) {
        let previous = self.sessions.insert(session, Session::new(1, now_unix_seconds));
        assert!(previous.is_none(), "session numbers are never reused");
    }

    /// Adds a session read back from storage at start.
    pub fn restore(&mut self, stored: StoredSession) {
        let mut session = Session::new(stored.first_unanswered, stored.last_used_unix_seconds);
        for (sequence, outcome) in stored.outcomes {
            if sequence >= stored.first_unanswered {
                session.entries.insert(sequence, Entry::Done(outcome));
            }
        }
        self.entries_total += session.entries.len();
        let previous = self.sessions.insert(stored.session, session);
        assert!(previous.is_none(), "storage holds each session once");
    }

    /// What to do with an arriving request of a session. A new request is started
    /// (pending) at once, so that a duplicate later in the same batch joins it; it is
    /// [`Admission::New`], never `Started`: there is nothing to look up.
    pub fn admit(&mut self, position: &SessionPosition, reply: Reply, now_unix_seconds: u64) -> Admission {
        if now_unix_seconds >= self.next_expiry_unix_seconds {
            self.next_expiry_unix_seconds = now_unix_seconds.saturating_add(EXPIRY_INTERVAL_SECONDS);
            self.expire_idle(now_unix_seconds);
        }
        let Some(session) = self.sessions.get_mut(&position.session) else {
            return Admission::Refused(Rejection::UnknownSession(position.session), reply);
        };
        session.last_used_unix_seconds = now_unix_seconds;
        if position.sequence < session.first_unanswered {
            let rejection = Rejection::SequenceAcknowledged {
                session: position.session,
                sequence: position.sequence,
                first_unanswered: session.first_unanswered,
            };
            return Admission::Refused(rejection, reply);
        }
        // A request never acknowledges itself: its own answer is still to come.
        let held = session.entries.len();
        session.acknowledge(position.first_unanswered.min(position.sequence));
        self.entries_total -= held - session.entries.len();
        if let Some(entry) = session.entries.get_mut(&position.sequence) {
            return entry.answer(reply);
        }
        if session.entries.len() >= self.limits.outcomes_per_session_max
            || self.entries_total >= self.limits.outcomes_total_max
        {
            let rejection = Rejection::SessionFull { session: position.session, held: session.entries.len() };
            return Admission::Refused(rejection, reply);
        }
        session.entries.insert(position.sequence, Entry::Pending(Vec::new()));
        self.entries_total += 1;
        Admission::New(reply)
    }

    /// Completes a running request with its durable outcome; returns the replies that
    /// waited.
    pub fn complete(&mut self, position: &SessionPosition, outcome: &Outcome) -> Vec<Reply> {
        let session = self.sessions.get_mut(&position.session).expect("a running request's session is open");
        let acknowledged = position.sequence < session.first_unanswered;
        let entry = session.entries.get_mut(&position.sequence).expect("completed a request that was not running");
        let waiters = entry.complete(outcome);
        if acknowledged {
            session.entries.remove(&position.sequence);
            self.entries_total -= 1;
        }
        waiters
    }

    /// Forgets a running request that could not be made durable; returns the replies
    /// that waited.
    pub fn abandon(&mut self, position: &SessionPosition) -> Vec<Reply> {
        let Some(session) = self.sessions.get_mut(&position.session) else { return Vec::new() };
        match session.entries.get(&position.sequence) {
            Some(Entry::Pending(_)) => match session.entries.remove(&position.sequence) {
                Some(Entry::Pending(waiters)) => {
                    self.entries_total -= 1;
                    waiters
                }
                _ => unreachable!("the entry was pending just above"),
            },
            _ => Vec::new(),
        }
    }

    /// Drops sessions idle for longer than the expiry that have nothing running; returns
    /// how many.
    pub fn expire_idle(&mut self, now_unix_seconds: u64) -> usize {
        let before = self.sessions.len();
        let expiry = self.limits.idle_expiry_seconds;
        let mut entries_dropped = 0;
        self.sessions.retain(|_, session| {
            let kept = now_unix_seconds.saturating_sub(session.last_used_unix_seconds) <= expiry
                || session.entries.values().any(|entry| matches!(entry, Entry::Pending(_)));
            if !kept {
                entries_dropped += session.entries.len();
            }
            kept
        });
        self.entries_total -= entries_dropped;
        before - self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn limits() -> SessionLimits {
        SessionLimits { sessions_max: 4, outcomes_per_session_max: 8, outcomes_total_max: 12, idle_expiry_seconds: 100 }
    }

    fn position(session: u64, sequence: u64, first_unanswered: u64) -> SessionPosition {
        SessionPosition { session, sequence, first_unanswered }
    }

    fn outcome(n: u8) -> Outcome {
        Outcome::Committed { timestamp: Timestamp { epoch: u64::from(n), node: 0, sequence: 0 }, output: vec![n] }
    }

    fn reply() -> Reply {
        Reply::one().0
    }

    #[track_caller]
    fn admit_new(table: &mut SessionTable, at: SessionPosition) {
        assert!(matches!(table.admit(&at, reply(), 0), Admission::New(_)), "{at:?} must be new");
    }

    #[test]
    fn retries_join_then_get_the_first_outcome() {
        let mut table = SessionTable::new(limits());
        table.open(7, 0);
        admit_new(&mut table, position(7, 1, 1));
        assert!(matches!(table.admit(&position(7, 1, 1), reply(), 0), Admission::Joined));
        let waiters = table.complete(&position(7, 1, 1), &outcome(1));
        assert_eq!(waiters.len(), 1, "the retry waited for the first outcome");
        match table.admit(&position(7, 1, 1), reply(), 0) {
            Admission::Done(found, _) => assert_eq!(found, outcome(1)),
            _ => panic!("a retry of a done request gets its outcome"),
        }
    }

    #[test]
    fn unknown_sessions_and_acknowledged_sequences_are_refused() {
        let mut table = SessionTable::new(limits());
        assert!(matches!(
            table.admit(&position(9, 1, 1), reply(), 0),
            Admission::Refused(Rejection::UnknownSession(9), _)
        ));
        table.open(9, 0);
        admit_new(&mut table, position(9, 1, 1));
        table.complete(&position(9, 1, 1), &outcome(1));
        admit_new(&mut table, position(9, 2, 2));
        // The client said it has the answer of 1: a request numbered 1 is a client bug.
        assert!(matches!(
            table.admit(&position(9, 1, 1), reply(), 0),
            Admission::Refused(Rejection::SequenceAcknowledged { sequence: 1, first_unanswered: 2, .. }, _)
        ));
    }

    #[test]
    fn acknowledged_outcomes_are_forgotten_but_running_ones_finish() {
        let mut table = SessionTable::new(limits());
        table.open(1, 0);
        for sequence in 1..=3 {
            admit_new(&mut table, position(1, sequence, 1));
        }
        table.complete(&position(1, 1, 1), &outcome(1));
        // A buggy client acknowledges 2 while it still runs: it finishes all the same.
        admit_new(&mut table, position(1, 4, 3));
        let waiters = table.complete(&position(1, 2, 1), &outcome(2));
        assert!(waiters.is_empty());
        let session = &table.sessions[&1];
        assert_eq!(session.entries.keys().copied().collect::<Vec<_>>(), vec![3, 4], "1 and 2 are forgotten");
    }

    #[test]
    fn a_session_holds_a_bounded_number_of_outcomes() {
        let mut table = SessionTable::new(limits());
        table.open(1, 0);
        for sequence in 1..=8 {
            admit_new(&mut table, position(1, sequence, 1));
        }
        assert!(matches!(
            table.admit(&position(1, 9, 1), reply(), 0),
            Admission::Refused(Rejection::SessionFull { held: 8, .. }, _)
        ));
        for sequence in 1..=8 {
            table.complete(&position(1, sequence, 1), &outcome(sequence as u8));
        }
        // Acknowledging makes room.
        admit_new(&mut table, position(1, 9, 5));
    }

    #[test]
    fn all_sessions_together_hold_a_bounded_number_of_outcomes() {
        let mut table = SessionTable::new(limits());
        table.open(1, 0);
        table.open(2, 0);
        for sequence in 1..=8 {
            admit_new(&mut table, position(1, sequence, 1));
        }
        for sequence in 1..=4 {
            admit_new(&mut table, position(2, sequence, 1));
        }
        // Session 2 holds only 4 of its 8, but the node holds 12 of 12.
        assert!(matches!(
            table.admit(&position(2, 5, 1), reply(), 0),
            Admission::Refused(Rejection::SessionFull { session: 2, held: 4 }, _)
        ));
        for sequence in 1..=8 {
            table.complete(&position(1, sequence, 1), &outcome(sequence as u8));
        }
        // Session 1 acknowledging its answers makes room for session 2.
        admit_new(&mut table, position(1, 9, 9));
        admit_new(&mut table, position(2, 5, 1));
        assert_eq!(table.entries_total, 6, "1 of session 1 and 5 of session 2");
        assert_eq!(table.abandon(&position(2, 5, 1)).len(), 0);
        assert_eq!(table.expire_idle(1_000), 0, "sessions with running requests stay");
        assert_eq!(table.entries_total, 5);
    }

    #[test]
    fn idle_sessions_expire_unless_something_runs() {
        let mut table = SessionTable::new(limits());
        table.open(1, 0);
        table.open(2, 0);
        table.open(3, 50);
        admit_new(&mut table, position(2, 1, 1));
        assert_eq!(table.expire_idle(120), 1, "session 1 is idle; 2 runs a request; 3 is recent");
        assert!(matches!(
            table.admit(&position(1, 1, 1), reply(), 120),
            Admission::Refused(Rejection::UnknownSession(1), _)
        ));
        table.open(4, 120);
        table.open(5, 120);
        assert_eq!(table.has_room(120), Err(Rejection::TooManySessions(4)));
        assert!(table.has_room(400).is_ok(), "idle sessions make room");
    }

    #[test]
    fn restored_sessions_answer_retries_and_keep_their_acknowledgement() {
        let mut table = SessionTable::new(limits());
        table.restore(StoredSession {
            session: 5,
            first_unanswered: 3,
            last_used_unix_seconds: 0,
            outcomes: vec![(3, outcome(3)), (5, outcome(5))],
        });
        assert!(
            matches!(table.admit(&position(5, 5, 3), reply(), 0), Admission::Done(found, _) if found == outcome(5))
        );
        admit_new(&mut table, position(5, 4, 3));
        assert!(matches!(table.admit(&position(5, 2, 2), reply(), 0), Admission::Refused(..)));
    }

    #[test]
    fn abandoned_requests_may_run_again() {
        let mut table = SessionTable::new(limits());
        table.open(1, 0);
        admit_new(&mut table, position(1, 1, 1));
        assert!(matches!(table.admit(&position(1, 1, 1), reply(), 0), Admission::Joined));
        assert_eq!(table.abandon(&position(1, 1, 1)).len(), 1);
        admit_new(&mut table, position(1, 1, 1));
    }
}
