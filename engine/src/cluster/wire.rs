//! The frames nodes exchange over the fabric's message rings, and their binary encoding.
//!
//! A ring carries a byte stream per sender session; the stream is a sequence of frames,
//! each `[length: u32][kind: u8][fields]`, little-endian. Frames from peers are checked
//! strictly while decoding (lengths against the remaining bytes, known kinds only), so a
//! corrupt stream is a [`WireError`], never a panic or a huge allocation.

use crate::model::{Outcome, Rejection};
use crate::storage::codec::{decode_outcome, encode_outcome_into};
use crate::txn::access::AccessMode;

/// A transaction of another node that touches keys this node holds (a virtual vertex):
/// its sequence number in the sender's epoch and the keys, as storage keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteTransaction {
    pub sequence: u32,
    pub keys: Vec<(AccessMode, Vec<u8>)>,
}

/// A storage key with its value (`None`: absent), as a lease move carries it.
pub type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// What a borrower sends back for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyWrite {
    Unchanged,
    Set(Vec<u8>),
    Delete,
}

/// A value a baseline transaction (`cc = "2pl" | "occ"`) installed in the receiver's
/// record slot `slot`, with its write version (the receiver logs the highest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotWrite {
    pub slot: u64,
    pub version: u64,
    pub value: Option<Vec<u8>>,
}

/// One message between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// "This is the cluster as I know it": the incarnation of every node (0: unknown) and
    /// my newest durable epoch. Nodes agree on a view before they run epochs. A node
    /// still gathering answers sets `answer_wanted`; nodes that already agreed on the same
    /// view answer it with what they reported for that view.
    Resync { view: Vec<u32>, durable_epoch: u64, answer_wanted: bool },
    /// The sender's transactions of `epoch` that touch keys the receiver holds (possibly
    /// none: the receiver plans the epoch only once every peer's batch arrived). Also
    /// placement: `moves` announces leases the sender gives up from epoch `epoch + 1`
    /// (key, new holder), sent to every peer; `transfers` carries the values of the keys
    /// whose lease passes from the sender to the receiver in this epoch. `sequenced` is
    /// how many transactions the sender runs in the epoch (its load, for routing).
    Batch {
        generation: u64,
        epoch: u64,
        sequenced: u32,
        transactions: Vec<RemoteTransaction>,
        moves: Vec<(Vec<u8>, u16)>,
        transfers: Vec<KeyValue>,
    },
    /// The holder lends every key the receiver's transactions of `epoch` use there, with
    /// their values, in the order of first use in the receiver's batch (each key once).
    /// `sequence` is 0: one handover per borrower and epoch.
    Handover { generation: u64, epoch: u64, sequence: u32, lease_epoch: u64, values: Vec<Option<Vec<u8>>> },
    /// The borrower returns those keys once all of its transactions on them finished, with
    /// what they wrote (`sequence` 0, as in the handover).
    WriteBack { generation: u64, epoch: u64, sequence: u32, lease_epoch: u64, writes: Vec<KeyWrite> },
    /// The sender made every epoch up to `epoch` durable.
    Durable { generation: u64, epoch: u64 },
    /// Deploy this plugin library (sent by the node a client deployed it on).
    Deploy { deploy_id: u64, library: Vec<u8> },
    /// The outcome of a [`Frame::Deploy`]: `None` when it loaded.
    DeployAck { deploy_id: u64, error: Option<String> },
    /// A client's request that the sender routes to the receiver, which holds most of its
    /// keys: run it as if the client had sent it there (under the sender's view
    /// `generation`; a receiver in another view refuses it with `Retry`).
    Forward {
        forward_id: u64,
        generation: u64,
        plugin: String,
        workflow: String,
        request_id: Vec<u8>,
        arguments: Vec<u8>,
    },
    /// The result of a [`Frame::Forward`], once durable on every node (or its refusal).
    ForwardReply { forward_id: u64, result: Result<Outcome, Rejection> },
    /// Baselines: "give me the record slots of these keys you hold" (in the view
    /// `generation`).
    Resolve { generation: u64, keys: Vec<Vec<u8>> },
    /// The answer to the sender's oldest unanswered [`Frame::Resolve`]: one slot number per
    /// key, in order (`records::NO_SLOT`: the key cannot be held in a slot).
    Resolved { generation: u64, slots: Vec<u64> },
    /// Baselines: the sender's transactions of `epoch` all finished; these are the values
    /// they installed in the receiver's record slots. The receiver logs them with its
    /// record of `epoch`, and runs `epoch + 1` only once every peer's arrived.
    EpochDone { generation: u64, epoch: u64, writes: Vec<SlotWrite> },
}

