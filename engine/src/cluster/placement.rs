//! Affinity placement: which node should hold a key, decided from decayed access counts.
//!
//! The holder of a key sees every access to it: its own transactions' and, as virtual
//! vertices, every other node's. So each node counts, per key it holds and per node, how
//! often that node's transactions used the key ([`AccessCounts`]), and decides alone
//! whether to move the key's lease ([`decide`]): to the node with the highest count,
//! when that count is significant and beats the holder's own by a margin (hysteresis:
//! two nodes sharing a key evenly do not pass it back and forth). No coordinator and no
//! central table sit on the data path.
//!
//! Counts decay exponentially with a half-life in epochs, so placement follows a workload
//! that changes. Memory is bounded: at most `tracked_keys_max` keys are counted; when a
//! new key would exceed that, the coldest keys (smallest decayed total) are dropped first,
//! so hot keys are tracked exactly and the tail is approximated by forgetting it.
//!
//! Everything here is pure and synchronous: epochs are passed in.

use crate::model::NodeId;
use rustc_hash::FxHashMap;

/// Tunables of placement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlacementConfig {
    /// A challenger must count more than `(1 + margin)` times the holder's accesses.
    pub margin: f64,
    /// A challenger needs at least this many (decayed) accesses.
    pub count_min: f64,
    /// Counts halve every this many epochs.
    pub half_life_epochs: f64,
    /// At most this many keys are counted per node.
    pub tracked_keys_max: usize,
    /// At most this many leases leave a node per epoch.
    pub moves_per_epoch_max: usize,
}

impl Default for PlacementConfig {
    fn default() -> PlacementConfig {
        PlacementConfig {
            margin: 0.5,
            count_min: 4.0,
            half_life_epochs: 50.0,
            tracked_keys_max: 1 << 20,
            moves_per_epoch_max: 4096,
        }
    }
}

/// Decayed per-node access counts of one key.
#[derive(Clone, Debug)]
struct KeyCounts {
    per_node: Vec<f64>,
    /// The epoch the counts are decayed to.
    epoch: u64,
    /// The epoch of the last recorded access.
    recorded_epoch: u64,
}

impl KeyCounts {
    fn decay_to(&mut self, epoch: u64, half_life_epochs: f64) {
        if epoch > self.epoch {
            let factor = 0.5f64.powf((epoch - self.epoch) as f64 / half_life_epochs);
            self.per_node.iter_mut().for_each(|count| *count *= factor);
            self.epoch = epoch;
        }
    }

    fn total(&self) -> f64 {
        self.per_node.iter().sum()
    }
}

/// Access counts of the keys a node holds.
#[derive(Debug)]
pub struct AccessCounts {
    node_count: usize,
    config: PlacementConfig,
    keys: FxHashMap<Box<[u8]>, KeyCounts>,
}

impl AccessCounts {
    pub fn new(node_count: u16, config: PlacementConfig) -> AccessCounts {
        AccessCounts { node_count: usize::from(node_count), config, keys: FxHashMap::default() }
    }

    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// Counts one access to `key` by a transaction of `node` in `epoch`; `true` when it
    /// is the key's first access in `epoch` (so the caller lists each key once per epoch
    /// without a set of its own).
    pub fn record(&mut self, key: &[u8], node: NodeId, epoch: u64) -> bool {
        let half_life = self.config.half_life_epochs;
        if let Some(counts) = self.keys.get_mut(key) {
            counts.decay_to(epoch, half_life);
            counts.per_node[usize::from(node)] += 1.0;
            let first = counts.recorded_epoch != epoch;
            counts.recorded_epoch = epoch;
            return first;
        }
        if self.keys.len() >= self.config.tracked_keys_max {
            self.forget_coldest(epoch);
        }
        let mut per_node = vec![0.0; self.node_count];
        per_node[usize::from(node)] = 1.0;
        self.keys.insert(key.into(), KeyCounts { per_node, epoch, recorded_epoch: epoch });
        true
    }

