//! The sans-IO decisions of the cluster protocol: view agreement, the durable-everywhere
//! rule that releases replies, and the lease table as of an agreed epoch.
//!
//! The epoch driver (`driver.rs`) and the commit thread (`txn::commit`) are threads that
//! talk to a transport, storage and each other. The decisions that keep the cluster's
//! promises do not need any of that, so they live here as plain state machines that take
//! messages in and say what to do: the driver and the commit thread call them, and so
//! does the deterministic simulation (`integration/src/simulation.rs`), which drives
//! several nodes' cores from one seeded scheduler with delays, reordering, crashes and
//! partitions. No clock appears here: time only decides when the driver repeats an
//! announcement (liveness), never what is agreed (safety).

use crate::model::NodeId;

/// What one node knows about the cluster's view: the incarnation of every node, and
/// which view and durable epoch each peer announced.
#[derive(Clone, Debug)]
pub struct ViewAgreement {
    me: NodeId,
    /// Known incarnation of every node (0: not heard of yet).
    view: Vec<u32>,
    /// Per node: the view and durable epoch it last announced for our current view.
    announced: Vec<Option<(Vec<u32>, u64)>>,
    /// What this node announced for the view it last agreed on, to answer late askers.
    agreed_announcement: Option<(Vec<u32>, u64)>,
}

/// An announcement that cannot be taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViewRefusal {
    #[error("the peer announced a view of {nodes} nodes; this cluster has {expected}")]
    WrongClusterSize { nodes: usize, expected: usize },
    #[error("the announcement comes from an incarnation of the peer that no longer exists")]
    StaleIncarnation,
}

/// What taking in an announcement changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Nodes now known to have restarted: their connections must be reopened, and the
    /// cluster must agree again.
    pub restarted: Vec<NodeId>,
    /// The peer claimed a newer incarnation of this node than this node is (ignored).
    pub claims_newer_self: bool,
    /// Answer the asking peer with this durable epoch (it asked, and we already agreed on
    /// the same view).
    pub answer: Option<u64>,
}

/// The result of an agreement: every node keeps the epochs up to `epoch` (durable on
/// every node) and undoes newer ones; frames and lease words carry `generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreement {
    pub epoch: u64,
    pub generation: u64,
}

impl ViewAgreement {
    pub fn new(node_count: u16, me: NodeId, incarnation: u32) -> ViewAgreement {
        assert!(me < node_count, "node {me} is not one of {node_count} nodes");
        let mut view = vec![0; usize::from(node_count)];
        view[usize::from(me)] = incarnation;
        ViewAgreement { me, view, announced: vec![None; usize::from(node_count)], agreed_announcement: None }
    }

    /// The incarnation of every node, as far as this node knows.
    pub fn view(&self) -> &[u32] {
        &self.view
    }

    /// Takes in a peer's announcement of its view and durable epoch. `synced` says whether
    /// this node currently runs epochs in an agreed view (only then does it answer).
    pub fn observe(
        &mut self,
        from: NodeId,
        view: &[u32],
        durable_epoch: u64,
        answer_wanted: bool,
        synced: bool,
    ) -> Result<Observation, ViewRefusal> {
        if view.len() != self.view.len() {
            return Err(ViewRefusal::WrongClusterSize { nodes: view.len(), expected: self.view.len() });
        }
        if view[usize::from(from)] < self.view[usize::from(from)] {
            return Err(ViewRefusal::StaleIncarnation);
        }
        let mut observation = Observation::default();
        for (node, (&theirs, ours)) in view.iter().zip(self.view.iter_mut()).enumerate() {
            if theirs > *ours {
                if node == usize::from(self.me) {
                    observation.claims_newer_self = true;
                    continue;
                }
                *ours = theirs;
                observation.restarted.push(node as NodeId);
            }
        }
        if view == self.view.as_slice() {
            self.announced[usize::from(from)] = Some((view.to_vec(), durable_epoch));
            if answer_wanted && synced {
                if let Some((agreed_view, announced)) = &self.agreed_announcement {
                    if agreed_view.as_slice() == view {
                        observation.answer = Some(*announced);
                    }
                }
            }
        }
        Ok(observation)
    }

