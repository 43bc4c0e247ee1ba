//! A deterministic simulation of the cluster's epoch, view and lease protocol.
//!
//! Several nodes run from one seeded scheduler. Between two nodes runs a [`Channel`]: the
//! link under it delays every frame at random (so frames overtake each other, within a
//! channel and across channels), loses some (the sender pushes a lost frame again after
//! a timeout, and may lose it again) and duplicates some (a push that arrived although
//! its acknowledgement was lost, sent again). Above the link the channel is the
//! transport's stream: frames carry sequence numbers, the receiver discards what it has
//! seen and hands frames to the protocol in order, exactly once, as
//! `cluster::transport` does over the fabric's rings. Nodes crash (memory, unsynced
//! epochs and every channel touching them lost, synced epochs kept) and restart with a
//! new incarnation, and partitions hold a node's traffic until they heal. The decisions
//! are the engine's own code: [`ViewAgreement`] (which view, which epoch to keep),
//! [`DurableEverywhere`] (when replies are released), [`leases_as_of`] and
//! [`LeaseTable`] (who holds a key after an agreement). What the
//! engine does with threads, rings and RocksDB around those decisions is modelled here in
//! a few lines per step. Time only orders events; the protocol has no timeouts that
//! decide safety, so clock skew does not arise.
//!
//! Each epoch every node sequences a few list-append transactions (each appends its id to
//! one key) and may give up the lease of a key it holds; the key's holder applies the
//! appends, and a moved key's value travels with the old holder's batch of the epoch the
//! move takes effect. Checkers, run on every seed:
//! * at most one node holds a key in any epoch of any generation;
//! * every acknowledged transaction is in the final committed log, exactly once;
//! * every node that finished an epoch logged the same transactions for it;
//! * every key's value at its holder is the serial replay of the committed log;
//! * the cluster finishes: after faults stop, every node reaches the same epoch.
//!
//! A run is reproduced from its seed alone. [`PlantedBug`] switches plant protocol bugs
//! that the checkers must catch (the self-test).

use leasehold_engine::cluster::lease::LeaseTable;
use leasehold_engine::cluster::protocol::{leases_as_of, DurableEverywhere, StoredMove, ViewAgreement};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

type NodeId = u16;
type TxnId = u64;
/// The transactions a node logged for one epoch: id and position.
type LoggedTransactions = Vec<(TxnId, u32)>;

/// A protocol bug planted on purpose, to show that the checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Replies are released once the epoch is durable here, not on every node.
    ReplyOnLocalDurability,
    /// After a restart a node keeps its own durable epochs instead of the smallest of all.
    AgreeOnOwnDurableEpoch,
    /// A lease move takes effect on the new holder one epoch early.
    MoveTakesEffectEarly,
}

/// The shape of one simulated run.
#[derive(Clone, Copy, Debug)]
pub struct SimulationConfig {
    pub nodes: u16,
    pub keys: u32,
    /// Epochs the first node sequences before the faults stop.
    pub epochs: u64,
    pub transactions_per_epoch: u32,
    /// Chance per scheduler step (in 1/10,000) that a node crashes, or a partition starts.
    pub crash_per_10k: u32,
    pub partition_per_10k: u32,
    pub delay_max: u64,
    /// Chance (in 1/10,000) that the link loses a frame, and that it delivers one twice.
    pub loss_per_10k: u32,
    pub duplicate_per_10k: u32,
    /// Steps after which the sender pushes a lost frame again.
    pub retransmit_after: u64,
    pub planted: Option<PlantedBug>,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            nodes: 3,
            keys: 12,
            epochs: 30,
            transactions_per_epoch: 3,
            crash_per_10k: 60,
            partition_per_10k: 40,
            delay_max: 20,
            loss_per_10k: 300,
            duplicate_per_10k: 200,
            retransmit_after: 40,
            planted: None,
        }
    }
}

