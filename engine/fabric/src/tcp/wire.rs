//! The tcp fabric's wire format: the connection handshake, request frames a responder
//! parses (untrusted input: every size and count is checked before it is used) and
//! response frames a client decodes (checked against what it asked for).
//!
//! All integers are little-endian. A frame is a `u32` body length and the body.
//!
//! ```text
//! hello     client → responder  magic u32, version u16, from node u16, to node u16,
//!                                client nonce [32]
//! challenge responder → client  magic u32, version u16, accepted u8, node u16,
//!                                responder nonce [32], responder proof [32]
//! proof     client → responder  client proof [32]
//! welcome   responder → client  magic u32, version u16, accepted u8, node u16
//! describe  kind=1 u8, region u32            → status u8, [size u64]
//! batch     kind=2 u8, region u32, count u16, operations
//!             read=1 u8, offset u64, length u32
//!             write=2 u8, offset u64, length u32, bytes
//!             cas=3 u8, offset u64, expected u64, new u64
//!             fetch_add=4 u8, offset u64, delta u64
//!                                        → status u8, completed u16, one result per
//!                                          completed operation (read: its bytes;
//!                                          cas, fetch_add: previous u64; write: none),
//!                                          then the error's details unless status=ok
//! ```

use crate::memory::AccessError;
use crate::{Operation, RegionId, MAX_BATCH_OPERATIONS, MAX_TRANSFER_BYTES};

pub(super) const MAGIC: u32 = u32::from_le_bytes(*b"LHFB");
pub(super) const VERSION: u16 = 3;
/// Magic, version, from and to node, and the client's nonce.
pub(super) const HELLO_BYTES: usize = 10 + NONCE_BYTES;
/// Magic, version, accepted, node, the responder's nonce and its proof.
pub(super) const CHALLENGE_BYTES: usize = 9 + NONCE_BYTES + PROOF_BYTES;
pub(super) const WELCOME_BYTES: usize = 9;
pub(super) const NONCE_BYTES: usize = 32;
pub(super) const PROOF_BYTES: usize = 32;

/// What each side's proof is computed over besides the nonces, so that a responder's
/// proof can never be replayed as a client's.
const CLIENT_LABEL: &[u8] = b"leasehold fabric client proof";
const RESPONDER_LABEL: &[u8] = b"leasehold fabric responder proof";

const KIND_DESCRIBE: u8 = 1;
const KIND_BATCH: u8 = 2;
const OPCODE_READ: u8 = 1;
const OPCODE_WRITE: u8 = 2;
const OPCODE_COMPARE_AND_SWAP: u8 = 3;
const OPCODE_FETCH_ADD: u8 = 4;

pub(super) const STATUS_OK: u8 = 0;
pub(super) const STATUS_UNKNOWN_REGION: u8 = 1;
pub(super) const STATUS_OUT_OF_BOUNDS: u8 = 2;
pub(super) const STATUS_MISALIGNED: u8 = 3;
pub(super) const STATUS_TRANSFER_TOO_LARGE: u8 = 4;
pub(super) const STATUS_BAD_REQUEST: u8 = 5;

/// The largest operation header: a compare-and-swap.
const OPERATION_HEADER_BYTES_MAX: usize = 1 + 8 + 8 + 8;
/// The largest request body: a full batch of writes carrying the transfer limit.
pub(super) const REQUEST_BODY_BYTES_MAX: usize =
    1 + 4 + 2 + MAX_BATCH_OPERATIONS * OPERATION_HEADER_BYTES_MAX + MAX_TRANSFER_BYTES as usize;
/// The largest response body: a full batch of reads and atomics, and error details.
pub(super) const RESPONSE_BODY_BYTES_MAX: usize = 1 + 2 + MAX_BATCH_OPERATIONS * 8 + MAX_TRANSFER_BYTES as usize + 24;