    /// Whether every peer announced our current view; if so, what to keep: the smallest
    /// durable epoch of all (our own is `own_durable_epoch`), which every node has.
    pub fn agreement(&self, own_durable_epoch: u64) -> Option<Agreement> {
        let peers = (0..self.view.len()).filter(|&node| node != usize::from(self.me));
        let mut epoch = own_durable_epoch;
        for peer in peers {
            match &self.announced[peer] {
                Some((view, durable)) if *view == self.view => epoch = epoch.min(*durable),
                _ => return None,
            }
        }
        Some(Agreement { epoch, generation: self.generation() })
    }

    /// The generation of the current view: the sum of the incarnations. Incarnations only
    /// grow, so any later view of the same cluster has a larger generation.
    pub fn generation(&self) -> u64 {
        self.view.iter().map(|&incarnation| u64::from(incarnation)).sum()
    }

    /// Records that this node agreed on its current view after announcing
    /// `own_durable_epoch`, so that it can answer peers that ask late.
    pub fn agreed(&mut self, own_durable_epoch: u64) {
        self.agreed_announcement = Some((self.view.clone(), own_durable_epoch));
    }
}

/// The commit thread's knowledge of which epochs are durable on which node. Replies of an
/// epoch may be released once it is durable everywhere: a node that dies then still has
/// it, so the agreement after the restart keeps it.
#[derive(Clone, Debug)]
pub struct DurableEverywhere {
    me: NodeId,
    local_durable: u64,
    /// The newest epoch each node reported durable in `generation` (own entry unused).
    peer_durable: Vec<u64>,
    generation: u64,
}

impl DurableEverywhere {
    pub fn new(node_count: u16, me: NodeId, local_durable: u64) -> DurableEverywhere {
        DurableEverywhere {
            me,
            local_durable,
            peer_durable: vec![local_durable; usize::from(node_count)],
            generation: 0,
        }
    }

    pub fn local_durable(&self) -> u64 {
        self.local_durable
    }

    /// The generation whose durable reports count.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// This node made every epoch up to `epoch` durable.
    pub fn made_durable(&mut self, epoch: u64) {
        self.local_durable = self.local_durable.max(epoch);
    }

    /// A peer reports its durable epoch; reports of another generation are ignored (they
    /// come from before an agreement that may have undone them).
    pub fn peer_reported(&mut self, peer: NodeId, generation: u64, epoch: u64) {
        if generation == self.generation {
            let known = &mut self.peer_durable[usize::from(peer)];
            *known = (*known).max(epoch);
        }
    }

    /// The newest epoch durable on every node.
    pub fn everywhere(&self) -> u64 {
        self.peer_durable
            .iter()
            .enumerate()
            .filter(|&(node, _)| node != usize::from(self.me))
            .map(|(_, &epoch)| epoch)
            .fold(self.local_durable, u64::min)
    }

    /// After an agreement: every node keeps exactly the epochs up to `agreed`.
    pub fn rolled_back(&mut self, agreed: u64, generation: u64) {
        self.local_durable = agreed;
        self.peer_durable.iter_mut().for_each(|known| *known = agreed);
        self.generation = generation;
    }
}

/// A stored lease move: the key passes from `from` to `to` at the start of `effective`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMove {
    pub key: Vec<u8>,
    pub from: NodeId,
    pub to: NodeId,
    pub effective_epoch: u64,
}

/// The lease moves as of an agreed epoch: those in effect by then (key, new holder), and
/// those announced in the agreed epoch itself that take effect with the next one. Moves
/// announced later were undone with their epochs and are not in storage any more; any
/// found anyway are left out.
/// A key and the node that holds its lease.
pub type LeaseHolder = (Box<[u8]>, NodeId);