/// What a run did and found.
#[derive(Clone, Debug, Default)]
pub struct SimulationReport {
    pub seed: u64,
    pub messages: u64,
    pub crashes: u64,
    pub partitions: u64,
    /// Frames the link lost (each pushed again), delivered twice, and delivered before
    /// an earlier frame of their channel (held back by the stream until the gap filled).
    pub frames_lost: u64,
    pub frames_duplicated: u64,
    pub frames_overtaking: u64,
    pub agreements: u64,
    pub lease_moves: u64,
    pub acknowledged: u64,
    pub committed_epochs: u64,
    pub violations: Vec<String>,
}

/// SplitMix64: small, seeded, the same everywhere.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
    fn chance(&mut self, per_10k: u32) -> bool {
        self.below(10_000) < u64::from(per_10k)
    }
}

#[derive(Clone, Debug)]
enum Message {
    Resync {
        view: Vec<u32>,
        durable_epoch: u64,
        answer_wanted: bool,
    },
    Batch {
        generation: u64,
        epoch: u64,
        transactions: Vec<(TxnId, u32)>,
        announce: Vec<(u32, NodeId)>,
        values: Vec<(u32, Vec<TxnId>)>,
    },
    Durable {
        generation: u64,
        epoch: u64,
    },
}

/// One epoch as a node logged it: everyone's transactions, the moves announced, and the
/// values of the keys this node wrote (None: the key left this node).
#[derive(Clone, Debug)]
struct Record {
    epoch: u64,
    transactions: Vec<(NodeId, Vec<(TxnId, u32)>)>,
    moves: Vec<StoredMove>,
    writes: Vec<(u32, Option<Vec<TxnId>>)>,
}

/// What survives a crash.
#[derive(Clone, Debug, Default)]
struct Disk {
    incarnation: u32,
    records: Vec<Record>,
}

struct Node {
    me: NodeId,
    alive: bool,
    disk: Disk,
    /// Executed, not synced yet: lost in a crash.
    unsynced: Vec<Record>,
    views: ViewAgreement,
    durable: DurableEverywhere,
    synced: bool,
    generation: u64,
    epoch: u64,
    table: LeaseTable,
    values: HashMap<u32, Vec<TxnId>>,
    /// Moves in effect from an epoch, by epoch.
    pending_moves: BTreeMap<u64, Vec<StoredMove>>,
    /// Batches received, by epoch, from each node.
    batches: BTreeMap<u64, BTreeMap<NodeId, Message>>,
    /// Own transactions per unacknowledged epoch.
    awaiting: VecDeque<(u64, Vec<TxnId>)>,
    moving: HashSet<u32>,
}

fn storage_key(key: u32) -> Vec<u8> {
    key.to_be_bytes().to_vec()
}

/// The key whose storage key is `storage_key` (the inverse of [`storage_key`]).
fn key_number(storage_key: &[u8]) -> u32 {
    u32::from_be_bytes(storage_key.try_into().expect("simulated storage keys are 4 bytes"))
}

/// Records a broken invariant (the first few of a run are enough to debug it).
fn record_violation(report: &mut SimulationReport, what: String) {
    if report.violations.len() < 20 {
        report.violations.push(what);
    }
}

impl Node {
    fn new(me: NodeId, nodes: u16, disk: Disk) -> Node {
        let durable_epoch = disk.records.last().map_or(0, |record| record.epoch);
        Node {
            me,
            alive: true,
            views: ViewAgreement::new(nodes, me, disk.incarnation),
            durable: DurableEverywhere::new(nodes, me, durable_epoch),
            disk,
            unsynced: Vec::new(),
            synced: false,
            generation: 0,
            epoch: durable_epoch,
            table: LeaseTable::home(nodes),
            values: HashMap::new(),
            pending_moves: BTreeMap::new(),
            batches: BTreeMap::new(),
            awaiting: VecDeque::new(),
            moving: HashSet::new(),
        }
    }
}

