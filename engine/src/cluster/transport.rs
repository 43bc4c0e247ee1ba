//! Frames between nodes over the fabric's message rings.
//!
//! Each node owns one inbound ring per peer ([`leasehold_fabric::RegionId::inbound_ring`])
//! and pushes into each peer's ring for it. A ring message is a chunk of a byte stream of
//! [`wire`] frames, prefixed by the sender's incarnation and session: a new pair starts a
//! new stream, so a peer that restarted, or a sender that had to reopen a ring after a
//! fabric error, never leaves the receiver with half a frame.
//!
//! Threads: one receiver per node polls every inbound ring and hands complete frames to a
//! callback (spinning briefly, then sleeping in short steps when idle, so that several
//! nodes can share a small machine); one sender per peer drains that peer's outbox, which
//! callers fill with [`Transport::send`] without waiting for the fabric. Frames queued
//! while a push is in flight go out together in the next ring message, so busy nodes
//! batch naturally and idle nodes send at once. A sender per peer, so that a push to a
//! peer that does not answer (up to the fabric's response timeout, 10 s over tcp) never
//! holds back frames to the others.
//!
//! Delivery: frames reach a live peer in order, exactly once. Frames sent to a peer that
//! is down, or that restarts before reading them, are lost; the cluster driver's view
//! agreement resynchronises everything after a restart, so nothing depends on them.
//!
//! A push that fails may still have been published: over tcp, a peer cut off for longer
//! than the fabric's response timeout may have performed the WRITEs and only the response
//! was lost. So a failed push keeps the stream as it is (session, pending bytes, offset),
//! and the reopened ring, which knows the last message published, tells whether the
//! chunk arrived: if it did, the stream goes on after it; if not, the same chunk goes
//! again. Sending it again in a new session would deliver its frames twice, and the
//! driver counts handovers and write-backs (a duplicate starts transactions early).

use super::wire::{self, Frame};
use crate::model::NodeId;
use leasehold_fabric::{Fabric, FabricError, PushOutcome, RegionId, RingGeometry, RingReceiver, RingSender};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Slots per inbound ring, and the largest ring message (chunks of the frame stream).
const RING_SLOTS: u32 = 64;
const RING_MESSAGE_BYTES: u32 = 256 << 10;
/// Incarnation and session in front of every ring message.
const CHUNK_HEADER_BYTES: usize = 8;
/// An outbox that grows past this (a peer that is down for long) is dropped.
const OUTBOX_BYTES_MAX: usize = 512 << 20;

/// Receives every frame from peers, on the receiver thread.
pub type Deliver = Box<dyn FnMut(NodeId, Frame) + Send>;