pub fn leases_as_of(
    moves: impl IntoIterator<Item = StoredMove>,
    agreed_epoch: u64,
) -> (Vec<LeaseHolder>, Vec<StoredMove>) {
    let mut in_effect = Vec::new();
    let mut next = Vec::new();
    for stored in moves {
        if stored.effective_epoch <= agreed_epoch {
            in_effect.push((stored.key.into_boxed_slice(), stored.to));
        } else if stored.effective_epoch == agreed_epoch + 1 {
            // Until the move takes effect the old holder keeps the key.
            in_effect.push((stored.key.clone().into_boxed_slice(), stored.from));
            next.push(stored);
        }
    }
    (in_effect, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_waits_for_every_peer_and_keeps_the_smallest_durable_epoch() {
        let mut node0 = ViewAgreement::new(3, 0, 1);
        assert_eq!(node0.agreement(9), None);
        let seen = node0.observe(1, &[0, 1, 0], 7, true, false).unwrap();
        assert_eq!(seen.restarted, vec![1]);
        assert_eq!(node0.agreement(9), None, "node 1 announced a view that lacked us");
        node0.observe(1, &[1, 1, 1], 7, true, false).unwrap();
        assert_eq!(node0.agreement(9), None, "node 2 has not announced yet");
        node0.observe(2, &[1, 1, 1], 5, true, false).unwrap();
        assert_eq!(node0.agreement(9), Some(Agreement { epoch: 5, generation: 3 }));
    }

    #[test]
    fn a_restart_invalidates_earlier_announcements() {
        let mut node0 = ViewAgreement::new(2, 0, 1);
        node0.observe(1, &[1, 1], 4, true, false).unwrap();
        assert!(node0.agreement(4).is_some());
        node0.agreed(4);
        let seen = node0.observe(1, &[1, 2], 3, true, true).unwrap();
        assert_eq!(seen.restarted, vec![1]);
        assert_eq!(seen.answer, None, "the agreed view was another one");
        assert_eq!(node0.agreement(4), Some(Agreement { epoch: 3, generation: 3 }));
        assert_eq!(node0.observe(1, &[1, 1], 9, true, true), Err(ViewRefusal::StaleIncarnation));
        assert_eq!(
            node0.observe(1, &[1, 2, 0], 9, true, true),
            Err(ViewRefusal::WrongClusterSize { nodes: 3, expected: 2 })
        );
    }

    #[test]
    fn an_agreed_node_answers_a_late_asker_with_what_it_announced() {
        let mut node0 = ViewAgreement::new(2, 0, 1);
        node0.observe(1, &[1, 1], 4, true, false).unwrap();
        node0.agreed(6);
        let seen = node0.observe(1, &[1, 1], 4, true, true).unwrap();
        assert_eq!(seen.answer, Some(6));
        assert!(node0.observe(1, &[2, 1], 4, true, true).unwrap().claims_newer_self);
    }

    #[test]
    fn replies_wait_until_every_node_reports_the_epoch_durable() {
        let mut durable = DurableEverywhere::new(3, 0, 0);
        durable.made_durable(5);
        assert_eq!(durable.everywhere(), 0);
        durable.peer_reported(1, 0, 5);
        durable.peer_reported(2, 0, 3);
        assert_eq!(durable.everywhere(), 3);
        durable.rolled_back(3, 7);
        durable.peer_reported(1, 0, 9);
        assert_eq!(durable.everywhere(), 3, "reports of an older generation are ignored");
        durable.made_durable(4);
        durable.peer_reported(1, 7, 4);
        durable.peer_reported(2, 7, 4);
        assert_eq!(durable.everywhere(), 4);
    }

    #[test]
    fn leases_as_of_an_epoch_apply_moves_in_effect_and_keep_the_next_ones_pending() {
        let stored = |key: &[u8], effective_epoch| StoredMove { key: key.to_vec(), from: 0, to: 1, effective_epoch };
        let (in_effect, next) = leases_as_of([stored(b"a", 3), stored(b"b", 5), stored(b"c", 6)], 4);
        assert_eq!(in_effect, vec![(b"a".to_vec().into_boxed_slice(), 1), (b"b".to_vec().into_boxed_slice(), 0)]);
        assert_eq!(next, vec![stored(b"b", 5)]);
    }
}
