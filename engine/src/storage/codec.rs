//! Byte encodings of what the node stores: integers, request outcomes, epoch records
//! and client sessions. Decoders return `None` on malformed input instead of panicking,
//! since bytes from disk are untrusted.

use crate::model::{AbortKind, NodeId, Outcome, SessionPosition, Timestamp};
use crate::txn::sessions::StoredSession;

const TAG_COMMITTED: u8 = 0;
const TAG_ABORTED: u8 = 1;
const TIMESTAMP_BYTES: usize = 8 + 2 + 4;

pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn encode_timestamp(out: &mut Vec<u8>, timestamp: Timestamp) {
    out.extend_from_slice(&timestamp.epoch.to_be_bytes());
    out.extend_from_slice(&timestamp.node.to_be_bytes());
    out.extend_from_slice(&timestamp.sequence.to_be_bytes());
}

fn decode_timestamp(bytes: &[u8]) -> Option<Timestamp> {
    let epoch = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
    let node = NodeId::from_be_bytes(bytes.get(8..10)?.try_into().ok()?);
    let sequence = u32::from_be_bytes(bytes.get(10..14)?.try_into().ok()?);
    Some(Timestamp { epoch, node, sequence })
}

/// Encodes an outcome into `out` (cleared first).
pub fn encode_outcome_into(out: &mut Vec<u8>, outcome: &Outcome) {
    out.clear();
    match outcome {
        Outcome::Committed { timestamp, output } => {
            out.push(TAG_COMMITTED);
            encode_timestamp(out, *timestamp);
            out.extend_from_slice(output);
        }
        Outcome::Aborted { timestamp, kind, message } => {
            out.push(TAG_ABORTED);
            encode_timestamp(out, *timestamp);
            out.push(kind.code());
            out.extend_from_slice(message.as_bytes());
        }
    }
}

pub fn decode_outcome(bytes: &[u8]) -> Option<Outcome> {
    let (&tag, rest) = bytes.split_first()?;
    let timestamp = decode_timestamp(rest)?;
    let rest = &rest[TIMESTAMP_BYTES..];
    match tag {
        TAG_COMMITTED => Some(Outcome::Committed { timestamp, output: rest.to_vec() }),
        TAG_ABORTED => {
            let (&kind, message) = rest.split_first()?;
            Some(Outcome::Aborted {
                timestamp,
                kind: AbortKind::from_code(kind)?,
                message: String::from_utf8(message.to_vec()).ok()?,
            })
        }
        _ => None,
    }
}

/// Encodes an outcome as stored under its request id: the wall-clock second it was
/// recorded (for retention), then the outcome.
pub fn encode_stored_result_into(out: &mut Vec<u8>, outcome: &Outcome, recorded_at_unix_seconds: u64) {
    let mut encoded = Vec::new();
    encode_outcome_into(&mut encoded, outcome);
    out.clear();
    out.extend_from_slice(&recorded_at_unix_seconds.to_be_bytes());
    out.extend_from_slice(&encoded);
}

/// The recording time of a stored result, without decoding the outcome.
pub fn stored_result_recorded_at(bytes: &[u8]) -> Option<u64> {
    decode_u64(bytes.get(..8)?)
}

pub fn decode_stored_result(bytes: &[u8]) -> Option<Outcome> {
    decode_outcome(bytes.get(8..)?)
}

const LOG_VALUE: u8 = 0;
const LOG_DELETED: u8 = 1;
const LOG_RESULT: u8 = 2;
const LOG_SESSION_RESULT: u8 = 3;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a changed value (or a deletion) to an epoch record.
pub fn encode_log_value(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    out.push(if value.is_some() { LOG_VALUE } else { LOG_DELETED });
    put_bytes(out, key);
    if let Some(value) = value {
        put_bytes(out, value);
    }
}

/// Appends a request outcome (already encoded) to an epoch record.
pub fn encode_log_result(out: &mut Vec<u8>, id: &[u8], outcome: &[u8]) {
    out.push(LOG_RESULT);
    put_bytes(out, id);
    put_bytes(out, outcome);
}

