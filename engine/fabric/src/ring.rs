//! Message rings: one-way channels from one sender node to the node that owns the ring,
//! built only from one-sided operations, as the paper's circular buffers.
//!
//! A ring is a region of the receiver. Its layout, in bytes:
//!
//! ```text
//! 0    magic word (written last when the ring is created)
//! 8    slot count
//! 16   largest message size
//! 64   head: the number of messages the receiver consumed (its own cache line)
//! 128  slot 0, slot 1, ...: each [sequence word][length word][payload, padded to 8]
//! ```
//!
//! Message `i` (counting from 0) goes to slot `i % slot_count` and carries the sequence
//! number `i + 1`, so a slot's sequence word tells a new message from the one of the
//! previous lap without anyone clearing it. The sender WRITEs length and payload, then
//! WRITEs the sequence word; by the fabric's ordering rule a receiver that sees the
//! sequence also sees the payload. The receiver copies the payload out and then advances
//! the head with a release store; the sender READs the head only when its own count says
//! the ring may be full, so a push costs one batch of two WRITEs.
//!
//! One sender and one receiver per ring (`&mut self`); a node gets one inbound ring per
//! peer ([`super::RegionId::inbound_ring`]). A sender that opens a ring again (after a
//! restart) continues after the last message that was published, so nothing published is
//! lost or delivered twice; a push that did not return `Ok` may be lost.

use super::{Fabric, FabricError, LocalRegion, NodeId, Operation, RegionId, RemoteRegion, MAX_TRANSFER_BYTES};
use std::sync::Arc;

/// Marks an initialised ring ("LHRING" and a layout version).
const RING_MAGIC: u64 = u64::from_le_bytes(*b"LHRING\x00\x01");
const MAGIC_OFFSET: u64 = 0;
const SLOT_COUNT_OFFSET: u64 = 8;
const MAX_MESSAGE_OFFSET: u64 = 16;
const HEAD_OFFSET: u64 = 64;
const SLOTS_OFFSET: u64 = 128;
/// Sequence word and length word in front of every payload.
const SLOT_HEADER_BYTES: u64 = 16;

/// The shape of a ring, fixed when the receiver creates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingGeometry {
    slot_count: u32,
    max_message_bytes: u32,
}

impl RingGeometry {
    /// A ring of `slot_count` slots for messages of at most `max_message_bytes`.
    ///
    /// Panics (a programmer error) without slots, or when a message and its length word
    /// would not fit in one fabric transfer ([`MAX_TRANSFER_BYTES`]).
    pub fn new(slot_count: u32, max_message_bytes: u32) -> RingGeometry {
        assert!(slot_count > 0, "a ring needs at least one slot");
        assert!(
            u64::from(max_message_bytes) + 8 <= MAX_TRANSFER_BYTES,
            "a message and its length word must fit in one fabric transfer"
        );
        RingGeometry { slot_count, max_message_bytes }
    }

    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    pub fn max_message_bytes(&self) -> u32 {
        self.max_message_bytes
    }

    /// The bytes one slot takes: header words and the payload padded to whole words.
    pub fn slot_bytes(&self) -> u64 {
        SLOT_HEADER_BYTES + u64::from(self.max_message_bytes).div_ceil(8) * 8
    }

    /// The size of the region that holds the ring.
    pub fn region_size_bytes(&self) -> u64 {
        SLOTS_OFFSET + u64::from(self.slot_count) * self.slot_bytes()
    }

    fn slot_offset(&self, message_index: u64) -> u64 {
        SLOTS_OFFSET + (message_index % u64::from(self.slot_count)) * self.slot_bytes()
    }
}

/// The receiving end of a ring: owns the region and polls it.
pub struct RingReceiver {
    region: Arc<LocalRegion>,
    geometry: RingGeometry,
    received_count: u64,
}

impl RingReceiver {
    /// Registers the ring's region under `region` and initialises it.
    pub fn create(fabric: &dyn Fabric, region: RegionId, geometry: RingGeometry) -> Result<RingReceiver, FabricError> {
        let local = fabric.register_region(region, geometry.region_size_bytes())?;
        local.store_word(SLOT_COUNT_OFFSET, u64::from(geometry.slot_count))?;
        local.store_word(MAX_MESSAGE_OFFSET, u64::from(geometry.max_message_bytes))?;
        // The magic goes last (release store): a sender that sees it sees the geometry.
        local.store_word(MAGIC_OFFSET, RING_MAGIC)?;
        Ok(RingReceiver { region: local, geometry, received_count: 0 })
    }

    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    /// The number of messages received so far.
    pub fn received_count(&self) -> u64 {
        self.received_count
    }