/// A malformed frame from a peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

const KIND_RESYNC: u8 = 1;
const KIND_BATCH: u8 = 2;
const KIND_HANDOVER: u8 = 3;
const KIND_WRITE_BACK: u8 = 4;
const KIND_DURABLE: u8 = 5;
const KIND_DEPLOY: u8 = 6;
const KIND_DEPLOY_ACK: u8 = 7;
const KIND_FORWARD: u8 = 8;
const KIND_FORWARD_REPLY: u8 = 9;
const KIND_RESOLVE: u8 = 10;
const KIND_RESOLVED: u8 = 11;
const KIND_EPOCH_DONE: u8 = 12;

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, u32::try_from(bytes.len()).expect("frame fields are smaller than 4 GiB"));
    out.extend_from_slice(bytes);
}

fn put_optional(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
        None => out.push(0),
    }
}

/// Appends `frame`, with its length prefix, to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    put_u32(out, 0);
    match frame {
        Frame::Resync { view, durable_epoch, answer_wanted } => {
            out.push(KIND_RESYNC);
            out.push(u8::from(*answer_wanted));
            put_u32(out, view.len() as u32);
            for &incarnation in view {
                put_u32(out, incarnation);
            }
            put_u64(out, *durable_epoch);
        }
        Frame::Batch { generation, epoch, sequenced, transactions, moves, transfers } => {
            out.push(KIND_BATCH);
            put_u64(out, *generation);
            put_u64(out, *epoch);
            put_u32(out, *sequenced);
            put_u32(out, transactions.len() as u32);
            for transaction in transactions {
                put_u32(out, transaction.sequence);
                put_u32(out, transaction.keys.len() as u32);
                for (mode, key) in &transaction.keys {
                    out.push(u8::from(*mode == AccessMode::Write));
                    put_bytes(out, key);
                }
            }
            put_u32(out, moves.len() as u32);
            for (key, to) in moves {
                put_bytes(out, key);
                out.extend_from_slice(&to.to_le_bytes());
            }
            put_u32(out, transfers.len() as u32);
            for (key, value) in transfers {
                put_bytes(out, key);
                put_optional(out, value.as_deref());
            }
        }
        Frame::Handover { generation, epoch, sequence, lease_epoch, values } => {
            out.push(KIND_HANDOVER);
            put_u64(out, *generation);
            put_u64(out, *epoch);
            put_u32(out, *sequence);
            put_u64(out, *lease_epoch);
            put_u32(out, values.len() as u32);
            for value in values {
                put_optional(out, value.as_deref());
            }
        }
        Frame::WriteBack { generation, epoch, sequence, lease_epoch, writes } => {
            out.push(KIND_WRITE_BACK);
            put_u64(out, *generation);
            put_u64(out, *epoch);
            put_u32(out, *sequence);
            put_u64(out, *lease_epoch);
            put_u32(out, writes.len() as u32);
            for write in writes {
                match write {
                    KeyWrite::Unchanged => out.push(0),
                    KeyWrite::Set(value) => {
                        out.push(1);
                        put_bytes(out, value);
                    }
                    KeyWrite::Delete => out.push(2),
                }
            }
        }
        Frame::Durable { generation, epoch } => {
            out.push(KIND_DURABLE);
            put_u64(out, *generation);
            put_u64(out, *epoch);
        }
        Frame::Deploy { deploy_id, library } => {
            out.push(KIND_DEPLOY);
            put_u64(out, *deploy_id);
            put_bytes(out, library);
        }
        Frame::DeployAck { deploy_id, error } => {
            out.push(KIND_DEPLOY_ACK);
            put_u64(out, *deploy_id);
            put_optional(out, error.as_deref().map(str::as_bytes));
        }
        Frame::Forward { forward_id, generation, plugin, workflow, request_id, arguments } => {
            out.push(KIND_FORWARD);
            put_u64(out, *forward_id);
            put_u64(out, *generation);
            put_bytes(out, plugin.as_bytes());
            put_bytes(out, workflow.as_bytes());
            put_bytes(out, request_id);
            put_bytes(out, arguments);
        }
        Frame::ForwardReply { forward_id, result } => {
            out.push(KIND_FORWARD_REPLY);
            put_u64(out, *forward_id);
            match result {
                Ok(outcome) => {
                    out.push(0);
                    let mut encoded = Vec::new();
                    encode_outcome_into(&mut encoded, outcome);
                    put_bytes(out, &encoded);
                }
                Err(rejection) => {
                    out.push(1);
                    encode_rejection(out, rejection);
                }
            }
        }
        Frame::Resolve { generation, keys } => {
            out.push(KIND_RESOLVE);
            put_u64(out, *generation);
            put_u32(out, keys.len() as u32);
            for key in keys {
                put_bytes(out, key);
            }
        }
        Frame::Resolved { generation, slots } => {
            out.push(KIND_RESOLVED);
            put_u64(out, *generation);
            put_u32(out, slots.len() as u32);
            for &slot in slots {
                put_u64(out, slot);
            }
        }
        Frame::EpochDone { generation, epoch, writes } => {
            out.push(KIND_EPOCH_DONE);
            put_u64(out, *generation);
            put_u64(out, *epoch);
            put_u32(out, writes.len() as u32);
            for write in writes {
                put_u64(out, write.slot);
                put_u64(out, write.version);
                put_optional(out, write.value.as_deref());
            }
        }
    }
    let length = u32::try_from(out.len() - start - 4).expect("frames are smaller than 4 GiB");
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
}

