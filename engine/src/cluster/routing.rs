//! Request routing: which node should run a request, decided from where its keys are held
//! and how busy each node is.
//!
//! Any node takes requests. A node that receives a request whose declared keys are mostly
//! held elsewhere forwards it to the best node, scored as the RTSFaaS driver scores
//! workers: an equally weighted (by default) sum of the normalised affinity of the node
//! to the request's keys and the node's normalised spare load. Here the affinity of node
//! *i* is the share of the request's keys that *i* holds: leases already follow the
//! decayed access counts ([`super::placement`]), so the lease table is the affinity
//! summary every node has without asking anyone. Spare load is `1 - N_i / max_j N_j` of
//! the decayed transaction counts that every node learns with each epoch's batches.
//!
//! The decision is pure: holders and loads are passed in, so it is tested on its own.

use crate::model::NodeId;

/// Weights of the routing score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoutingConfig {
    /// Weight of the share of a request's keys a node holds.
    pub affinity_weight: f64,
    /// Weight of a node's spare load.
    pub load_weight: f64,
}

impl Default for RoutingConfig {
    fn default() -> RoutingConfig {
        RoutingConfig { affinity_weight: 0.5, load_weight: 0.5 }
    }
}

/// Where a request runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// On the node that received it.
    Here,
    /// On another node, which runs it as if a client had sent it there.
    Forward(NodeId),
}

/// Decides where a request runs. `holders` has the holder of each declared key of the
/// request (a key declared twice counts twice); `spare_loads` has every node's spare
/// load in 0..=1, by node id.
///
/// A request stays where it arrived while this node holds at least half of its keys (it
/// is not "mostly held elsewhere"), or when no other node scores strictly better; ties
/// among other nodes go to the smallest id.
pub fn route(me: NodeId, holders: &[NodeId], spare_loads: &[f64], config: &RoutingConfig) -> Route {
    if holders.is_empty() {
        return Route::Here;
    }
    let held_here = holders.iter().filter(|&&holder| holder == me).count();
    if held_here * 2 >= holders.len() {
        return Route::Here;
    }
    let score = |node: NodeId| {
        let affinity = holders.iter().filter(|&&holder| holder == node).count() as f64 / holders.len() as f64;
        let spare = spare_loads.get(usize::from(node)).copied().unwrap_or(0.0);
        config.affinity_weight * affinity + config.load_weight * spare
    };
    let mut best = (me, score(me));
    for node in 0..spare_loads.len() as NodeId {
        if node == me {
            continue;
        }
        let candidate = score(node);
        if candidate > best.1 {
            best = (node, candidate);
        }
    }
    if best.0 == me {
        Route::Here
    } else {
        Route::Forward(best.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: [f64; 3] = [1.0, 1.0, 1.0];

    #[test]
    fn a_request_runs_where_most_of_its_keys_are() {
        let config = RoutingConfig::default();
        assert_eq!(route(0, &[1, 1], &IDLE, &config), Route::Forward(1));
        assert_eq!(route(0, &[1, 2, 2], &IDLE, &config), Route::Forward(2));
        assert_eq!(route(0, &[0, 1], &IDLE, &config), Route::Here, "half of the keys are here");
        assert_eq!(route(0, &[0, 0, 2], &IDLE, &config), Route::Here);
        assert_eq!(route(0, &[], &IDLE, &config), Route::Here, "a request without keys stays");
        assert_eq!(route(0, &[1, 2], &IDLE, &config), Route::Forward(1), "ties go to the smallest id");
    }

    #[test]
    fn spare_load_can_outweigh_affinity() {
        let config = RoutingConfig::default();
        // Node 1 holds both keys but is the busiest; node 0 is idle: 0.5 * 1 + 0.5 * 0
        // against 0.5 * 0 + 0.5 * 1, a tie, which keeps the request here.
        assert_eq!(route(0, &[1, 1], &[1.0, 0.0, 0.5], &config), Route::Here);
        // Node 2 holds one key of two and is idle: 0.25 + 0.5 beats node 1's 0.25 + 0.0
        // and node 0's 0 + 0.4.
        assert_eq!(route(0, &[1, 2], &[0.4, 0.0, 1.0], &config), Route::Forward(2));
        // Only affinity counts when the load weight is zero.
        let affinity_only = RoutingConfig { affinity_weight: 1.0, load_weight: 0.0 };
        assert_eq!(route(0, &[1, 1], &[1.0, 0.0, 0.5], &affinity_only), Route::Forward(1));
    }

    #[test]
    fn holders_outside_the_load_table_score_no_load() {
        let config = RoutingConfig::default();
        // A holder id the load table does not know (a table from a larger cluster) still
        // gets its affinity but no spare load, and never a panic.
        assert_eq!(route(0, &[5, 5], &IDLE, &config), Route::Here);
    }
}