/// One sender-to-receiver session: a lossy, reordering link under an in-order stream.
#[derive(Default)]
struct Channel {
    /// The sequence number of the next frame sent.
    next_sent: u64,
    /// Copies on the link: (arrival step, sequence number, frame). Unordered.
    link: Vec<(u64, u64, Message)>,
    /// The sequence number the receiver hands to the protocol next.
    next_delivered: u64,
    /// Frames that arrived ahead of a gap.
    held: BTreeMap<u64, Message>,
}

struct Simulation {
    config: SimulationConfig,
    random: Random,
    now: u64,
    nodes: Vec<Node>,
    /// Per (from, to): the session between them (dropped when either end crashes).
    channels: BTreeMap<(NodeId, NodeId), Channel>,
    partitioned: Option<(NodeId, u64)>,
    next_txn: TxnId,
    acknowledged: HashSet<TxnId>,
    /// (key, generation, epoch) -> the node that held it.
    holders: HashMap<(u32, u64, u64), NodeId>,
    report: SimulationReport,
    faults_over: bool,
}

impl Simulation {
    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        let channel = self.channels.entry((from, to)).or_default();
        let sequence = channel.next_sent;
        channel.next_sent += 1;
        // Each loss costs the sender a timeout before it pushes the frame again.
        let mut at = self.now + 1 + self.random.below(self.config.delay_max);
        while self.random.chance(self.config.loss_per_10k) {
            self.report.frames_lost += 1;
            at += self.config.retransmit_after + self.random.below(self.config.delay_max);
        }
        if self.random.chance(self.config.duplicate_per_10k) {
            self.report.frames_duplicated += 1;
            let again = at + self.config.retransmit_after + self.random.below(self.config.delay_max);
            channel.link.push((again, sequence, message.clone()));
        }
        channel.link.push((at, sequence, message));
    }

    /// Frames whose copies arrived by now, handed over in order: (from, to, frame).
    fn arrivals(&mut self) -> Vec<(NodeId, NodeId, Message)> {
        let mut ready = Vec::new();
        for (&(from, to), channel) in &mut self.channels {
            if self.partitioned.is_some_and(|(p, _)| p == from || p == to) {
                continue;
            }
            let mut index = 0;
            while index < channel.link.len() {
                if channel.link[index].0 > self.now {
                    index += 1;
                    continue;
                }
                let (_, sequence, message) = channel.link.swap_remove(index);
                // The stream discards a copy it has seen (delivered or held).
                if sequence < channel.next_delivered || channel.held.contains_key(&sequence) {
                    continue;
                }
                if sequence > channel.next_delivered {
                    self.report.frames_overtaking += 1;
                }
                channel.held.insert(sequence, message);
            }
            while let Some(message) = channel.held.remove(&channel.next_delivered) {
                channel.next_delivered += 1;
                ready.push((from, to, message));
            }
        }
        ready
    }

    fn broadcast(&mut self, from: NodeId, message: Message) {
        for to in 0..self.config.nodes {
            if to != from {
                self.send(from, to, message.clone());
            }
        }
    }

    fn violation(&mut self, what: String) {
        record_violation(&mut self.report, what);
    }

    fn announce_view(&mut self, node: NodeId) {
        let n = &mut self.nodes[usize::from(node)];
        // The commit thread's flush: everything executed becomes durable first.
        let flushed: Vec<Record> = n.unsynced.drain(..).collect();
        n.disk.records.extend(flushed);
        let durable_epoch = n.disk.records.last().map_or(0, |record| record.epoch);
        n.durable.made_durable(durable_epoch);
        let view = n.views.view().to_vec();
        self.broadcast(node, Message::Resync { view, durable_epoch, answer_wanted: true });
    }

    fn try_agree(&mut self, node: NodeId) {
        let planted = self.config.planted;
        let n = &mut self.nodes[usize::from(node)];
        if n.synced {
            return;
        }
        let own = n.disk.records.last().map_or(0, |record| record.epoch);
        let Some(mut agreement) = n.views.agreement(own) else { return };
        if planted == Some(PlantedBug::AgreeOnOwnDurableEpoch) {
            agreement.epoch = own;
        }
        let agreed = agreement.epoch;
        // The commit thread's rollback: epochs up to `agreed` answer, newer ones retry.
        while let Some((epoch, transactions)) = n.awaiting.pop_front() {
            if epoch <= agreed {
                self.acknowledged.extend(transactions);
            }
        }
        n.disk.records.retain(|record| record.epoch <= agreed);
        n.durable.rolled_back(agreed, agreement.generation);
        let stored: Vec<StoredMove> = n.disk.records.iter().flat_map(|record| record.moves.iter().cloned()).collect();
        let (in_effect, next) = leases_as_of(stored, agreed);
        n.table = LeaseTable::home(self.config.nodes).with_moves(in_effect);
        n.pending_moves.clear();
        n.moving.clear();
        for stored in next {
            n.moving.insert(key_number(&stored.key));
            n.pending_moves.entry(stored.effective_epoch).or_default().push(stored);
        }
        // Values reload from storage: the newest write of each key this node holds.
        n.values.clear();
        for record in &n.disk.records {
            for (key, value) in &record.writes {
                match value {
                    Some(value) => n.values.insert(*key, value.clone()),
                    None => n.values.remove(key),
                };
            }
        }
        let me = n.me;
        let table = &n.table;
        n.values.retain(|key, _| table.holder(&storage_key(*key)) == me);
        n.epoch = agreed;
        n.generation = agreement.generation;
        let generation = agreement.generation;
        n.batches.retain(|&epoch, _| epoch > agreed);
        for batches in n.batches.values_mut() {
            batches.retain(|_, batch| matches!(batch, Message::Batch { generation: g, .. } if *g == generation));
        }
        n.views.agreed(own);
        n.synced = true;
        self.report.agreements += 1;
    }

    /// Starts the next epoch at `node`: closes its batch and sends it to every peer.
    fn start_epoch(&mut self, node: NodeId) {
        let transactions_per_epoch = self.config.transactions_per_epoch;
        let keys = self.config.keys;
        let nodes = self.config.nodes;
        let count = if self.faults_over { 0 } else { self.random.below(u64::from(transactions_per_epoch) + 1) };
        let mut transactions = Vec::new();
        for _ in 0..count {
            self.next_txn += 1;
            transactions.push((self.next_txn, self.random.below(u64::from(keys)) as u32));
        }
        let move_key = self.random.below(u64::from(keys) * 3) as u32;
        let move_to = self.random.below(u64::from(nodes)) as NodeId;
        let n = &mut self.nodes[usize::from(node)];
        n.epoch += 1;
        let epoch = n.epoch;
        let mut announce = Vec::new();
        if move_key < keys
            && move_to != node
            && !self.faults_over
            && n.table.holder(&storage_key(move_key)) == node
            && !n.moving.contains(&move_key)
        {
            announce.push((move_key, move_to));
        }
        // Values of keys that leave this node with this epoch travel with its batch.
        let mut values = Vec::new();
        if let Some(moves) = n.pending_moves.get(&epoch) {
            for stored in moves.iter().filter(|stored| stored.from == node) {
                let key = key_number(&stored.key);
                values.push((key, n.values.get(&key).cloned().unwrap_or_default()));
            }
        }
        let batch = Message::Batch { generation: n.generation, epoch, transactions, announce, values };
        n.batches.entry(epoch).or_default().insert(node, batch.clone());
        self.broadcast(node, batch);
        self.finish_epoch_if_complete(node);
    }

    /// Runs an epoch once every node's batch for it arrived.
    fn finish_epoch_if_complete(&mut self, node: NodeId) {
        let planted = self.config.planted;
        let nodes = self.config.nodes;
        let n = &mut self.nodes[usize::from(node)];
        let epoch = n.epoch;
        if !n.synced || n.batches.get(&epoch).is_none_or(|batches| batches.len() < usize::from(nodes)) {
            return;
        }
        let batches = n.batches.remove(&epoch).expect("checked above");
        let mut writes: BTreeMap<u32, Option<Vec<TxnId>>> = BTreeMap::new();
        // Moves in effect from this epoch: the table changes, the values arrive.
        let moves = n.pending_moves.remove(&epoch).unwrap_or_default();
        for stored in &moves {
            let key = key_number(&stored.key);
            n.moving.remove(&key);
            if stored.from == node {
                n.values.remove(&key);
                writes.insert(key, None);
            }
        }
        n.table = n.table.with_moves(moves.iter().map(|stored| (stored.key.clone().into_boxed_slice(), stored.to)));
        let mut logged = Vec::new();
        let mut announced = Vec::new();
        for (&from, batch) in &batches {
            let Message::Batch { transactions, announce, .. } = batch else { unreachable!("only batches") };
            logged.push((from, transactions.clone()));
            for &(key, to) in announce {
                announced.push(StoredMove { key: storage_key(key), from, to, effective_epoch: epoch + 1 });
            }
        }
        if planted == Some(PlantedBug::MoveTakesEffectEarly) {
            // The bug: the new holder takes the key over already in the announcing epoch.
            let early = announced.iter().filter(|stored| stored.to == node);
            n.table = n.table.with_moves(early.map(|stored| (stored.key.clone().into_boxed_slice(), node)));
        }
        for batch in batches.values() {
            let Message::Batch { values, .. } = batch else { unreachable!("only batches") };
            for (key, value) in values {
                if n.table.holder(&storage_key(*key)) == node {
                    n.values.insert(*key, value.clone());
                    writes.insert(*key, Some(value.clone()));
                }
            }
        }
        let mut own = Vec::new();
        for (from, transactions) in &logged {
            for &(txn, key) in transactions {
                if *from == node {
                    own.push(txn);
                }
                if n.table.holder(&storage_key(key)) == node {
                    let value = n.values.entry(key).or_default();
                    value.push(txn);
                    writes.insert(key, Some(value.clone()));
                    if let Some(other) = self.holders.insert((key, n.generation, epoch), node) {
                        if other != node {
                            let what = format!("key {key} held by nodes {other} and {node} in epoch {epoch}");
                            record_violation(&mut self.report, what);
                        }
                    }
                }
            }
        }
        for stored in &announced {
            let key = key_number(&stored.key);
            n.moving.insert(key);
            n.pending_moves.entry(epoch + 1).or_default().push(stored.clone());
        }
        self.report.lease_moves += moves.len() as u64;
        n.unsynced.push(Record { epoch, transactions: logged, moves: announced, writes: writes.into_iter().collect() });
        n.awaiting.push_back((epoch, own));
    }

    /// The commit thread syncs what executed and tells the peers.
    fn sync(&mut self, node: NodeId) {
        let n = &mut self.nodes[usize::from(node)];
        if n.unsynced.is_empty() {
            return;
        }
        let flushed: Vec<Record> = n.unsynced.drain(..).collect();
        let newest = flushed.last().map_or(0, |record| record.epoch);
        n.disk.records.extend(flushed);
        n.durable.made_durable(newest);
        let generation = n.durable.generation();
        self.release(node);
        self.broadcast(node, Message::Durable { generation, epoch: newest });
    }

    /// Acknowledges this node's transactions of the epochs its commit thread may release.
    fn release(&mut self, node: NodeId) {
        let n = &mut self.nodes[usize::from(node)];
        let everywhere = if self.config.planted == Some(PlantedBug::ReplyOnLocalDurability) {
            n.durable.local_durable()
        } else {
            n.durable.everywhere()
        };
        while n.awaiting.front().is_some_and(|(epoch, _)| *epoch <= everywhere) {
            let (_, transactions) = n.awaiting.pop_front().expect("checked above");
            self.acknowledged.extend(transactions);
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, message: Message) {
        self.report.messages += 1;
        let n = &mut self.nodes[usize::from(to)];
        match message {
            Message::Resync { view, durable_epoch, answer_wanted } => {
                let Ok(observation) = n.views.observe(from, &view, durable_epoch, answer_wanted, n.synced) else {
                    return;
                };
                if let Some(answer) = observation.answer {
                    self.send(to, from, Message::Resync { view, durable_epoch: answer, answer_wanted: false });
                }
                let n = &mut self.nodes[usize::from(to)];
                if !observation.restarted.is_empty() {
                    // The driver abandons the running epoch and agrees again.
                    n.synced = false;
                    self.announce_view(to);
                }
                self.try_agree(to);
            }
            Message::Durable { generation, epoch } => {
                n.durable.peer_reported(from, generation, epoch);
                self.release(to);
            }
            Message::Batch { generation, epoch, .. } => {
                // Batches of another view, or of epochs already over, are ignored.
                if n.synced && (generation != n.generation || epoch < n.epoch) {
                    return;
                }
                n.batches.entry(epoch).or_default().insert(from, message);
                self.finish_epoch_if_complete(to);
            }
        }
    }

    fn crash(&mut self, node: NodeId) {
        self.report.crashes += 1;
        let n = &mut self.nodes[usize::from(node)];
        n.alive = false;
        // In-flight traffic to and from the node is lost with its memory and connections.
        self.channels.retain(|(from, to), _| *from != node && *to != node);
    }

    fn restart(&mut self, node: NodeId) {
        let mut disk = self.nodes[usize::from(node)].disk.clone();
        disk.incarnation += 1;
        self.nodes[usize::from(node)] = Node::new(node, self.config.nodes, disk);
        self.announce_view(node);
    }

    fn step(&mut self) {
        self.now += 1;
        let nodes = self.config.nodes;
        if !self.faults_over {
            let victim = self.random.below(u64::from(nodes)) as NodeId;
            if self.random.chance(self.config.crash_per_10k) && self.nodes.iter().all(|n| n.alive) {
                self.crash(victim);
            }
            if self.random.chance(self.config.partition_per_10k) && self.partitioned.is_none() {
                self.report.partitions += 1;
                self.partitioned = Some((victim, self.now + 20 + self.random.below(200)));
            }
        }
        if let Some((_, until)) = self.partitioned {
            if until <= self.now || self.faults_over {
                self.partitioned = None;
            }
        }
        for node in 0..nodes {
            if !self.nodes[usize::from(node)].alive && self.random.chance(500) {
                self.restart(node);
            }
        }
        // Deliver what arrived, each channel's frames in order.
        for (from, to, message) in self.arrivals() {
            if self.nodes[usize::from(to)].alive && self.nodes[usize::from(from)].alive {
                self.deliver(from, to, message);
            }
        }
        for node in 0..nodes {
            let n = &self.nodes[usize::from(node)];
            if !n.alive {
                continue;
            }
            if !n.synced {
                if self.random.chance(300) {
                    self.announce_view(node);
                }
                continue;
            }
            if self.random.chance(3000) {
                self.sync(node);
            }
            let n = &self.nodes[usize::from(node)];
            let running = n.batches.get(&n.epoch).is_some_and(|b| b.contains_key(&node));
            let peer_waits = n.batches.contains_key(&(n.epoch + 1));
            let room = n.awaiting.len() < 4;
            let wanted = !self.faults_over && n.epoch < self.config.epochs || peer_waits;
            if !running && room && wanted && self.random.chance(4000) {
                self.start_epoch(node);
            }
        }
    }
}