/// Appends the outcome (a stored result, see [`encode_stored_result_into`]) of a session
/// request to an epoch record, with what the client acknowledged when it sent it.
pub fn encode_log_session_result(out: &mut Vec<u8>, position: &SessionPosition, stored_result: &[u8]) {
    out.push(LOG_SESSION_RESULT);
    out.extend_from_slice(&position.session.to_be_bytes());
    out.extend_from_slice(&position.sequence.to_be_bytes());
    out.extend_from_slice(&position.first_unanswered.to_be_bytes());
    put_bytes(out, stored_result);
}

/// One entry of an epoch record.
#[derive(Debug, PartialEq, Eq)]
pub enum LogEntry<'a> {
    Value { key: &'a [u8], value: Option<&'a [u8]> },
    Result { id: &'a [u8], outcome: &'a [u8] },
    SessionResult { position: SessionPosition, stored_result: &'a [u8] },
}

/// Encodes a session as stored in the `sessions` family: when it was last used (first,
/// as for stored results, so that one retention filter reads both), its first
/// unanswered sequence number, then each kept outcome with its sequence number.
pub fn encode_stored_session(session: &StoredSession) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&session.last_used_unix_seconds.to_be_bytes());
    out.extend_from_slice(&session.first_unanswered.to_be_bytes());
    let mut outcome = Vec::new();
    for (sequence, kept) in &session.outcomes {
        out.extend_from_slice(&sequence.to_be_bytes());
        encode_outcome_into(&mut outcome, kept);
        put_bytes(&mut out, &outcome);
    }
    out
}

/// Decodes a stored session (`session` is its key).
pub fn decode_stored_session(session: u64, bytes: &[u8]) -> Option<StoredSession> {
    let last_used_unix_seconds = decode_u64(bytes.get(0..8)?)?;
    let first_unanswered = decode_u64(bytes.get(8..16)?)?;
    let mut rest = &bytes[16..];
    let mut outcomes = Vec::new();
    while !rest.is_empty() {
        let sequence = decode_u64(rest.get(0..8)?)?;
        let length = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
        let outcome = decode_outcome(rest.get(12..12usize.checked_add(length)?)?)?;
        outcomes.push((sequence, outcome));
        rest = &rest[12 + length..];
    }
    Some(StoredSession { session, first_unanswered, last_used_unix_seconds, outcomes })
}

/// Iterates over an epoch record; yields `None` once (and then stops) if it is corrupt.
pub struct LogEntries<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> LogEntries<'a> {
    pub fn new(bytes: &'a [u8]) -> LogEntries<'a> {
        LogEntries { rest: bytes, failed: false }
    }

    fn take_bytes(&mut self) -> Option<&'a [u8]> {
        let length = u32::from_be_bytes(self.rest.get(..4)?.try_into().ok()?) as usize;
        let bytes = self.rest.get(4..4 + length)?;
        self.rest = &self.rest[4 + length..];
        Some(bytes)
    }

    fn entry(&mut self) -> Option<LogEntry<'a>> {
        let (&tag, rest) = self.rest.split_first()?;
        self.rest = rest;
        match tag {
            LOG_VALUE => Some(LogEntry::Value { key: self.take_bytes()?, value: Some(self.take_bytes()?) }),
            LOG_DELETED => Some(LogEntry::Value { key: self.take_bytes()?, value: None }),
            LOG_RESULT => Some(LogEntry::Result { id: self.take_bytes()?, outcome: self.take_bytes()? }),
            LOG_SESSION_RESULT => {
                let session = decode_u64(self.rest.get(0..8)?)?;
                let sequence = decode_u64(self.rest.get(8..16)?)?;
                let first_unanswered = decode_u64(self.rest.get(16..24)?)?;
                self.rest = &self.rest[24..];
                let position = SessionPosition { session, sequence, first_unanswered };
                Some(LogEntry::SessionResult { position, stored_result: self.take_bytes()? })
            }
            _ => None,
        }
    }
}