    /// Takes the next message into `message` (replacing its contents) if one has been
    /// published; returns whether it did.
    pub fn try_receive(&mut self, message: &mut Vec<u8>) -> Result<bool, FabricError> {
        let slot = self.geometry.slot_offset(self.received_count);
        let expected_sequence = self.received_count + 1;
        // Acquire: the length and payload written before the sequence are visible now.
        if self.region.load_word(slot)? != expected_sequence {
            return Ok(false);
        }
        let length = self.region.load_word(slot + 8)?;
        if length > u64::from(self.geometry.max_message_bytes) {
            return Err(FabricError::BadRing {
                node: self.region.node(),
                region: self.region.id(),
                reason: format!("message {expected_sequence} claims {length} bytes, more than a slot holds"),
            });
        }
        message.resize(length as usize, 0);
        self.region.read(slot + SLOT_HEADER_BYTES, message)?;
        self.received_count = expected_sequence;
        // Release: the sender may reuse the slot only after the payload was copied out.
        self.region.store_word(HEAD_OFFSET, self.received_count)?;
        Ok(true)
    }
}

/// Whether [`RingSender::try_push`] published the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Pushed,
    /// Every slot holds a message the receiver has not consumed yet; nothing was written.
    Full,
}

/// The sending end of a ring on another node (or this one).
pub struct RingSender {
    remote: Arc<dyn RemoteRegion>,
    geometry: RingGeometry,
    sent_count: u64,
    /// The receiver's head as last read; the ring has at least `slot_count - (sent -
    /// head)` free slots.
    known_head: u64,
    /// Length word and payload, staged so that they go out as one WRITE.
    staging: Vec<u8>,
}

impl RingSender {
    /// Opens the ring `region` of `node`, reads its geometry and finds where to continue:
    /// after the last message published there (by this node, before a restart too).
    pub fn open(fabric: &dyn Fabric, node: NodeId, region: RegionId) -> Result<RingSender, FabricError> {
        let remote = fabric.open_remote(node, region)?;
        let bad_ring = |reason: String| FabricError::BadRing { node, region, reason };
        if remote.size_bytes() < SLOTS_OFFSET {
            return Err(bad_ring(format!("the region has only {} bytes", remote.size_bytes())));
        }
        let mut header = [0u8; 24];
        let mut head = [0u8; 8];
        remote.execute(&mut [
            Operation::Read { offset: MAGIC_OFFSET, buffer: &mut header },
            Operation::Read { offset: HEAD_OFFSET, buffer: &mut head },
        ])?;
        let word = |index: usize| u64::from_ne_bytes(header[index * 8..index * 8 + 8].try_into().expect("eight bytes"));
        if word(0) != RING_MAGIC {
            return Err(bad_ring("not initialised as a ring (no magic word)".to_string()));
        }
        let (slot_count, max_message_bytes) = (word(1), word(2));
        let geometry = match (u32::try_from(slot_count), u32::try_from(max_message_bytes)) {
            (Ok(slots), Ok(max)) if slots > 0 && u64::from(max) + 8 <= MAX_TRANSFER_BYTES => {
                RingGeometry { slot_count: slots, max_message_bytes: max }
            }
            _ => return Err(bad_ring(format!("invalid geometry: {slot_count} slots of {max_message_bytes} bytes"))),
        };
        if geometry.region_size_bytes() > remote.size_bytes() {
            return Err(bad_ring(format!(
                "{slot_count} slots of {max_message_bytes} bytes do not fit in {} bytes",
                remote.size_bytes()
            )));
        }
        let known_head = u64::from_ne_bytes(head);
        let sent_count = Self::find_published_end(remote.as_ref(), geometry, known_head)?;
        Ok(RingSender { remote, geometry, sent_count, known_head, staging: Vec::new() })
    }

    /// Counts the messages published after `head`: slots whose sequence word continues
    /// the sequence. Slots before the head are consumed and keep their old numbers.
    fn find_published_end(remote: &dyn RemoteRegion, geometry: RingGeometry, head: u64) -> Result<u64, FabricError> {
        let mut end = head;
        let mut sequence_words = [[0u8; 8]; super::MAX_BATCH_OPERATIONS];
        loop {
            let remaining = head + u64::from(geometry.slot_count) - end;
            let count = remaining.min(sequence_words.len() as u64) as usize;
            if count == 0 {
                return Ok(end);
            }
            let mut operations: Vec<Operation<'_>> = sequence_words[..count]
                .iter_mut()
                .enumerate()
                .map(|(index, buffer)| Operation::Read { offset: geometry.slot_offset(end + index as u64), buffer })
                .collect();
            remote.execute(&mut operations)?;
            drop(operations);
            for word in &sequence_words[..count] {
                if u64::from_ne_bytes(*word) != end + 1 {
                    return Ok(end);
                }
                end += 1;
            }
        }
    }

    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    /// The number of messages published through this ring so far.
    pub fn sent_count(&self) -> u64 {
        self.sent_count
    }