    /// Drops the coldest tenth of the tracked keys.
    fn forget_coldest(&mut self, epoch: u64) {
        let half_life = self.config.half_life_epochs;
        let mut totals: Vec<f64> = self
            .keys
            .values_mut()
            .map(|counts| {
                counts.decay_to(epoch, half_life);
                counts.total()
            })
            .collect();
        let drop_count = (totals.len() / 10).max(1);
        let (_, &mut threshold, _) = totals.select_nth_unstable_by(drop_count - 1, f64::total_cmp);
        let mut dropped = 0;
        self.keys.retain(|_, counts| {
            let keep = dropped >= drop_count || counts.total() > threshold;
            if !keep {
                dropped += 1;
            }
            keep
        });
    }

    /// Forgets a key (its lease moved away).
    pub fn forget(&mut self, key: &[u8]) {
        self.keys.remove(key);
    }

    /// The node that should hold `key` instead of `holder`, if any.
    pub fn decide(&mut self, key: &[u8], holder: NodeId, epoch: u64) -> Option<NodeId> {
        let counts = self.keys.get_mut(key)?;
        counts.decay_to(epoch, self.config.half_life_epochs);
        decide(&counts.per_node, holder, &self.config)
    }
}

/// The pure decision: the node with the most accesses (the smallest id among equals)
/// takes the lease when its count is at least `count_min` and exceeds the holder's by
/// the margin.
pub fn decide(per_node: &[f64], holder: NodeId, config: &PlacementConfig) -> Option<NodeId> {
    let (best, &best_count) =
        per_node.iter().enumerate().fold(None, |best: Option<(usize, &f64)>, (node, count)| match best {
            Some((_, best_count)) if *count <= *best_count => best,
            _ => Some((node, count)),
        })?;
    let holder_count = per_node.get(usize::from(holder)).copied().unwrap_or(0.0);
    let beats = best_count >= config.count_min && best_count > holder_count * (1.0 + config.margin);
    (best != usize::from(holder) && beats).then_some(best as NodeId)
}

/// Decayed counts of the transactions each node ran (the paper's N_i), with the same
/// half-life as the access counts. Every node learns every peer's count with that peer's
/// batch of each epoch, so each node scores the spare load of all nodes alike when it
/// routes a request ([`super::routing`]). Memory is one number per node.
#[derive(Clone, Debug)]
pub struct LoadCounts {
    per_node: Vec<f64>,
    /// The epoch the counts are decayed to.
    epoch: u64,
    half_life_epochs: f64,
}

impl LoadCounts {
    pub fn new(node_count: u16, half_life_epochs: f64) -> LoadCounts {
        assert!(half_life_epochs > 0.0, "a half-life is positive");
        LoadCounts { per_node: vec![0.0; usize::from(node_count)], epoch: 0, half_life_epochs }
    }

    fn decay_to(&mut self, epoch: u64) {
        if epoch > self.epoch {
            let factor = 0.5f64.powf((epoch - self.epoch) as f64 / self.half_life_epochs);
            self.per_node.iter_mut().for_each(|count| *count *= factor);
            self.epoch = epoch;
        }
    }

    /// Counts `transactions` that `node` ran in `epoch`.
    pub fn record(&mut self, node: NodeId, transactions: u32, epoch: u64) {
        self.decay_to(epoch);
        if let Some(count) = self.per_node.get_mut(usize::from(node)) {
            *count += f64::from(transactions);
        }
    }

    /// The decayed count of every node, by node id.
    pub fn counts(&self) -> &[f64] {
        &self.per_node
    }

    /// Each node's spare load, normalised to 0..=1: `1 - N_i / max_j N_j` (1 for every
    /// node while nothing ran).
    pub fn spare_loads(&self) -> Vec<f64> {
        spare_loads(&self.per_node)
    }
}