/// Runs one seeded simulation and checks its invariants.
pub fn simulate(seed: u64, config: SimulationConfig) -> SimulationReport {
    let mut simulation = Simulation {
        config,
        random: Random(seed),
        now: 0,
        nodes: (0..config.nodes)
            .map(|node| Node::new(node, config.nodes, Disk { incarnation: 1, records: Vec::new() }))
            .collect(),
        channels: BTreeMap::new(),
        partitioned: None,
        next_txn: 0,
        acknowledged: HashSet::new(),
        holders: HashMap::new(),
        report: SimulationReport { seed, ..SimulationReport::default() },
        faults_over: false,
    };
    for node in 0..config.nodes {
        simulation.announce_view(node);
    }
    let mut steps = 0u64;
    let step_limit = 200_000;
    while steps < step_limit {
        steps += 1;
        simulation.step();
        if !simulation.faults_over && simulation.nodes.iter().any(|n| n.alive && n.epoch >= config.epochs) {
            simulation.faults_over = true;
        }
        if simulation.faults_over && steps.is_multiple_of(64) && simulation.quiet() {
            break;
        }
    }
    if !simulation.quiet() {
        let epochs: Vec<u64> = simulation.nodes.iter().map(|n| n.epoch).collect();
        simulation.violation(format!("the cluster did not finish after the faults stopped: epochs {epochs:?}"));
    }
    simulation.check();
    simulation.report
}