/// One node's connections to its peers.
pub struct Transport {
    me: NodeId,
    node_count: usize,
    incarnation: u32,
    fabric: Arc<dyn Fabric>,
    outboxes: Vec<Mutex<Vec<u8>>>,
    reconnect: Vec<AtomicBool>,
    /// Per peer: whether its sender has work, and the signal that wakes it.
    wakeups: Vec<(Mutex<bool>, Condvar)>,
    stopping: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Transport {
    /// Creates this node's inbound rings and starts the receiver and the senders.
    pub fn start(
        fabric: Arc<dyn Fabric>,
        me: NodeId,
        node_count: u16,
        incarnation: u32,
        deliver: Deliver,
    ) -> Result<Arc<Transport>, FabricError> {
        let node_count = usize::from(node_count);
        let geometry = RingGeometry::new(RING_SLOTS, RING_MESSAGE_BYTES);
        let mut receivers = Vec::new();
        for peer in 0..node_count as NodeId {
            if peer != me {
                receivers.push((peer, RingReceiver::create(fabric.as_ref(), RegionId::inbound_ring(peer), geometry)?));
            }
        }
        let transport = Arc::new(Transport {
            me,
            node_count,
            incarnation,
            fabric,
            outboxes: (0..node_count).map(|_| Mutex::new(Vec::new())).collect(),
            reconnect: (0..node_count).map(|_| AtomicBool::new(false)).collect(),
            wakeups: (0..node_count).map(|_| (Mutex::new(false), Condvar::new())).collect(),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let receiving = transport.clone();
        let receiver = std::thread::Builder::new()
            .name("leasehold-peer-receive".into())
            .spawn(move || receiving.receive_loop(receivers, deliver))
            .map_err(|error| FabricError::Io { context: "start the peer receiver".into(), source: error })?;
        transport.threads.lock().push(receiver);
        for peer in transport.peers() {
            let sending = transport.clone();
            let sender = std::thread::Builder::new()
                .name(format!("leasehold-peer-send-{peer}"))
                .spawn(move || sending.send_loop(peer));
            match sender {
                Ok(sender) => transport.threads.lock().push(sender),
                Err(error) => {
                    transport.stop();
                    return Err(FabricError::Io { context: "start a peer sender".into(), source: error });
                }
            }
        }
        Ok(transport)
    }

    pub fn node_count(&self) -> usize {
        self.node_count
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The other nodes.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.node_count as NodeId).filter(move |&node| node != self.me)
    }

    /// Queues `frame` for `to`; it leaves with the sender thread's next push.
    pub fn send(&self, to: NodeId, frame: &Frame) {
        assert_ne!(to, self.me, "a node does not send frames to itself");
        {
            let mut outbox = self.outboxes[usize::from(to)].lock();
            if outbox.len() > OUTBOX_BYTES_MAX {
                tracing::error!(peer = to, bytes = outbox.len(), "dropping frames queued for an unreachable peer");
                outbox.clear();
            }
            wire::encode(frame, &mut outbox);
        }
        self.wake_sender(to);
    }

    /// Queues `frame` for every peer.
    pub fn broadcast(&self, frame: &Frame) {
        for peer in self.peers() {
            self.send(peer, frame);
        }
    }

    /// Reopens the ring to `peer` before the next push: it restarted, so the handle we
    /// hold may address its previous incarnation's memory.
    pub fn reconnect(&self, peer: NodeId) {
        self.reconnect[usize::from(peer)].store(true, Ordering::Release);
        self.wake_sender(peer);
    }

    fn wake_sender(&self, peer: NodeId) {
        let (work, signal) = &self.wakeups[usize::from(peer)];
        *work.lock() = true;
        signal.notify_one();
    }

    /// Stops the receiver and the senders (frames still queued are dropped).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        for peer in self.peers() {
            self.wake_sender(peer);
        }
        let threads = std::mem::take(&mut *self.threads.lock());
        for thread in threads {
            let _ = thread.join();
        }
    }

