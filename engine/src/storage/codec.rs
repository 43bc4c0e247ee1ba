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

#[cfg(test)]
mod tests {
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