/// A rejection as a code and its fields (two texts, two numbers; unused ones empty).
fn encode_rejection(out: &mut Vec<u8>, rejection: &Rejection) {
    let none = String::new();
    let (code, first, second, numbers): (u8, &String, &String, [u64; 3]) = match rejection {
        Rejection::UnknownPlugin(plugin) => (0, plugin, &none, [0, 0, 0]),
        Rejection::UnknownWorkflow { plugin, workflow } => (1, plugin, workflow, [0, 0, 0]),
        Rejection::UnknownTable { plugin, table } => (2, plugin, table, [0, 0, 0]),
        Rejection::BadArguments(message) => (3, message, &none, [0, 0, 0]),
        Rejection::PlanFailed(message) => (4, message, &none, [0, 0, 0]),
        Rejection::RequestIdTooLong => (5, &none, &none, [0, 0, 0]),
        Rejection::AccessSetTooLarge { count, max } => (6, &none, &none, [*count as u64, *max as u64, 0]),
        Rejection::KeyTooLong { max } => (7, &none, &none, [*max as u64, 0, 0]),
        Rejection::ShuttingDown => (8, &none, &none, [0, 0, 0]),
        Rejection::Storage(message) => (9, message, &none, [0, 0, 0]),
        Rejection::Retry(message) => (10, message, &none, [0, 0, 0]),
        Rejection::PluginQuarantined { plugin, reason } => (11, plugin, reason, [0, 0, 0]),
        // Sessions reach a cluster as ids, so its nodes never send these; encoded all the
        // same so that every rejection crosses the wire.
        Rejection::UnknownSession(session) => (12, &none, &none, [*session, 0, 0]),
        Rejection::SequenceAcknowledged { session, sequence, first_unanswered } => {
            (13, &none, &none, [*session, *sequence, *first_unanswered])
        }
        Rejection::SessionFull { session, held } => (14, &none, &none, [*session, *held as u64, 0]),
        Rejection::TooManySessions(count) => (15, &none, &none, [*count as u64, 0, 0]),
    };
    out.push(code);
    put_bytes(out, first.as_bytes());
    put_bytes(out, second.as_bytes());
    put_u64(out, numbers[0]);
    put_u64(out, numbers[1]);
    put_u64(out, numbers[2]);
}