impl<'a> Iterator for LogEntries<'a> {
    type Item = Option<LogEntry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let entry = self.entry();
        self.failed = entry.is_none();
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn epoch_records_round_trip_and_corruption_is_reported() {
        let mut record = Vec::new();
        encode_log_value(&mut record, b"k1", Some(b"v1"));
        encode_log_value(&mut record, b"k2", None);
        encode_log_result(&mut record, b"id", b"outcome");
        let entries: Vec<_> = LogEntries::new(&record).collect();
        assert_eq!(
            entries,
            vec![
                Some(LogEntry::Value { key: b"k1", value: Some(b"v1") }),
                Some(LogEntry::Value { key: b"k2", value: None }),
                Some(LogEntry::Result { id: b"id", outcome: b"outcome" }),
            ]
        );
        let truncated: Vec<_> = LogEntries::new(&record[..record.len() - 2]).collect();
        assert_eq!(truncated.last(), Some(&None));
        let mut garbage = record.clone();
        garbage[0] = 77;
        assert_eq!(LogEntries::new(&garbage).collect::<Vec<_>>(), vec![None]);
    }

    use super::*;

    #[test]
    fn outcomes_round_trip() {
        let timestamp = Timestamp { epoch: 7, node: 3, sequence: 9 };
        let outcomes = [
            Outcome::Committed { timestamp, output: vec![1, 2, 3] },
            Outcome::Committed { timestamp, output: vec![] },
            Outcome::Aborted { timestamp, kind: AbortKind::Logic, message: "insufficient funds".into() },
            Outcome::Aborted { timestamp, kind: AbortKind::ValueTooLarge, message: String::new() },
        ];
        let mut buffer = Vec::new();
        for outcome in outcomes {
            encode_outcome_into(&mut buffer, &outcome);
            assert_eq!(decode_outcome(&buffer), Some(outcome));
        }
    }

    #[test]
    fn stored_results_carry_their_recording_time() {
        let outcome = Outcome::Committed { timestamp: Timestamp { epoch: 1, node: 0, sequence: 2 }, output: vec![7] };
        let mut buffer = Vec::new();
        encode_stored_result_into(&mut buffer, &outcome, 1_700_000_000);
        assert_eq!(stored_result_recorded_at(&buffer), Some(1_700_000_000));
        assert_eq!(decode_stored_result(&buffer), Some(outcome));
        assert_eq!(decode_stored_result(&buffer[..5]), None);
    }

    #[test]
    fn malformed_outcomes_are_refused() {
        assert_eq!(decode_outcome(&[]), None);
        assert_eq!(decode_outcome(&[TAG_COMMITTED, 1, 2]), None);
        let mut buffer = Vec::new();
        let timestamp = Timestamp { epoch: 1, node: 0, sequence: 0 };
        encode_outcome_into(&mut buffer, &Outcome::Aborted { timestamp, kind: AbortKind::Logic, message: "x".into() });
        buffer[1 + TIMESTAMP_BYTES] = 200;
        assert_eq!(decode_outcome(&buffer), None);
        buffer[0] = 9;
        assert_eq!(decode_outcome(&buffer), None);
    }
}