    /// Publishes `message`, or reports that the ring is full (back-pressure: try again
    /// after the receiver caught up).
    pub fn try_push(&mut self, message: &[u8]) -> Result<PushOutcome, FabricError> {
        if message.len() as u64 > u64::from(self.geometry.max_message_bytes) {
            return Err(FabricError::MessageTooLarge {
                length: message.len() as u64,
                max_message_bytes: self.geometry.max_message_bytes,
            });
        }
        let slot_count = u64::from(self.geometry.slot_count);
        if self.sent_count - self.known_head >= slot_count {
            let mut head = [0u8; 8];
            self.remote.read(HEAD_OFFSET, &mut head)?;
            let head = u64::from_ne_bytes(head);
            if head < self.known_head || head > self.sent_count {
                return Err(FabricError::BadRing {
                    node: self.remote.node(),
                    region: self.remote.region(),
                    reason: format!("head {head} outside [{}, {}]", self.known_head, self.sent_count),
                });
            }
            self.known_head = head;
            if self.sent_count - self.known_head >= slot_count {
                return Ok(PushOutcome::Full);
            }
        }
        let slot = self.geometry.slot_offset(self.sent_count);
        let sequence = self.sent_count + 1;
        self.staging.clear();
        self.staging.extend_from_slice(&(message.len() as u64).to_ne_bytes());
        self.staging.extend_from_slice(message);
        self.remote.execute(&mut [
            Operation::Write { offset: slot + 8, bytes: &self.staging },
            Operation::Write { offset: slot, bytes: &sequence.to_ne_bytes() },
        ])?;
        self.sent_count = sequence;
        Ok(PushOutcome::Pushed)
    }

    /// Publishes `message`; a full ring is an error ([`FabricError::RingFull`]).
    pub fn push(&mut self, message: &[u8]) -> Result<(), FabricError> {
        match self.try_push(message)? {
            PushOutcome::Pushed => Ok(()),
            PushOutcome::Full => Err(FabricError::RingFull {
                node: self.remote.node(),
                region: self.remote.region(),
                slot_count: self.geometry.slot_count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TcpFabric;

    /// A fabric whose regions are only reached locally: the tcp backend without peers.
    fn local_fabric() -> Arc<TcpFabric> {
        TcpFabric::start(0, "127.0.0.1:0".parse().expect("literal address")).expect("start fabric")
    }

    #[test]
    fn messages_arrive_in_order_across_many_laps() {
        let fabric = local_fabric();
        let mut receiver = RingReceiver::create(fabric.as_ref(), RegionId(1), RingGeometry::new(3, 20)).expect("ring");
        let mut sender = RingSender::open(fabric.as_ref(), 0, RegionId(1)).expect("open");
        let mut message = Vec::new();
        for index in 0..100u64 {
            let payload = vec![index as u8; (index % 21) as usize];
            sender.push(&payload).expect("room");
            assert!(receiver.try_receive(&mut message).expect("receive"));
            assert_eq!(message, payload);
        }
        assert!(!receiver.try_receive(&mut message).expect("receive"), "nothing more");
    }

    #[test]
    fn a_full_ring_pushes_back_until_the_receiver_catches_up() {
        let fabric = local_fabric();
        let mut receiver = RingReceiver::create(fabric.as_ref(), RegionId(1), RingGeometry::new(2, 8)).expect("ring");
        let mut sender = RingSender::open(fabric.as_ref(), 0, RegionId(1)).expect("open");
        assert_eq!(sender.try_push(b"a").expect("push"), PushOutcome::Pushed);
        assert_eq!(sender.try_push(b"b").expect("push"), PushOutcome::Pushed);
        assert_eq!(sender.try_push(b"c").expect("push"), PushOutcome::Full);
        assert!(matches!(sender.push(b"c"), Err(FabricError::RingFull { slot_count: 2, .. })));
        let mut message = Vec::new();
        assert!(receiver.try_receive(&mut message).expect("receive"));
        assert_eq!(sender.try_push(b"c").expect("push"), PushOutcome::Pushed);
        assert!(matches!(sender.push(&[0; 9]), Err(FabricError::MessageTooLarge { length: 9, .. })));
    }

    #[test]
    fn a_reopened_sender_continues_after_the_last_published_message() {
        let fabric = local_fabric();
        let mut receiver = RingReceiver::create(fabric.as_ref(), RegionId(1), RingGeometry::new(4, 8)).expect("ring");
        let mut first = RingSender::open(fabric.as_ref(), 0, RegionId(1)).expect("open");
        for index in 0..6u8 {
            first.push(&[index]).expect("push");
            if index < 3 {
                let mut message = Vec::new();
                assert!(receiver.try_receive(&mut message).expect("receive"));
            }
        }
        drop(first);
        let mut second = RingSender::open(fabric.as_ref(), 0, RegionId(1)).expect("reopen");
        assert_eq!(second.sent_count(), 6);
        second.push(&[6]).expect("push");
        let mut received = Vec::new();
        let mut message = Vec::new();
        while receiver.try_receive(&mut message).expect("receive") {
            received.push(message[0]);
        }
        assert_eq!(received, vec![3, 4, 5, 6]);
    }

    #[test]
    fn a_region_that_is_not_a_ring_is_refused() {
        let fabric = local_fabric();
        fabric.register_region(RegionId(9), 4096).expect("region");
        assert!(matches!(RingSender::open(fabric.as_ref(), 0, RegionId(9)), Err(FabricError::BadRing { .. })));
    }
}