impl Simulation {
    /// Every node alive, synced, at the same epoch, with everything synced and answered.
    fn quiet(&self) -> bool {
        let first = &self.nodes[0];
        self.channels.values().all(|channel| channel.link.is_empty() && channel.held.is_empty())
            && self.nodes.iter().all(|n| {
                n.alive && n.synced && n.epoch == first.epoch && n.unsynced.is_empty() && n.awaiting.is_empty()
            })
    }

    fn check(&mut self) {
        // One committed log: every node logged the same transactions for every epoch.
        let mut log: BTreeMap<u64, Vec<(NodeId, LoggedTransactions)>> = BTreeMap::new();
        let mut divergent = Vec::new();
        for n in &self.nodes {
            for record in &n.disk.records {
                match log.get(&record.epoch) {
                    Some(existing) if *existing != record.transactions => divergent.push((n.me, record.epoch)),
                    Some(_) => {}
                    None => {
                        log.insert(record.epoch, record.transactions.clone());
                    }
                }
            }
        }
        for (node, epoch) in divergent.into_iter().take(3) {
            self.violation(format!("node {node} logged other transactions for epoch {epoch}"));
        }
        self.report.committed_epochs = log.len() as u64;
        let mut committed: HashMap<TxnId, u32> = HashMap::new();
        let mut expected: HashMap<u32, Vec<TxnId>> = HashMap::new();
        let mut twice = Vec::new();
        for transactions in log.values() {
            for (_, batch) in transactions {
                for &(txn, key) in batch {
                    if committed.insert(txn, key).is_some() {
                        twice.push(txn);
                    }
                    expected.entry(key).or_default().push(txn);
                }
            }
        }
        for txn in twice.into_iter().take(3) {
            self.violation(format!("transaction {txn} committed twice"));
        }
        let mut lost: Vec<TxnId> =
            self.acknowledged.iter().copied().filter(|txn| !committed.contains_key(txn)).collect();
        lost.sort_unstable();
        for txn in lost.into_iter().take(3) {
            self.violation(format!("acknowledged transaction {txn} is not in the committed log"));
        }
        self.report.acknowledged = self.acknowledged.len() as u64;
        // Serial replay: each key's value at its holder is its appends in log order.
        for key in 0..self.config.keys {
            let want = expected.remove(&key).unwrap_or_default();
            let holders: Vec<&Node> = self.nodes.iter().filter(|n| n.table.holder(&storage_key(key)) == n.me).collect();
            if holders.len() != 1 {
                self.violation(format!("key {key} has {} holders at the end", holders.len()));
                continue;
            }
            let got = holders[0].values.get(&key).cloned().unwrap_or_default();
            if got != want {
                self.violation(format!(
                    "key {key} at node {} is {got:?}, the serial replay gives {want:?}",
                    holders[0].me
                ));
            }
        }
    }
}