/// Property-based fuzzing of the decoders above, stable Rust's stand-in for cargo-fuzz:
/// arbitrary bytes, and valid encodings with bytes flipped, cut off or inserted, must
/// decode without panicking, and whatever decodes must encode back to exactly the bytes
/// it came from (so no two byte strings decode alike and nothing is silently skipped).
/// Seeded, so every run tries the same cases; `LEASEHOLD_FUZZ_CASES` sets how many (for
/// long runs) and `LEASEHOLD_FUZZ_SEED` picks another sequence.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    fn environment(name: &str) -> Option<u64> {
        std::env::var(name).ok().and_then(|text| text.parse().ok())
    }

    fn config() -> Config {
        Config {
            cases: environment("LEASEHOLD_FUZZ_CASES").map_or(4096, |cases| cases as u32),
            rng_seed: RngSeed::Fixed(environment("LEASEHOLD_FUZZ_SEED").unwrap_or(7420)),
            // The seed reproduces a failure; no regression files in the source tree.
            failure_persistence: None,
            ..Config::default()
        }
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        (any::<u64>(), any::<NodeId>(), any::<u32>()).prop_map(|(epoch, node, sequence)| Timestamp {
            epoch,
            node,
            sequence,
        })
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        let kinds: Vec<AbortKind> = (0..=u8::MAX).filter_map(AbortKind::from_code).collect();
        let kind = proptest::sample::select(kinds);
        prop_oneof![
            (timestamp(), bytes(64)).prop_map(|(timestamp, output)| Outcome::Committed { timestamp, output }),
            (timestamp(), kind, ".{0,40}").prop_map(|(timestamp, kind, message)| Outcome::Aborted {
                timestamp,
                kind,
                message
            }),
        ]
    }

    /// Bytes that often get past the first checks: a plausible tag, then anything.
    fn tagged(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            bytes(max),
            (0u8..5, bytes(max)).prop_map(|(tag, mut rest)| {
                rest.insert(0, tag);
                rest
            }),
        ]
    }

    #[derive(Clone, Debug)]
    enum Entry {
        Value(Vec<u8>, Option<Vec<u8>>),
        Result(Vec<u8>, Vec<u8>),
        SessionResult(SessionPosition, Vec<u8>),
    }

    fn position() -> impl Strategy<Value = SessionPosition> {
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(session, sequence, first_unanswered)| SessionPosition {
            session,
            sequence,
            first_unanswered,
        })
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (bytes(24), proptest::option::of(bytes(24))).prop_map(|(key, value)| Entry::Value(key, value)),
            (bytes(24), bytes(40)).prop_map(|(id, outcome)| Entry::Result(id, outcome)),
            (position(), bytes(40)).prop_map(|(position, outcome)| Entry::SessionResult(position, outcome)),
        ]
    }

    fn encode_entries(entries: &[Entry]) -> Vec<u8> {
        let mut record = Vec::new();
        for entry in entries {
            match entry {
                Entry::Value(key, value) => encode_log_value(&mut record, key, value.as_deref()),
                Entry::Result(id, outcome) => encode_log_result(&mut record, id, outcome),
                Entry::SessionResult(position, outcome) => encode_log_session_result(&mut record, position, outcome),
            }
        }
        record
    }

    /// How a valid encoding gets damaged: like a torn write, a bit flip on disk, or junk.
    #[derive(Clone, Debug)]
    enum Damage {
        Flip { at: usize, bits: u8 },
        Cut { at: usize },
        Insert { at: usize, byte: u8 },
        Overwrite { at: usize, word: u32 },
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Damage::Flip { at, bits }),
            any::<usize>().prop_map(|at| Damage::Cut { at }),
            (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert { at, byte }),
            // A four-byte overwrite hits the length prefixes whole.
            (any::<usize>(), any::<u32>()).prop_map(|(at, word)| Damage::Overwrite { at, word }),
        ]
    }

    fn apply(mut bytes: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
        for damage in damages {
            let length = bytes.len();
            match *damage {
                Damage::Flip { at, bits } if length > 0 => bytes[at % length] ^= bits,
                Damage::Cut { at } => bytes.truncate(at % (length + 1)),
                Damage::Insert { at, byte } => bytes.insert(at % (length + 1), byte),
                Damage::Overwrite { at, word } if length >= 4 => {
                    let at = at % (length - 3);
                    bytes[at..at + 4].copy_from_slice(&word.to_be_bytes());
                }
                _ => {}
            }
        }
        bytes
    }

    /// Decodes an epoch record, checking the iterator's contract: at most one `None`, and
    /// only at the end; the entries before it encode back to a prefix of the record, and
    /// to all of it when nothing failed. Returns how many entries decoded.
    fn check_record(record: &[u8]) -> Result<usize, TestCaseError> {
        let entries: Vec<Option<LogEntry<'_>>> = LogEntries::new(record).collect();
        let failed = entries.iter().position(Option::is_none);
        if let Some(failed) = failed {
            prop_assert_eq!(failed, entries.len() - 1, "decoding stops at the first corrupt entry");
        }
        let mut encoded = Vec::new();
        for entry in entries.iter().flatten() {
            match entry {
                LogEntry::Value { key, value } => encode_log_value(&mut encoded, key, *value),
                LogEntry::Result { id, outcome } => encode_log_result(&mut encoded, id, outcome),
                LogEntry::SessionResult { position, stored_result } => {
                    encode_log_session_result(&mut encoded, position, stored_result)
                }
            }
        }
        prop_assert!(record.starts_with(&encoded), "decoded entries are the record's beginning");
        if failed.is_none() {
            prop_assert_eq!(encoded.as_slice(), record, "a record that decodes whole is exactly its entries");
        }
        Ok(entries.len() - usize::from(failed.is_some()))
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn outcomes_decode_only_from_their_own_encoding(bytes in tagged(48)) {
            if let Some(outcome) = decode_outcome(&bytes) {
                let mut encoded = Vec::new();
                encode_outcome_into(&mut encoded, &outcome);
                prop_assert_eq!(encoded, bytes);
            }
        }

        #[test]
        fn damaged_outcomes_decode_only_from_their_own_encoding(
            outcome in outcome(),
            damages in proptest::collection::vec(damage(), 1..4),
        ) {
            let mut encoded = Vec::new();
            encode_outcome_into(&mut encoded, &outcome);
            let damaged = apply(encoded, &damages);
            if let Some(decoded) = decode_outcome(&damaged) {
                let mut encoded = Vec::new();
                encode_outcome_into(&mut encoded, &decoded);
                prop_assert_eq!(encoded, damaged);
            }
        }

        #[test]
        fn outcomes_round_trip_whatever_they_hold(outcome in outcome(), recorded_at in any::<u64>()) {
            let mut encoded = Vec::new();
            encode_outcome_into(&mut encoded, &outcome);
            prop_assert_eq!(decode_outcome(&encoded), Some(outcome.clone()));
            encode_stored_result_into(&mut encoded, &outcome, recorded_at);
            prop_assert_eq!(stored_result_recorded_at(&encoded), Some(recorded_at));
            prop_assert_eq!(decode_stored_result(&encoded), Some(outcome));
        }

        #[test]
        fn stored_results_decode_only_from_their_own_encoding(bytes in bytes(64)) {
            if let Some(outcome) = decode_stored_result(&bytes) {
                let recorded_at = stored_result_recorded_at(&bytes);
                prop_assert!(recorded_at.is_some(), "a decodable result has a recording time");
                let mut encoded = Vec::new();
                encode_stored_result_into(&mut encoded, &outcome, recorded_at.unwrap_or_default());
                prop_assert_eq!(encoded, bytes);
            }
        }

        #[test]
        fn stored_sessions_round_trip(
            session in any::<u64>(),
            first_unanswered in any::<u64>(),
            last_used_unix_seconds in any::<u64>(),
            outcomes in proptest::collection::vec((any::<u64>(), outcome()), 0..6),
        ) {
            let stored = StoredSession { session, first_unanswered, last_used_unix_seconds, outcomes };
            let encoded = encode_stored_session(&stored);
            prop_assert_eq!(stored_result_recorded_at(&encoded), Some(last_used_unix_seconds));
            prop_assert_eq!(decode_stored_session(session, &encoded), Some(stored));
        }

        #[test]
        fn stored_sessions_decode_only_from_their_own_encoding(bytes in bytes(80)) {
            if let Some(stored) = decode_stored_session(1, &bytes) {
                prop_assert_eq!(encode_stored_session(&stored), bytes);
            }
        }

        #[test]
        fn integers_decode_from_exactly_eight_bytes(bytes in bytes(12)) {
            match decode_u64(&bytes) {
                Some(value) => prop_assert_eq!(value.to_be_bytes().to_vec(), bytes),
                None => prop_assert_ne!(bytes.len(), 8),
            }
        }

        #[test]
        fn arbitrary_epoch_records_decode_to_what_encodes_them(record in tagged(96)) {
            check_record(&record)?;
        }

        #[test]
        fn epoch_records_round_trip(entries in proptest::collection::vec(entry(), 0..8)) {
            let record = encode_entries(&entries);
            prop_assert_eq!(check_record(&record)?, entries.len());
        }

        #[test]
        fn damaged_epoch_records_decode_to_what_encodes_them(
            entries in proptest::collection::vec(entry(), 1..8),
            damages in proptest::collection::vec(damage(), 1..4),
        ) {
            check_record(&apply(encode_entries(&entries), &damages))?;
        }
    }
}