/// Reads fields from one frame's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < count {
            return Err(WireError::Truncated(what));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("four bytes")))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("eight bytes")))
    }

    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, WireError> {
        let length = self.u32(what)? as usize;
        Ok(self.take(length, what)?.to_vec())
    }

    /// A count of items that each take at least `item_bytes_min`, checked against what is
    /// left so that a corrupt count cannot make the decoder allocate much.
    fn count(&mut self, item_bytes_min: usize, what: &'static str) -> Result<usize, WireError> {
        let count = self.u32(what)? as usize;
        if count.saturating_mul(item_bytes_min) > self.bytes.len() {
            return Err(WireError::Truncated(what));
        }
        Ok(count)
    }

    fn text(&mut self, what: &'static str) -> Result<String, WireError> {
        String::from_utf8(self.bytes(what)?).map_err(|_| WireError::Invalid(what))
    }

    fn rejection(&mut self) -> Result<Rejection, WireError> {
        let code = self.u8("rejection")?;
        let (first, second) = (self.text("rejection text")?, self.text("rejection text")?);
        let numbers = [self.u64("rejection number")?, self.u64("rejection number")?, self.u64("rejection number")?];
        let size = |number: u64| usize::try_from(number).map_err(|_| WireError::Invalid("rejection number"));
        Ok(match code {
            0 => Rejection::UnknownPlugin(first),
            1 => Rejection::UnknownWorkflow { plugin: first, workflow: second },
            2 => Rejection::UnknownTable { plugin: first, table: second },
            3 => Rejection::BadArguments(first),
            4 => Rejection::PlanFailed(first),
            5 => Rejection::RequestIdTooLong,
            6 => Rejection::AccessSetTooLarge { count: size(numbers[0])?, max: size(numbers[1])? },
            7 => Rejection::KeyTooLong { max: size(numbers[0])? },
            8 => Rejection::ShuttingDown,
            9 => Rejection::Storage(first),
            10 => Rejection::Retry(first),
            11 => Rejection::PluginQuarantined { plugin: first, reason: second },
            12 => Rejection::UnknownSession(numbers[0]),
            13 => Rejection::SequenceAcknowledged {
                session: numbers[0],
                sequence: numbers[1],
                first_unanswered: numbers[2],
            },
            14 => Rejection::SessionFull { session: numbers[0], held: size(numbers[1])? },
            15 => Rejection::TooManySessions(size(numbers[0])?),
            _ => return Err(WireError::Invalid("rejection")),
        })
    }

    fn optional(&mut self, what: &'static str) -> Result<Option<Vec<u8>>, WireError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes(what)?)),
            _ => Err(WireError::Invalid(what)),
        }
    }
}