    fn receive_loop(&self, mut receivers: Vec<(NodeId, RingReceiver)>, mut deliver: Deliver) {
        struct Stream {
            session: Option<(u32, u32)>,
            broken: bool,
            bytes: Vec<u8>,
        }
        let mut streams: Vec<Stream> =
            receivers.iter().map(|_| Stream { session: None, broken: false, bytes: Vec::new() }).collect();
        let mut message = Vec::new();
        let mut idle_rounds = 0u32;

        while !self.stopping.load(Ordering::Acquire) {
            let mut received = false;
            for ((peer, receiver), stream) in receivers.iter_mut().zip(&mut streams) {
                // A bounded number per peer per round keeps one busy peer from starving
                // the others.
                for _ in 0..16 {
                    match receiver.try_receive(&mut message) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(error) => {
                            tracing::error!(%error, peer = *peer, "unreadable inbound ring");
                            break;
                        }
                    }
                    received = true;
                    if message.len() < CHUNK_HEADER_BYTES {
                        tracing::error!(peer = *peer, "ring message without a stream header");
                        continue;
                    }
                    let incarnation = u32::from_le_bytes(message[0..4].try_into().expect("four bytes"));
                    let session = u32::from_le_bytes(message[4..8].try_into().expect("four bytes"));
                    if stream.session != Some((incarnation, session)) {
                        stream.session = Some((incarnation, session));
                        stream.bytes.clear();
                        stream.broken = false;
                    }
                    if stream.broken {
                        continue;
                    }
                    stream.bytes.extend_from_slice(&message[CHUNK_HEADER_BYTES..]);
                    let mut consumed = 0;
                    loop {
                        match wire::decode(&stream.bytes[consumed..]) {
                            Ok(Some((frame, used))) => {
                                consumed += used;
                                deliver(*peer, frame);
                            }
                            Ok(None) => break,
                            Err(error) => {
                                tracing::error!(%error, peer = *peer, "malformed frame; ignoring the rest of the stream");
                                stream.broken = true;
                                consumed = stream.bytes.len();
                                break;
                            }
                        }
                    }
                    stream.bytes.drain(..consumed);
                }
            }
            if received {
                idle_rounds = 0;
            } else {
                idle_rounds = idle_rounds.saturating_add(1);
                // Spin briefly (a reply often follows at once), then sleep in short
                // steps: yielding instead would keep the CPU from nodes sharing the host.
                if idle_rounds < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
    }

    /// The sender of `peer`'s frames, until the transport stops.
    fn send_loop(&self, peer: NodeId) {
        let mut ring: Option<RingSender> = None;
        let mut session: u32 = 1;
        let mut pending: Vec<u8> = Vec::new();
        let mut offset: usize = 0;
        // After a failed push: the messages published before it and where its chunk ended
        // in `pending`, until the reopened ring tells whether it arrived.
        let mut unconfirmed: Option<(u64, usize)> = None;
        let mut chunk = Vec::with_capacity(RING_MESSAGE_BYTES as usize);
        let (work, signal) = &self.wakeups[usize::from(peer)];
        // How long to wait before retrying: a full ring drains fast, an unreachable peer
        // (not started yet, or restarting) does not.
        let mut retry_after: Option<Duration> = None;
        loop {
            {
                let mut work = work.lock();
                if !*work && !self.stopping.load(Ordering::Acquire) {
                    signal.wait_for(&mut work, retry_after.unwrap_or(Duration::from_millis(100)));
                }
                *work = false;
            }
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            retry_after = None;
            let mut retry =
                |after: Duration| retry_after = Some(retry_after.map_or(after, |current| current.min(after)));
            if self.reconnect[usize::from(peer)].swap(false, Ordering::AcqRel) {
                // A stream is under way if a ring is open, or was until a push failed.
                let streaming = ring.take().is_some() | unconfirmed.take().is_some();
                Self::new_stream(streaming, offset, &mut pending, &mut session);
                offset = 0;
            }
            if pending.is_empty() {
                std::mem::swap(&mut pending, &mut *self.outboxes[usize::from(peer)].lock());
                offset = 0;
            }
            if pending.is_empty() {
                continue;
            }
            if ring.is_none() {
                match RingSender::open(self.fabric.as_ref(), peer, RegionId::inbound_ring(self.me)) {
                    Ok(opened) => {
                        if let Some((published_before, end)) = unconfirmed.take() {
                            let published = opened.sent_count();
                            if published == published_before + 1 {
                                tracing::warn!(peer, "the failed push had arrived; the stream goes on after it");
                                offset = end;
                            } else if published == published_before {
                                tracing::warn!(peer, "the failed push had not arrived; sending it again");
                            } else {
                                // Not the ring pushed to before: the peer restarted.
                                Self::new_stream(true, offset, &mut pending, &mut session);
                                offset = 0;
                                retry(Duration::ZERO);
                            }
                        }
                        ring = Some(opened);
                    }
                    Err(error) => {
                        tracing::debug!(%error, peer, "peer not reachable yet");
                        retry(Duration::from_millis(10));
                        continue;
                    }
                }
            }
            let open = ring.as_mut().expect("opened above");
            let payload_max = open.geometry().max_message_bytes() as usize - CHUNK_HEADER_BYTES;
            while offset < pending.len() {
                let end = (offset + payload_max).min(pending.len());
                chunk.clear();
                chunk.extend_from_slice(&self.incarnation.to_le_bytes());
                chunk.extend_from_slice(&session.to_le_bytes());
                chunk.extend_from_slice(&pending[offset..end]);
                match open.try_push(&chunk) {
                    Ok(PushOutcome::Pushed) => offset = end,
                    Ok(PushOutcome::Full) => {
                        retry(Duration::from_micros(200));
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, peer, "push to peer failed; reopening its ring");
                        // It may have been published all the same (see the module
                        // comment): the stream stays as it is until the reopened ring
                        // tells.
                        unconfirmed = Some((open.sent_count(), end));
                        ring = None;
                        retry(Duration::from_millis(10));
                        break;
                    }
                }
            }
            if offset == pending.len() {
                pending.clear();
                offset = 0;
            } else {
                retry(Duration::from_micros(200));
            }
        }
    }

