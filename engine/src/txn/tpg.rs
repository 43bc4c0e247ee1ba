//! The task precedence graph (TPG) of one epoch: a pure, synchronous function from the
//! epoch's transactions (in timestamp order) and their key accesses to the edges that
//! order conflicting transactions.
//!
//! Per key, operations form a list in timestamp order. A transaction depends on the last
//! earlier writer of every key it reads, and on every reader since that writer (or the
//! writer itself when there were none) of every key it writes. Consecutive reads of a key
//! do not depend on each other, so they may run together. Executing every transaction
//! only after its predecessors yields exactly the serial order of timestamps for every
//! pair of conflicting transactions, which makes the epoch serializable in that order.

use super::access::AccessMode;
use rustc_hash::FxHashMap;

/// Dependencies between the transactions of one epoch, as a compressed adjacency list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskGraph {
    /// Number of predecessors of each transaction.
    pub indegree: Vec<u32>,
    successor_offsets: Vec<u32>,
    successor_list: Vec<u32>,
}

impl TaskGraph {
    /// The transactions that must wait for `transaction`.
    pub fn successors(&self, transaction: usize) -> &[u32] {
        &self.successor_list
            [self.successor_offsets[transaction] as usize..self.successor_offsets[transaction + 1] as usize]
    }

    /// Transactions with no predecessor: where execution starts.
    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        self.indegree.iter().enumerate().filter(|(_, &d)| d == 0).map(|(t, _)| t)
    }

    pub fn len(&self) -> usize {
        self.indegree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indegree.is_empty()
    }

    pub fn edge_count(&self) -> usize {
        self.successor_list.len()
    }
}

#[derive(Default)]
struct KeyList {
    last_writer: Option<u32>,
    readers_since_write: Vec<u32>,
}

/// Reusable memory for building graphs, so the per-epoch build allocates little.
#[derive(Default)]
pub struct GraphBuilder {
    keys: FxHashMap<u32, KeyList>,
    edges: Vec<(u32, u32)>,
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    /// Builds the graph of `transaction_count` transactions in timestamp order;
    /// `accesses(t)` lists transaction `t`'s (key number, mode) pairs, each key at most
    /// once.
    pub fn build<I>(&mut self, transaction_count: usize, mut accesses: impl FnMut(usize) -> I) -> TaskGraph
    where
        I: IntoIterator<Item = (u32, AccessMode)>,
    {
        self.keys.clear();
        self.edges.clear();
        for transaction in 0..transaction_count {
            let t = transaction as u32;
            for (key, mode) in accesses(transaction) {
                let list = self.keys.entry(key).or_default();
                match mode {
                    AccessMode::Read => {
                        if let Some(writer) = list.last_writer {
                            self.edges.push((writer, t));
                        }
                        list.readers_since_write.push(t);
                    }
                    AccessMode::Write => {
                        if list.readers_since_write.is_empty() {
                            if let Some(writer) = list.last_writer {
                                self.edges.push((writer, t));
                            }
                        } else {
                            // Each reader already follows the last writer, so depending on
                            // the readers orders this write after both.
                            for &reader in &list.readers_since_write {
                                self.edges.push((reader, t));
                            }
                            list.readers_since_write.clear();
                        }
                        list.last_writer = Some(t);
                    }
                }
            }
        }
        // One transaction can reach another through several keys; one edge is enough.
        self.edges.sort_unstable();
        self.edges.dedup();
        let mut indegree = vec![0u32; transaction_count];
        let mut successor_offsets = vec![0u32; transaction_count + 1];
        for &(from, to) in &self.edges {
            assert!(from < to, "a dependency must point forward in timestamp order");
            indegree[to as usize] += 1;
            successor_offsets[from as usize + 1] += 1;
        }
        for t in 0..transaction_count {
            successor_offsets[t + 1] += successor_offsets[t];
        }
        // Edges are sorted by source, so the successor list is the targets in order.
        let successor_list = self.edges.iter().map(|&(_, to)| to).collect();
        TaskGraph { indegree, successor_offsets, successor_list }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessMode::{Read, Write};

    fn graph(transactions: &[&[(u32, AccessMode)]]) -> TaskGraph {
        GraphBuilder::new().build(transactions.len(), |t| transactions[t].iter().copied())
    }

    #[test]
    fn writes_to_one_key_form_a_chain() {
        let g = graph(&[&[(1, Write)], &[(1, Write)], &[(1, Write)]]);
        assert_eq!(g.indegree, vec![0, 1, 1]);
        assert_eq!(g.successors(0), &[1]);
        assert_eq!(g.successors(1), &[2]);
        assert_eq!(g.roots().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn consecutive_reads_run_together_and_the_next_write_waits_for_all() {
        let g = graph(&[&[(7, Write)], &[(7, Read)], &[(7, Read)], &[(7, Write)], &[(7, Read)]]);
        assert_eq!(g.successors(0), &[1, 2]);
        assert_eq!(g.successors(1), &[3]);
        assert_eq!(g.successors(2), &[3]);
        assert_eq!(g.successors(3), &[4]);
        assert_eq!(g.indegree, vec![0, 1, 1, 2, 1]);
    }

    #[test]
    fn disjoint_transactions_are_independent() {
        let g = graph(&[&[(1, Write), (2, Write)], &[(3, Write)], &[(4, Read)]]);
        assert_eq!(g.edge_count(), 0);
        assert_eq!(g.roots().count(), 3);
    }

    #[test]
    fn several_shared_keys_give_one_edge() {
        let g = graph(&[&[(1, Write), (2, Write)], &[(1, Write), (2, Read)]]);
        assert_eq!(g.successors(0), &[1]);
        assert_eq!(g.indegree, vec![0, 1]);
    }

    #[test]
    fn reads_before_any_write_have_no_predecessor() {
        let g = graph(&[&[(5, Read)], &[(5, Read)], &[(5, Write)]]);
        assert_eq!(g.indegree, vec![0, 0, 2]);
    }

    #[test]
    fn every_conflicting_pair_is_ordered_by_a_path() {
        // A pseudo-random mix over few keys; check that for every pair of transactions
        // that conflict (share a key, at least one writes), the earlier reaches the later.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let transactions: Vec<Vec<(u32, AccessMode)>> = (0..60)
            .map(|_| {
                let mut keys: Vec<u32> = (0..1 + next() % 3).map(|_| (next() % 6) as u32).collect();
                keys.sort();
                keys.dedup();
                keys.into_iter().map(|k| (k, if next() % 2 == 0 { Read } else { Write })).collect()
            })
            .collect();
        let g = GraphBuilder::new().build(transactions.len(), |t| transactions[t].iter().copied());
        let n = transactions.len();
        let mut reach = vec![vec![false; n]; n];
        for from in (0..n).rev() {
            for &to in g.successors(from) {
                reach[from][to as usize] = true;
                let reached_from_successor = reach[to as usize].clone();
                for (reached, via_successor) in reach[from].iter_mut().zip(reached_from_successor) {
                    *reached |= via_successor;
                }
            }
        }
        for a in 0..n {
            for b in a + 1..n {
                let conflict = transactions[a]
                    .iter()
                    .any(|&(ka, ma)| transactions[b].iter().any(|&(kb, mb)| ka == kb && (ma == Write || mb == Write)));
                if conflict {
                    assert!(reach[a][b], "transactions {a} and {b} conflict but are not ordered");
                }
            }
        }
    }
}
