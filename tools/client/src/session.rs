//! Numbering the requests of a client session (see `openSession` in `leasehold.capnp`).

use crate::types::{Invocation, SessionPosition};
use std::collections::BTreeSet;

/// Gives the requests of one session their numbers and tells the node, with each, the
/// lowest number still unanswered, so that the node can forget the outcomes the client
/// has. Call [`SessionNumbers::answered`] for every answer received (whatever it was);
/// a request to be retried keeps its position: send the same invocation again.
#[derive(Debug)]
pub struct SessionNumbers {
    session: u64,
    next: u64,
    unanswered: BTreeSet<u64>,
}

impl SessionNumbers {
    /// Numbers for `session`, as [`crate::Client::open_session`] returned it.
    pub fn new(session: u64) -> SessionNumbers {
        SessionNumbers { session, next: 1, unanswered: BTreeSet::new() }
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    /// Gives `invocation` the next number of the session (and drops a request id it
    /// carried: the session makes it safe to retry).
    pub fn place(&mut self, mut invocation: Invocation) -> Invocation {
        let sequence = self.next;
        self.next += 1;
        self.unanswered.insert(sequence);
        let first_unanswered = self.unanswered.first().copied().unwrap_or(sequence);
        invocation.request_id.clear();
        invocation.session = Some(SessionPosition { session: self.session, sequence, first_unanswered });
        invocation
    }

    /// The answer to the request at `position` arrived: the node may forget it.
    pub fn answered(&mut self, position: &SessionPosition) {
        self.unanswered.remove(&position.sequence);
    }

    /// How many requests await their answer.
    pub fn unanswered(&self) -> usize {
        self.unanswered.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_count_up_and_acknowledge_the_lowest_unanswered() {
        let mut numbers = SessionNumbers::new(42);
        let first = numbers.place(Invocation::json("p", "w", "{}").with_request_id(*b"dropped"));
        let second = numbers.place(Invocation::json("p", "w", "{}"));
        let (first, second) = (first.session.expect("placed"), second.session.expect("placed"));
        assert_eq!((first.session, first.sequence, first.first_unanswered), (42, 1, 1));
        assert_eq!((second.sequence, second.first_unanswered), (2, 1));
        numbers.answered(&second);
        let third = numbers.place(Invocation::json("p", "w", "{}")).session.expect("placed");
        assert_eq!((third.sequence, third.first_unanswered), (3, 1), "1 is still unanswered");
        numbers.answered(&first);
        let fourth = numbers.place(Invocation::json("p", "w", "{}")).session.expect("placed");
        assert_eq!((fourth.sequence, fourth.first_unanswered), (4, 3));
        assert_eq!(numbers.unanswered(), 2);
    }
}
