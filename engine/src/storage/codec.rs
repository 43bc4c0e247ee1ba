//! Byte encodings of what the node stores: integers and request outcomes. Decoders
//! return `None` on malformed input instead of panicking, since bytes from disk are
//! untrusted.

use crate::model::{AbortKind, NodeId, Outcome, Timestamp};

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

/// One entry of an epoch record.
#[derive(Debug, PartialEq, Eq)]
pub enum LogEntry<'a> {
    Value { key: &'a [u8], value: Option<&'a [u8]> },
    Result { id: &'a [u8], outcome: &'a [u8] },
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