/// Splits the next complete frame off `stream`: `Ok(None)` when more bytes are needed.
/// Returns the frame and the number of bytes it took.
pub fn decode(stream: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    if stream.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_le_bytes(stream[..4].try_into().expect("four bytes")) as usize;
    if stream.len() < 4 + length {
        return Ok(None);
    }
    let mut reader = Reader { bytes: &stream[4..4 + length] };
    let frame = match reader.u8("kind")? {
        KIND_RESYNC => {
            let answer_wanted = match reader.u8("answer wanted")? {
                0 => false,
                1 => true,
                _ => return Err(WireError::Invalid("answer wanted")),
            };
            let count = reader.count(4, "view")?;
            let view = (0..count).map(|_| reader.u32("view")).collect::<Result<_, _>>()?;
            Frame::Resync { view, durable_epoch: reader.u64("durable epoch")?, answer_wanted }
        }
        KIND_BATCH => {
            let generation = reader.u64("generation")?;
            let epoch = reader.u64("epoch")?;
            let sequenced = reader.u32("sequenced")?;
            let count = reader.count(8, "transactions")?;
            let mut transactions = Vec::with_capacity(count);
            for _ in 0..count {
                let sequence = reader.u32("sequence")?;
                let key_count = reader.count(5, "keys")?;
                let mut keys = Vec::with_capacity(key_count);
                for _ in 0..key_count {
                    let mode = match reader.u8("access mode")? {
                        0 => AccessMode::Read,
                        1 => AccessMode::Write,
                        _ => return Err(WireError::Invalid("access mode")),
                    };
                    keys.push((mode, reader.bytes("key")?));
                }
                transactions.push(RemoteTransaction { sequence, keys });
            }
            let move_count = reader.count(6, "moves")?;
            let mut moves = Vec::with_capacity(move_count);
            for _ in 0..move_count {
                let key = reader.bytes("moved key")?;
                let to = u16::from_le_bytes(reader.take(2, "new holder")?.try_into().expect("two bytes"));
                moves.push((key, to));
            }
            let transfer_count = reader.count(5, "transfers")?;
            let mut transfers = Vec::with_capacity(transfer_count);
            for _ in 0..transfer_count {
                let key = reader.bytes("transferred key")?;
                transfers.push((key, reader.optional("transferred value")?));
            }
            Frame::Batch { generation, epoch, sequenced, transactions, moves, transfers }
        }
        KIND_HANDOVER => {
            let (generation, epoch) = (reader.u64("generation")?, reader.u64("epoch")?);
            let (sequence, lease_epoch) = (reader.u32("sequence")?, reader.u64("lease epoch")?);
            let count = reader.count(1, "values")?;
            let values = (0..count).map(|_| reader.optional("value")).collect::<Result<_, _>>()?;
            Frame::Handover { generation, epoch, sequence, lease_epoch, values }
        }
        KIND_WRITE_BACK => {
            let (generation, epoch) = (reader.u64("generation")?, reader.u64("epoch")?);
            let (sequence, lease_epoch) = (reader.u32("sequence")?, reader.u64("lease epoch")?);
            let count = reader.count(1, "writes")?;
            let mut writes = Vec::with_capacity(count);
            for _ in 0..count {
                writes.push(match reader.u8("write")? {
                    0 => KeyWrite::Unchanged,
                    1 => KeyWrite::Set(reader.bytes("value")?),
                    2 => KeyWrite::Delete,
                    _ => return Err(WireError::Invalid("write")),
                });
            }
            Frame::WriteBack { generation, epoch, sequence, lease_epoch, writes }
        }
        KIND_DURABLE => Frame::Durable { generation: reader.u64("generation")?, epoch: reader.u64("epoch")? },
        KIND_DEPLOY => Frame::Deploy { deploy_id: reader.u64("deploy id")?, library: reader.bytes("library")? },
        KIND_DEPLOY_ACK => {
            let deploy_id = reader.u64("deploy id")?;
            let error = reader
                .optional("error")?
                .map(|bytes| String::from_utf8(bytes).map_err(|_| WireError::Invalid("error text")))
                .transpose()?;
            Frame::DeployAck { deploy_id, error }
        }
        KIND_FORWARD => Frame::Forward {
            forward_id: reader.u64("forward id")?,
            generation: reader.u64("generation")?,
            plugin: reader.text("plugin")?,
            workflow: reader.text("workflow")?,
            request_id: reader.bytes("request id")?,
            arguments: reader.bytes("arguments")?,
        },
        KIND_FORWARD_REPLY => {
            let forward_id = reader.u64("forward id")?;
            let result = match reader.u8("forward result")? {
                0 => Ok(decode_outcome(&reader.bytes("outcome")?).ok_or(WireError::Invalid("outcome"))?),
                1 => Err(reader.rejection()?),
                _ => return Err(WireError::Invalid("forward result")),
            };
            Frame::ForwardReply { forward_id, result }
        }
        KIND_RESOLVE => {
            let generation = reader.u64("generation")?;
            let count = reader.count(4, "keys")?;
            let keys = (0..count).map(|_| reader.bytes("key")).collect::<Result<_, _>>()?;
            Frame::Resolve { generation, keys }
        }
        KIND_RESOLVED => {
            let generation = reader.u64("generation")?;
            let count = reader.count(8, "slots")?;
            let slots = (0..count).map(|_| reader.u64("slot")).collect::<Result<_, _>>()?;
            Frame::Resolved { generation, slots }
        }
        KIND_EPOCH_DONE => {
            let (generation, epoch) = (reader.u64("generation")?, reader.u64("epoch")?);
            let count = reader.count(17, "slot writes")?;
            let mut writes = Vec::with_capacity(count);
            for _ in 0..count {
                let (slot, version) = (reader.u64("slot")?, reader.u64("write version")?);
                writes.push(SlotWrite { slot, version, value: reader.optional("written value")? });
            }
            Frame::EpochDone { generation, epoch, writes }
        }
        other => return Err(WireError::UnknownKind(other)),
    };
    if !reader.bytes.is_empty() {
        return Err(WireError::Invalid("frame length (bytes left over)"));
    }
    Ok(Some((frame, 4 + length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Resync { view: vec![3, 0, 7], durable_epoch: 42, answer_wanted: true },
            Frame::Resolve { generation: 4, keys: vec![b"a".to_vec(), Vec::new()] },
            Frame::Resolved { generation: 4, slots: vec![0, 17, u64::MAX] },
            Frame::EpochDone {
                generation: 4,
                epoch: 9,
                writes: vec![
                    SlotWrite { slot: 3, version: 2, value: Some(b"v".to_vec()) },
                    SlotWrite { slot: 8, version: 1, value: None },
                ],
            },
            Frame::EpochDone { generation: 4, epoch: 10, writes: Vec::new() },
            Frame::Batch {
                generation: 10,
                epoch: 43,
                sequenced: 17,
                transactions: vec![
                    RemoteTransaction {
                        sequence: 5,
                        keys: vec![(AccessMode::Write, b"k1".to_vec()), (AccessMode::Read, vec![])],
                    },
                    RemoteTransaction { sequence: 9, keys: vec![] },
                ],
                moves: vec![(b"hot".to_vec(), 2)],
                transfers: vec![(b"moved".to_vec(), Some(b"value".to_vec())), (b"gone".to_vec(), None)],
            },
            Frame::Batch {
                generation: 10,
                epoch: 44,
                sequenced: 0,
                transactions: vec![],
                moves: vec![],
                transfers: vec![],
            },
            Frame::Handover {
                generation: 10,
                epoch: 43,
                sequence: 5,
                lease_epoch: 10,
                values: vec![Some(b"v".to_vec()), None],
            },
            Frame::WriteBack {
                generation: 10,
                epoch: 43,
                sequence: 5,
                lease_epoch: 10,
                writes: vec![KeyWrite::Set(b"new".to_vec()), KeyWrite::Unchanged, KeyWrite::Delete],
            },
            Frame::Durable { generation: 10, epoch: 43 },
            Frame::Deploy { deploy_id: 1, library: vec![0x7f, b'E', b'L', b'F'] },
            Frame::DeployAck { deploy_id: 1, error: Some("bad library".into()) },
            Frame::DeployAck { deploy_id: 2, error: None },
            Frame::Forward {
                forward_id: 7,
                generation: 10,
                plugin: "banking".into(),
                workflow: "transfer".into(),
                request_id: b"t-1".to_vec(),
                arguments: vec![1, 2, 3],
            },
            Frame::ForwardReply {
                forward_id: 7,
                result: Ok(Outcome::Committed {
                    timestamp: crate::model::Timestamp { epoch: 3, node: 1, sequence: 9 },
                    output: b"out".to_vec(),
                }),
            },
            Frame::ForwardReply {
                forward_id: 8,
                result: Ok(Outcome::Aborted {
                    timestamp: crate::model::Timestamp { epoch: 3, node: 1, sequence: 10 },
                    kind: crate::model::AbortKind::Logic,
                    message: "insufficient funds".into(),
                }),
            },
            Frame::ForwardReply { forward_id: 9, result: Err(Rejection::Retry("a node restarted".into())) },
            Frame::ForwardReply {
                forward_id: 10,
                result: Err(Rejection::UnknownWorkflow { plugin: "p".into(), workflow: "w".into() }),
            },
            Frame::ForwardReply { forward_id: 11, result: Err(Rejection::AccessSetTooLarge { count: 9, max: 3 }) },
            Frame::ForwardReply {
                forward_id: 12,
                result: Err(Rejection::SequenceAcknowledged { session: 4, sequence: 2, first_unanswered: 3 }),
            },
        ]
    }

    #[test]
    fn frames_survive_a_stream_cut_anywhere() {
        let frames = samples();
        let mut stream = Vec::new();
        for frame in &frames {
            encode(frame, &mut stream);
        }
        // Feed the stream in pieces of every size: frames come out whole and in order.
        for piece in 1..stream.len() {
            let mut buffer = Vec::new();
            let mut decoded = Vec::new();
            for chunk in stream.chunks(piece) {
                buffer.extend_from_slice(chunk);
                while let Some((frame, used)) = decode(&buffer).expect("valid stream") {
                    decoded.push(frame);
                    buffer.drain(..used);
                }
            }
            assert_eq!(decoded, frames, "piece size {piece}");
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn corrupt_frames_are_errors_not_panics() {
        for frame in samples() {
            let mut stream = Vec::new();
            encode(&frame, &mut stream);
            // Every truncation of the body under a matching length prefix is refused.
            for cut in 5..stream.len() {
                let mut corrupt = stream[..cut].to_vec();
                let length = (cut - 4) as u32;
                corrupt[..4].copy_from_slice(&length.to_le_bytes());
                assert!(decode(&corrupt).is_err(), "{frame:?} cut at {cut} must be refused");
            }
        }
        assert_eq!(decode(&[1, 0, 0, 0, 99]), Err(WireError::UnknownKind(99)));
        // A huge count in a short frame does not allocate: it is refused.
        let mut huge = vec![0u8; 4];
        huge.push(KIND_RESYNC);
        huge.push(0);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let length = (huge.len() - 4) as u32;
        huge[..4].copy_from_slice(&length.to_le_bytes());
        assert_eq!(decode(&huge), Err(WireError::Truncated("view")));
    }
}