/// The first bytes a client sends on a new connection.
pub(super) fn encode_hello(from_node: u16, to_node: u16, client_nonce: &[u8; NONCE_BYTES]) -> [u8; HELLO_BYTES] {
    let mut hello = [0u8; HELLO_BYTES];
    hello[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    hello[4..6].copy_from_slice(&VERSION.to_le_bytes());
    hello[6..8].copy_from_slice(&from_node.to_le_bytes());
    hello[8..10].copy_from_slice(&to_node.to_le_bytes());
    hello[10..].copy_from_slice(client_nonce);
    hello
}

/// What a client's hello says: the node it is, the node it wants, its nonce.
pub(super) struct Hello {
    pub(super) from_node: u16,
    pub(super) to_node: u16,
    pub(super) client_nonce: [u8; NONCE_BYTES],
}

pub(super) fn decode_hello(hello: &[u8; HELLO_BYTES]) -> Result<Hello, String> {
    let mut reader = Reader::new(hello);
    let (magic, version) = (reader.u32()?, reader.u16()?);
    if magic != MAGIC || version != VERSION {
        return Err(format!("not a leasehold fabric client (magic {magic:#x}, version {version})"));
    }
    let from_node = reader.u16()?;
    let to_node = reader.u16()?;
    let client_nonce = reader.array()?;
    Ok(Hello { from_node, to_node, client_nonce })
}

/// The nonces and node ids of one handshake: what both proofs are bound to, so that a
/// proof recorded on one connection is worthless on any other (the responder's nonce is
/// fresh for every connection).
pub(super) struct Handshake {
    pub(super) from_node: u16,
    pub(super) to_node: u16,
    pub(super) client_nonce: [u8; NONCE_BYTES],
    pub(super) responder_nonce: [u8; NONCE_BYTES],
}

impl Handshake {
    /// The client's proof that it knows the key (the SHA-256 of the peer token).
    pub(super) fn client_proof(&self, key: &[u8; 32]) -> [u8; PROOF_BYTES] {
        self.proof(key, CLIENT_LABEL)
    }

    /// The responder's proof that it knows the key.
    pub(super) fn responder_proof(&self, key: &[u8; 32]) -> [u8; PROOF_BYTES] {
        self.proof(key, RESPONDER_LABEL)
    }

    fn proof(&self, key: &[u8; 32], label: &[u8]) -> [u8; PROOF_BYTES] {
        let mut message = Vec::with_capacity(label.len() + 4 + 2 * NONCE_BYTES);
        message.extend_from_slice(label);
        message.extend_from_slice(&self.from_node.to_le_bytes());
        message.extend_from_slice(&self.to_node.to_le_bytes());
        message.extend_from_slice(&self.client_nonce);
        message.extend_from_slice(&self.responder_nonce);
        hmac_sha256(key, &message)
    }
}

/// Whether two proofs are equal, comparing every byte so that the time taken tells
/// nothing about where they differ.
pub(super) fn proofs_match(left: &[u8; PROOF_BYTES], right: &[u8; PROOF_BYTES]) -> bool {
    left.iter().zip(right).fold(0u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

/// HMAC-SHA256 (RFC 2104) of `message` under a key of at most one block.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK_BYTES: usize = 64;
    assert!(key.len() <= BLOCK_BYTES, "the fabric's keys are digests, shorter than a block");
    let mut padded = [0u8; BLOCK_BYTES];
    padded[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| padded.map(|k| k ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// The responder's answer to a hello: its nonce and proof, or a refusal (zeros).
pub(super) fn encode_challenge(
    accepted: bool,
    node: u16,
    responder_nonce: &[u8; NONCE_BYTES],
    responder_proof: &[u8; PROOF_BYTES],
) -> [u8; CHALLENGE_BYTES] {
    let mut challenge = [0u8; CHALLENGE_BYTES];
    challenge[0..WELCOME_BYTES].copy_from_slice(&encode_welcome(accepted, node));
    challenge[WELCOME_BYTES..WELCOME_BYTES + NONCE_BYTES].copy_from_slice(responder_nonce);
    challenge[WELCOME_BYTES + NONCE_BYTES..].copy_from_slice(responder_proof);
    challenge
}

/// The client's reading of a challenge: the responder's nonce and proof when the
/// responder is `expected_node` and did not refuse the hello.
pub(super) fn decode_challenge(
    challenge: &[u8; CHALLENGE_BYTES],
    expected_node: u16,
) -> Result<([u8; NONCE_BYTES], [u8; PROOF_BYTES]), String> {
    let welcome: &[u8; WELCOME_BYTES] =
        challenge[..WELCOME_BYTES].try_into().expect("the prefix has the welcome's size");
    decode_welcome(welcome, expected_node)?;
    let mut reader = Reader::new(&challenge[WELCOME_BYTES..]);
    Ok((reader.array()?, reader.array()?))
}

pub(super) fn encode_welcome(accepted: bool, node: u16) -> [u8; WELCOME_BYTES] {
    let mut welcome = [0u8; WELCOME_BYTES];
    welcome[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    welcome[4..6].copy_from_slice(&VERSION.to_le_bytes());
    welcome[6] = u8::from(accepted);
    welcome[7..9].copy_from_slice(&node.to_le_bytes());
    welcome
}

/// The client's reading of a welcome: `Ok` when the responder is `expected_node` and
/// accepted the connection.
pub(super) fn decode_welcome(welcome: &[u8; WELCOME_BYTES], expected_node: u16) -> Result<(), String> {
    let mut reader = Reader::new(welcome);
    let (magic, version, accepted, node) = (reader.u32()?, reader.u16()?, reader.u8()?, reader.u16()?);
    if magic != MAGIC || version != VERSION {
        return Err(format!("the address does not answer as a leasehold fabric responder (magic {magic:#x})"));
    }
    if node != expected_node {
        return Err(format!("the address answers as node {node}"));
    }
    if accepted != 1 {
        return Err("the responder refused the connection".to_string());
    }
    Ok(())
}

/// Appends a describe request frame.
pub(super) fn encode_describe(frame: &mut Vec<u8>, region: RegionId) {
    frame.extend_from_slice(&5u32.to_le_bytes());
    frame.push(KIND_DESCRIBE);
    frame.extend_from_slice(&region.0.to_le_bytes());
}

/// Appends a batch request frame. The caller checked the batch limits.
pub(super) fn encode_batch(frame: &mut Vec<u8>, region: RegionId, operations: &[Operation<'_>]) {
    assert!(operations.len() <= MAX_BATCH_OPERATIONS, "the caller checks batch limits");
    let start = frame.len();
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.push(KIND_BATCH);
    frame.extend_from_slice(&region.0.to_le_bytes());
    frame.extend_from_slice(&(operations.len() as u16).to_le_bytes());
    for operation in operations {
        match operation {
            Operation::Read { offset, buffer } => {
                frame.push(OPCODE_READ);
                frame.extend_from_slice(&offset.to_le_bytes());
                frame.extend_from_slice(&(buffer.len() as u32).to_le_bytes());
            }
            Operation::Write { offset, bytes } => {
                frame.push(OPCODE_WRITE);
                frame.extend_from_slice(&offset.to_le_bytes());
                frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                frame.extend_from_slice(bytes);
            }
            Operation::CompareAndSwap { offset, expected, new, .. } => {
                frame.push(OPCODE_COMPARE_AND_SWAP);
                frame.extend_from_slice(&offset.to_le_bytes());
                frame.extend_from_slice(&expected.to_le_bytes());
                frame.extend_from_slice(&new.to_le_bytes());
            }
            Operation::FetchAdd { offset, delta, .. } => {
                frame.push(OPCODE_FETCH_ADD);
                frame.extend_from_slice(&offset.to_le_bytes());
                frame.extend_from_slice(&delta.to_le_bytes());
            }
        }
    }
    let body_bytes = (frame.len() - start - 4) as u32;
    frame[start..start + 4].copy_from_slice(&body_bytes.to_le_bytes());
}

/// A request as the responder parsed it; write payloads borrow the frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request<'a> {
    Describe { region: RegionId },
    Batch { region: RegionId, operations: Vec<WireOperation<'a>> },
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum WireOperation<'a> {
    Read { offset: u64, length: u32 },
    Write { offset: u64, bytes: &'a [u8] },
    CompareAndSwap { offset: u64, expected: u64, new: u64 },
    FetchAdd { offset: u64, delta: u64 },
}

/// Parses a request body from a peer. Everything is checked: kinds, opcodes, counts,
/// lengths against the transfer limit, and that the body holds exactly one request.
pub(super) fn parse_request(body: &[u8]) -> Result<Request<'_>, String> {
    let mut reader = Reader::new(body);
    let request = match reader.u8()? {
        KIND_DESCRIBE => Request::Describe { region: RegionId(reader.u32()?) },
        KIND_BATCH => {
            let region = RegionId(reader.u32()?);
            let count = usize::from(reader.u16()?);
            if count > MAX_BATCH_OPERATIONS {
                return Err(format!("a batch of {count} operations exceeds the limit of {MAX_BATCH_OPERATIONS}"));
            }
            let mut operations = Vec::with_capacity(count);
            let mut transfer_bytes = 0u64;
            for _ in 0..count {
                let operation = match reader.u8()? {
                    OPCODE_READ => WireOperation::Read { offset: reader.u64()?, length: reader.u32()? },
                    OPCODE_WRITE => {
                        let offset = reader.u64()?;
                        let length = reader.u32()? as usize;
                        WireOperation::Write { offset, bytes: reader.bytes(length)? }
                    }
                    OPCODE_COMPARE_AND_SWAP => WireOperation::CompareAndSwap {
                        offset: reader.u64()?,
                        expected: reader.u64()?,
                        new: reader.u64()?,
                    },
                    OPCODE_FETCH_ADD => WireOperation::FetchAdd { offset: reader.u64()?, delta: reader.u64()? },
                    opcode => return Err(format!("unknown opcode {opcode}")),
                };
                transfer_bytes += match &operation {
                    WireOperation::Read { length, .. } => u64::from(*length),
                    WireOperation::Write { bytes, .. } => bytes.len() as u64,
                    WireOperation::CompareAndSwap { .. } | WireOperation::FetchAdd { .. } => 8,
                };
                operations.push(operation);
            }
            if transfer_bytes > MAX_TRANSFER_BYTES {
                return Err(format!("a batch moving {transfer_bytes} bytes exceeds the limit of {MAX_TRANSFER_BYTES}"));
            }
            Request::Batch { region, operations }
        }
        kind => return Err(format!("unknown request kind {kind}")),
    };
    if reader.remaining() != 0 {
        return Err(format!("{} bytes after the request", reader.remaining()));
    }
    Ok(request)
}

/// Appends the details of a failed operation after its status byte.
pub(super) fn encode_access_error(response: &mut Vec<u8>, error: AccessError) -> u8 {
    match error {
        AccessError::OutOfBounds { offset, length, size_bytes } => {
            response.extend_from_slice(&offset.to_le_bytes());
            response.extend_from_slice(&length.to_le_bytes());
            response.extend_from_slice(&size_bytes.to_le_bytes());
            STATUS_OUT_OF_BOUNDS
        }
        AccessError::Misaligned { offset } => {
            response.extend_from_slice(&offset.to_le_bytes());
            STATUS_MISALIGNED
        }
        AccessError::TransferTooLarge { length } => {
            response.extend_from_slice(&length.to_le_bytes());
            STATUS_TRANSFER_TOO_LARGE
        }
    }
}

/// What a batch response says went wrong, as the client decodes it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BatchFailure {
    UnknownRegion,
    Access(AccessError),
    BadRequest,
}

/// Decodes a batch response into the operations' outputs (read buffers, previous words).
/// Returns the failure the responder reported, if any; `Err` means the response itself
/// does not match the request (a protocol error).
pub(super) fn decode_batch_response(
    body: &[u8],
    operations: &mut [Operation<'_>],
) -> Result<Option<BatchFailure>, String> {
    let mut reader = Reader::new(body);
    let status = reader.u8()?;
    let completed = usize::from(reader.u16()?);
    if completed > operations.len() || (status == STATUS_OK && completed != operations.len()) {
        return Err(format!("{completed} of {} operations completed with status {status}", operations.len()));
    }
    for operation in operations[..completed].iter_mut() {
        match operation {
            Operation::Read { buffer, .. } => buffer.copy_from_slice(reader.bytes(buffer.len())?),
            Operation::Write { .. } => {}
            Operation::CompareAndSwap { previous, .. } | Operation::FetchAdd { previous, .. } => {
                *previous = reader.u64()?
            }
        }
    }
    let failure = match status {
        STATUS_OK => None,
        STATUS_UNKNOWN_REGION => Some(BatchFailure::UnknownRegion),
        STATUS_OUT_OF_BOUNDS => Some(BatchFailure::Access(AccessError::OutOfBounds {
            offset: reader.u64()?,
            length: reader.u64()?,
            size_bytes: reader.u64()?,
        })),
        STATUS_MISALIGNED => Some(BatchFailure::Access(AccessError::Misaligned { offset: reader.u64()? })),
        STATUS_TRANSFER_TOO_LARGE => {
            Some(BatchFailure::Access(AccessError::TransferTooLarge { length: reader.u64()? }))
        }
        STATUS_BAD_REQUEST => Some(BatchFailure::BadRequest),
        status => return Err(format!("unknown status {status}")),
    };
    if reader.remaining() != 0 {
        return Err(format!("{} bytes after the response", reader.remaining()));
    }
    Ok(failure)
}

/// Decodes a describe response: the region's size, or `None` for an unknown region.
pub(super) fn decode_describe_response(body: &[u8]) -> Result<Option<u64>, String> {
    let mut reader = Reader::new(body);
    let result = match reader.u8()? {
        STATUS_OK => Some(reader.u64()?),
        STATUS_UNKNOWN_REGION => None,
        status => return Err(format!("unexpected status {status} for describe")),
    };
    if reader.remaining() != 0 {
        return Err(format!("{} bytes after the response", reader.remaining()));
    }
    Ok(result)
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn bytes(&mut self, length: usize) -> Result<&'a [u8], String> {
        if length > self.bytes.len() {
            return Err(format!("truncated: {length} bytes wanted, {} left", self.bytes.len()));
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.bytes(N)?.try_into().expect("exactly N bytes"))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 2 of RFC 4231 (a key shorter than the block).
        let mac = super::hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn proofs_are_bound_to_role_nodes_nonces_and_key() {
        let handshake = super::Handshake { from_node: 1, to_node: 2, client_nonce: [7; 32], responder_nonce: [9; 32] };
        let key = [3u8; 32];
        let proof = handshake.client_proof(&key);
        assert!(super::proofs_match(&proof, &handshake.client_proof(&key)));
        assert!(!super::proofs_match(&proof, &handshake.responder_proof(&key)), "roles differ");
        assert!(!super::proofs_match(&proof, &handshake.client_proof(&[4; 32])), "keys differ");
        let other_nonce = super::Handshake { responder_nonce: [8; 32], ..handshake };
        assert!(!super::proofs_match(&proof, &other_nonce.client_proof(&key)), "a fresh nonce, another proof");
        let other_node = super::Handshake { from_node: 5, ..other_nonce };
        assert!(!super::proofs_match(&other_nonce.client_proof(&key), &other_node.client_proof(&key)));
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_batch_survives_encoding_and_parsing() {
        let mut buffer = [0u8; 3];
        let operations = [
            Operation::Read { offset: 8, buffer: &mut buffer },
            Operation::Write { offset: 16, bytes: b"hello" },
            Operation::CompareAndSwap { offset: 24, expected: 1, new: 2, previous: 0 },
            Operation::FetchAdd { offset: 32, delta: 7, previous: 0 },
        ];
        let mut frame = Vec::new();
        encode_batch(&mut frame, RegionId(3), &operations);
        let body_bytes = u32::from_le_bytes(frame[..4].try_into().expect("four bytes")) as usize;
        assert_eq!(body_bytes, frame.len() - 4);
        assert_eq!(
            parse_request(&frame[4..]),
            Ok(Request::Batch {
                region: RegionId(3),
                operations: vec![
                    WireOperation::Read { offset: 8, length: 3 },
                    WireOperation::Write { offset: 16, bytes: b"hello" },
                    WireOperation::CompareAndSwap { offset: 24, expected: 1, new: 2 },
                    WireOperation::FetchAdd { offset: 32, delta: 7 },
                ],
            })
        );
    }

    #[test]
    fn oversized_and_trailing_requests_are_refused() {
        let mut body = vec![KIND_BATCH, 0, 0, 0, 0];
        body.extend_from_slice(&(MAX_BATCH_OPERATIONS as u16 + 1).to_le_bytes());
        assert!(parse_request(&body).is_err(), "too many operations");
        let mut body = vec![KIND_BATCH, 0, 0, 0, 0, 1, 0, OPCODE_READ];
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&(MAX_TRANSFER_BYTES as u32 + 1).to_le_bytes());
        assert!(parse_request(&body).is_err(), "a read above the transfer limit");
        let mut frame = Vec::new();
        encode_describe(&mut frame, RegionId(1));
        frame.push(0);
        assert!(parse_request(&frame[4..]).is_err(), "trailing byte");
    }

    #[test]
    fn a_response_that_does_not_match_the_request_is_a_protocol_error() {
        let mut operations = [Operation::FetchAdd { offset: 0, delta: 1, previous: 0 }];
        let mut body = vec![STATUS_OK];
        body.extend_from_slice(&2u16.to_le_bytes());
        assert!(decode_batch_response(&body, &mut operations).is_err(), "more completions than operations");
        let mut body = vec![STATUS_OK];
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&41u64.to_le_bytes());
        assert_eq!(decode_batch_response(&body, &mut operations), Ok(None));
        assert!(matches!(operations[0], Operation::FetchAdd { previous: 41, .. }));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parsers(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_request(&body);
            let _ = decode_describe_response(&body);
            let mut buffer = [0u8; 16];
            let mut operations = [
                Operation::Read { offset: 0, buffer: &mut buffer },
                Operation::CompareAndSwap { offset: 0, expected: 0, new: 1, previous: 0 },
            ];
            let _ = decode_batch_response(&body, &mut operations);
            if body.len() >= HELLO_BYTES {
                let _ = decode_hello(body[..HELLO_BYTES].try_into().expect("hello bytes"));
            }
        }
    }
}
