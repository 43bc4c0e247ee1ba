//! Frames between nodes over the fabric's message rings.
//!
//! Each node owns one inbound ring per peer ([`leasehold_fabric::RegionId::inbound_ring`])
//! and pushes into each peer's ring for it. A ring message is a chunk of a byte stream of
//! [`wire`] frames, prefixed by the sender's incarnation and session: a new pair starts a
//! new stream, so a peer that restarted, or a sender that had to reopen a ring after a
//! fabric error, never leaves the receiver with half a frame.
//!
//! Two threads per node: the receiver polls every inbound ring and hands complete frames
//! to a callback (spinning briefly, then sleeping in short steps when idle, so that
//! several nodes can share a small machine); the sender drains per-peer outboxes, which
//! callers fill with [`Transport::send`] without waiting for the fabric. Frames queued
//! while a push is in flight go out together in the next ring message, so busy nodes
//! batch naturally and idle nodes send at once.
//!
//! Delivery: frames reach a live peer in order, exactly once. Frames sent to a peer that
//! is down, or that restarts before reading them, are lost; the cluster driver's view
//! agreement resynchronises everything after a restart, so nothing depends on them.

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
    work: Mutex<bool>,
    work_signal: Condvar,
    stopping: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Transport {
    /// Creates this node's inbound rings and starts the receiver and sender threads.
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
            work: Mutex::new(false),
            work_signal: Condvar::new(),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let receiving = transport.clone();
        let receiver = std::thread::Builder::new()
            .name("leasehold-peer-receive".into())
            .spawn(move || receiving.receive_loop(receivers, deliver))
            .map_err(|error| FabricError::Io { context: "start the peer receiver".into(), source: error })?;
        let sending = transport.clone();
        let sender = std::thread::Builder::new()
            .name("leasehold-peer-send".into())
            .spawn(move || sending.send_loop())
            .map_err(|error| FabricError::Io { context: "start the peer sender".into(), source: error })?;
        transport.threads.lock().extend([receiver, sender]);
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
        self.wake_sender();
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
        self.wake_sender();
    }

    fn wake_sender(&self) {
        *self.work.lock() = true;
        self.work_signal.notify_one();
    }

    /// Stops both threads (frames still queued are dropped).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_sender();
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

    fn send_loop(&self) {
        struct PeerSender {
            ring: Option<RingSender>,
            session: u32,
            pending: Vec<u8>,
            offset: usize,
            diag: Option<u64>,
        }
        let mut peers: Vec<PeerSender> = (0..self.node_count)
            .map(|_| PeerSender { ring: None, session: 1, pending: Vec::new(), offset: 0, diag: None })
            .collect();
        let mut chunk = Vec::with_capacity(RING_MESSAGE_BYTES as usize);
        // How long to wait before retrying: a full ring drains fast, an unreachable peer
        // (not started yet, or restarting) does not.
        let mut retry_after: Option<Duration> = None;
        loop {
            {
                let mut work = self.work.lock();
                if !*work && !self.stopping.load(Ordering::Acquire) {
                    self.work_signal.wait_for(&mut work, retry_after.unwrap_or(Duration::from_millis(100)));
                }
                *work = false;
            }
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            retry_after = None;
            let mut retry =
                |after: Duration| retry_after = Some(retry_after.map_or(after, |current| current.min(after)));
            for peer in self.peers() {
                let state = &mut peers[usize::from(peer)];
                if self.reconnect[usize::from(peer)].swap(false, Ordering::AcqRel) {
                    Self::drop_ring(state.offset, &mut state.pending, &mut state.ring, &mut state.session);
                    state.offset = 0;
                }
                if state.pending.is_empty() {
                    std::mem::swap(&mut state.pending, &mut *self.outboxes[usize::from(peer)].lock());
                    state.offset = 0;
                }
                if state.pending.is_empty() {
                    continue;
                }
                if state.ring.is_none() {
                    match RingSender::open(self.fabric.as_ref(), peer, RegionId::inbound_ring(self.me)) {
                        Ok(ring) => {
                            if let Some(before) = state.diag.take() {
                                tracing::warn!(peer, before, after = ring.sent_count(), "DIAG reopened ring after a failed push");
                            }
                            state.ring = Some(ring)
                        }
                        Err(error) => {
                            tracing::debug!(%error, peer, "peer not reachable yet");
                            retry(Duration::from_millis(10));
                            continue;
                        }
                    }
                }
                let ring = state.ring.as_mut().expect("opened above");
                let payload_max = ring.geometry().max_message_bytes() as usize - CHUNK_HEADER_BYTES;
                while state.offset < state.pending.len() {
                    let end = (state.offset + payload_max).min(state.pending.len());
                    chunk.clear();
                    chunk.extend_from_slice(&self.incarnation.to_le_bytes());
                    chunk.extend_from_slice(&state.session.to_le_bytes());
                    chunk.extend_from_slice(&state.pending[state.offset..end]);
                    match ring.try_push(&chunk) {
                        Ok(PushOutcome::Pushed) => state.offset = end,
                        Ok(PushOutcome::Full) => {
                            retry(Duration::from_micros(200));
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, peer, "push to peer failed; reopening its ring");
                            state.diag = Some(ring.sent_count());
                            Self::drop_ring(state.offset, &mut state.pending, &mut state.ring, &mut state.session);
                            state.offset = 0;
                            retry(Duration::from_millis(10));
                            break;
                        }
                    }
                }
                if state.offset == state.pending.len() {
                    state.pending.clear();
                    state.offset = 0;
                } else {
                    retry(Duration::from_micros(200));
                }
            }
        }
    }

    /// Forgets a ring handle; the next one starts a new session. A stream cut in the
    /// middle of a frame cannot be continued in a new session, so the rest of a partly
    /// sent buffer is dropped with it.
    fn drop_ring(offset: usize, pending: &mut Vec<u8>, ring: &mut Option<RingSender>, session: &mut u32) {
        if ring.take().is_some() {
            *session = session.wrapping_add(1);
        }
        if offset > 0 {
            pending.clear();
        }
    }
}