/// `1 - N_i / max_j N_j` for every node; all ones when no node ran anything.
pub fn spare_loads(counts: &[f64]) -> Vec<f64> {
    let busiest = counts.iter().copied().fold(0.0, f64::max);
    counts.iter().map(|&count| if busiest > 0.0 { 1.0 - count / busiest } else { 1.0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PlacementConfig {
        PlacementConfig {
            margin: 0.5,
            count_min: 4.0,
            half_life_epochs: 10.0,
            tracked_keys_max: 100,
            moves_per_epoch_max: 10,
        }
    }

    #[test]
    fn the_busiest_node_wins_only_by_the_margin_and_with_enough_accesses() {
        let config = config();
        assert_eq!(decide(&[1.0, 9.0, 0.0], 0, &config), Some(1));
        assert_eq!(decide(&[6.0, 9.1, 0.0], 0, &config), Some(1), "9.1 > 6 * 1.5");
        assert_eq!(decide(&[6.0, 8.9, 0.0], 0, &config), None, "hysteresis: 8.9 < 6 * 1.5");
        assert_eq!(decide(&[0.0, 3.0, 0.0], 0, &config), None, "too few accesses to matter");
        assert_eq!(decide(&[0.0, 9.0, 0.0], 1, &config), None, "the holder is already the best");
        assert_eq!(decide(&[0.0, 9.0, 9.0], 0, &config), Some(1), "ties go to the smallest id");
        assert_eq!(decide(&[], 0, &config), None);
    }

    #[test]
    fn counts_decay_so_placement_follows_a_changing_workload() {
        let mut counts = AccessCounts::new(3, config());
        for epoch in 0..20 {
            counts.record(b"k", 1, epoch);
        }
        assert_eq!(counts.decide(b"k", 0, 20), Some(1));
        // Node 2 takes over; node 1's count halves every 10 epochs.
        for epoch in 20..60 {
            counts.record(b"k", 2, epoch);
        }
        assert_eq!(counts.decide(b"k", 1, 60), Some(2), "the old affinity faded");
        assert_eq!(counts.decide(b"unknown", 0, 60), None);
    }

    #[test]
    fn record_tells_the_first_access_of_each_epoch() {
        let mut counts = AccessCounts::new(2, config());
        assert!(counts.record(b"k", 0, 7), "a new key");
        assert!(!counts.record(b"k", 1, 7), "again in the same epoch, from any node");
        assert!(counts.record(b"other", 1, 7));
        assert!(counts.record(b"k", 0, 8), "the next epoch");
        counts.forget(b"k");
        assert!(counts.record(b"k", 0, 8), "a forgotten key starts over");
    }

    #[test]
    fn memory_is_bounded_and_hot_keys_survive() {
        let mut counts = AccessCounts::new(2, config());
        for _ in 0..50 {
            counts.record(b"hot", 1, 0);
        }
        for index in 0..1000u32 {
            counts.record(&index.to_be_bytes(), 0, 1);
        }
        assert!(counts.tracked_keys() <= 100, "{} keys tracked", counts.tracked_keys());
        assert_eq!(counts.decide(b"hot", 0, 1), Some(1), "the hot key kept its counts");
        counts.forget(b"hot");
        assert_eq!(counts.decide(b"hot", 0, 1), None);
    }

    #[test]
    fn load_counts_decay_and_normalise_to_spare_load() {
        let mut loads = LoadCounts::new(3, 10.0);
        assert_eq!(loads.spare_loads(), vec![1.0, 1.0, 1.0], "an idle cluster has spare load everywhere");
        loads.record(0, 100, 1);
        loads.record(1, 50, 1);
        assert_eq!(loads.spare_loads(), vec![0.0, 0.5, 1.0]);
        // Ten epochs later (one half-life) node 0's work has halved; node 1 ran as much again.
        loads.record(1, 50, 11);
        let counts = loads.counts();
        assert!((counts[0] - 50.0).abs() < 1e-9 && (counts[1] - 75.0).abs() < 1e-9, "{counts:?}");
        let spare = loads.spare_loads();
        assert!((spare[0] - (1.0 - 50.0 / 75.0)).abs() < 1e-9 && spare[1] == 0.0, "{spare:?}");
        loads.record(7, 1, 12); // a node id outside the cluster changes nothing
        assert_eq!(loads.counts().len(), 3);
    }
}