    /// Starts a new stream to a peer that restarted: the next push opens a new session
    /// (if one was `streaming`). A stream cut in the middle of a frame cannot be continued
    /// in a new session, so the rest of a partly sent buffer is dropped with it.
    fn new_stream(streaming: bool, offset: usize, pending: &mut Vec<u8>, session: &mut u32) {
        if streaming {
            *session = session.wrapping_add(1);
        }
        if offset > 0 {
            pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_fabric::tcp::TcpFabric;
    use leasehold_fabric::{LocalRegion, Operation, RemoteRegion};
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicU64;

    /// How the injected failure of a push looks to the sender.
    #[derive(Clone, Copy)]
    enum Lost {
        /// The WRITEs took effect and the response was lost (a tcp peer cut off for
        /// longer than the response timeout).
        Response,
        /// Nothing reached the peer.
        Request,
    }

    /// A fabric whose pushes (batches with a WRITE) fail as scripted, by push number.
    struct Flaky {
        inner: Arc<TcpFabric>,
        pushes: Arc<AtomicU64>,
        faults: Arc<BTreeMap<u64, Lost>>,
    }

    struct FlakyRegion {
        inner: Arc<dyn RemoteRegion>,
        pushes: Arc<AtomicU64>,
        faults: Arc<BTreeMap<u64, Lost>>,
    }

    impl Fabric for Flaky {
        fn node_id(&self) -> NodeId {
            self.inner.node_id()
        }
        fn backend_name(&self) -> &'static str {
            "flaky"
        }
        fn register_region(&self, region: RegionId, size_bytes: u64) -> Result<Arc<LocalRegion>, FabricError> {
            self.inner.register_region(region, size_bytes)
        }
        fn deregister_region(&self, region: RegionId) -> Result<(), FabricError> {
            self.inner.deregister_region(region)
        }
        fn open_remote(&self, node: NodeId, region: RegionId) -> Result<Arc<dyn RemoteRegion>, FabricError> {
            let inner = self.inner.open_remote(node, region)?;
            Ok(Arc::new(FlakyRegion { inner, pushes: self.pushes.clone(), faults: self.faults.clone() }))
        }
    }

    impl RemoteRegion for FlakyRegion {
        fn node(&self) -> NodeId {
            self.inner.node()
        }
        fn region(&self) -> RegionId {
            self.inner.region()
        }
        fn size_bytes(&self) -> u64 {
            self.inner.size_bytes()
        }
        fn execute(&self, operations: &mut [Operation<'_>]) -> Result<(), FabricError> {
            if !operations.iter().any(|operation| matches!(operation, Operation::Write { .. })) {
                return self.inner.execute(operations);
            }
            let push = self.pushes.fetch_add(1, Ordering::SeqCst);
            let unreachable = |reason: &str| FabricError::PeerUnreachable { node: self.node(), reason: reason.into() };
            match self.faults.get(&push) {
                None => self.inner.execute(operations),
                Some(Lost::Response) => {
                    self.inner.execute(operations)?;
                    Err(unreachable("the response was lost (injected)"))
                }
                Some(Lost::Request) => Err(unreachable("the request was lost (injected)")),
            }
        }
    }

    /// Frames reach the peer exactly once and in order although pushes fail, whether the
    /// failed push took effect (only its response was lost) or not.
    #[test]
    fn a_failed_push_is_delivered_exactly_once() {
        let loopback = "127.0.0.1:0".parse().expect("literal address");
        let (fabric_0, fabric_1) =
            (TcpFabric::start(0, loopback).expect("node 0"), TcpFabric::start(1, loopback).expect("node 1"));
        fabric_0.add_peer(1, fabric_1.local_address());
        fabric_1.add_peer(0, fabric_0.local_address());
        let faults = [(2, Lost::Response), (5, Lost::Request), (8, Lost::Response), (9, Lost::Response)];
        let flaky = Arc::new(Flaky {
            inner: fabric_0,
            pushes: Arc::new(AtomicU64::new(0)),
            faults: Arc::new(faults.into_iter().collect()),
        });
        let (delivered, received) = std::sync::mpsc::channel();
        let receiver = Transport::start(
            fabric_1,
            1,
            2,
            1,
            Box::new(move |from, frame| {
                let _ = delivered.send((from, frame));
            }),
        )
        .expect("node 1's transport");
        let sender = Transport::start(flaky, 0, 2, 1, Box::new(|_, _| {})).expect("node 0's transport");
        // One frame at a time, so that each goes in a push of its own.
        for epoch in 1..=12 {
            sender.send(1, &Frame::Durable { generation: 7, epoch });
            let (from, frame) = received.recv_timeout(Duration::from_secs(10)).expect("the frame arrives");
            assert_eq!(from, 0);
            assert!(matches!(frame, Frame::Durable { generation: 7, epoch: e } if e == epoch), "{frame:?} for {epoch}");
        }
        assert!(received.recv_timeout(Duration::from_millis(300)).is_err(), "no frame arrives twice");
        sender.stop();
        receiver.stop();
    }
}
