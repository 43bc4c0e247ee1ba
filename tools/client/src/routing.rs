//! [`ClusterClient`]: a client of a whole cluster that sends each request straight to the
//! node holding most of its keys, by a lease table it caches.
//!
//! Forwarding on the nodes already moves a request to its keys, but that costs a hop
//! between nodes and the forwarding node's time. A client that knows where the keys are
//! saves both. It cannot plan requests itself (planning is the plugin's, on the node), so
//! the caller names the keys a request will use ([`RoutedInvocation::keys`]), as the
//! plugin's planner would declare them. The client maps them to storage keys with the
//! tables' ids and places them with the lease table and the home rule of
//! `leasehold-keyspace`, the rule the nodes use.
//!
//! Leases move while the client runs, so its table goes stale. Every routed request asks
//! for a redirect instead of forwarding (`Invocation.redirectIfElsewhere`): a node whose
//! keys have moved away answers with the node to use and its table's digest, nothing of
//! the request having run. The client then fetches the table again (once per batch of
//! redirects) and sends the request to the named node without asking for a redirect, so
//! a request is redirected at most once and always finishes: if leases moved yet again,
//! that node forwards it.

use crate::convert::Reply;
use crate::error::ClientError;
use crate::types::{Invocation, InvokeResult, LeaseTable, RoutingKey};
use crate::Client;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// The node that holds most of the keys whose holders are `holders` (in the caller's key
/// order); ties go to the node holding the earliest of those keys.
fn most_held(holders: &[u16], node_count: usize) -> u16 {
    // Most requests name a handful of keys, so counting by node id in a small vector is
    // cheaper than any map. Per node: keys held, and the position of its first.
    let mut held: Vec<(u32, usize)> = vec![(0, usize::MAX); node_count];
    for (position, &holder) in holders.iter().enumerate() {
        let node = &mut held[usize::from(holder) % node_count];
        node.0 += 1;
        node.1 = node.1.min(position);
    }
    let mut best = 0;
    for (node, &(count, first)) in held.iter().enumerate() {
        let (best_count, best_first) = held[best];
        if count > best_count || (count == best_count && first < best_first) {
            best = node;
        }
    }
    best as u16
}

/// A request with the keys it will use, by which [`ClusterClient`] picks its node.
#[derive(Clone, Debug)]
pub struct RoutedInvocation {
    pub invocation: Invocation,
    /// The keys the request's workflow declares (reads and writes). A request with no keys
    /// goes to the nodes in turn.
    pub keys: Vec<RoutingKey>,
}

impl RoutedInvocation {
    pub fn new(invocation: Invocation, keys: Vec<RoutingKey>) -> RoutedInvocation {
        RoutedInvocation { invocation, keys }
    }
}

/// Connections to every node of a cluster and the lease table that routes requests to
/// them. Like [`Client`], it lives in a [`tokio::task::LocalSet`] and is not `Send`.
/// Connections open on first use; a node that cannot be reached fails the requests routed
/// to it with [`ClientError::Connect`] or [`ClientError::Disconnected`] (retry them under
/// the same request ids, through any node).
pub struct ClusterClient {
    token: Vec<u8>,
    /// The connection the table came from first, used to fetch it again.
    seed: Client,
    /// Connections by node id, opened on first use.
    nodes: RefCell<Vec<Option<Rc<Client>>>>,
    table: RefCell<LeaseTable>,
    /// Table ids by plugin name and table name, from the nodes' plugin list.
    table_ids: RefCell<HashMap<String, HashMap<String, u32>>>,
    /// Where the next request without keys goes.
    next_unkeyed: Cell<usize>,
    redirects_total: Cell<u64>,
    table_fetches_total: Cell<u64>,
}

impl ClusterClient {
    /// Connects to one node of a cluster (`seed_address`), authenticating with `token`
    /// (empty for a node without one), and fetches the cluster's lease table and plugins.
    /// The other nodes are reached at the client addresses the table lists, with the same
    /// token.
    pub async fn connect(seed_address: &str, token: &[u8]) -> Result<ClusterClient, ClientError> {
        let seed = Client::connect_with_token(seed_address, token).await?;
        let table = seed.lease_table().await?;
        let client = ClusterClient {
            token: token.to_vec(),
            nodes: RefCell::new(vec![None; usize::from(table.node_count)]),
            seed,
            table: RefCell::new(table),
            table_ids: RefCell::new(HashMap::new()),
            next_unkeyed: Cell::new(0),
            redirects_total: Cell::new(0),
            table_fetches_total: Cell::new(1),
        };
        client.refresh_plugins().await?;
        Ok(client)
    }

    /// The lease table the client routes by now.
    pub fn lease_table(&self) -> LeaseTable {
        self.table.borrow().clone()
    }

    /// Requests the nodes redirected because the client's table was stale, since it
    /// connected.
    pub fn redirects_total(&self) -> u64 {
        self.redirects_total.get()
    }

    /// Lease tables fetched, the first one included.
    pub fn table_fetches_total(&self) -> u64 {
        self.table_fetches_total.get()
    }

    /// Fetches the lease table again. Called on a redirect; a caller may call it at any
    /// time (after deploying a plugin, say).
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let table = self.seed.lease_table().await?;
        self.table_fetches_total.set(self.table_fetches_total.get() + 1);
        let mut nodes = self.nodes.borrow_mut();
        if nodes.len() != usize::from(table.node_count) {
            // The cluster changed shape: connections by node id no longer mean the same.
            *nodes = vec![None; usize::from(table.node_count)];
        }
        drop(nodes);
        *self.table.borrow_mut() = table;
        Ok(())
    }

    /// Learns the table ids of every deployed plugin.
    async fn refresh_plugins(&self) -> Result<(), ClientError> {
        let plugins = self.seed.list_plugins().await?;
        let mut table_ids = self.table_ids.borrow_mut();
        table_ids.clear();
        for plugin in plugins {
            let tables = plugin.tables.into_iter().map(|table| (table.name, table.table_id)).collect();
            table_ids.insert(plugin.name, tables);
        }
        Ok(())
    }

    /// The id of `table` of `plugin`, as the nodes listed it. A table the client does not
    /// know is an error: a request with its keys would be routed by a guess.
    fn table_id(&self, plugin: &str, table: &str) -> Result<u32, ClientError> {
        self.table_ids.borrow().get(plugin).and_then(|tables| tables.get(table)).copied().ok_or_else(|| {
            ClientError::InvalidRequest(format!(
                "plugin {plugin:?} has no table {table:?} (deployed plugins are listed when the client connects)"
            ))
        })
    }

    /// The storage key of `key` in `table` of `plugin`: what the lease table places.
    pub fn storage_key(&self, plugin: &str, table: &str, key: &[u8]) -> Result<Vec<u8>, ClientError> {
        Ok(leasehold_keyspace::storage_key(self.table_id(plugin, table)?, key))
    }

    /// The node holding most of the request's keys, or the next node in turn for a
    /// request without keys. Ties go to the holder of the earliest key in the caller's
    /// order (a transfer's first account), which spreads requests whose keys are spread
    /// instead of piling them on the lowest node id.
    pub fn node_for(&self, routed: &RoutedInvocation) -> Result<u16, ClientError> {
        let table = self.table.borrow();
        let node_count = usize::from(table.node_count.max(1));
        if routed.keys.is_empty() {
            let node = self.next_unkeyed.get() % node_count;
            self.next_unkeyed.set(node + 1);
            return Ok(node as u16);
        }
        let mut holders = Vec::with_capacity(routed.keys.len());
        let mut storage_key = Vec::new();
        for key in &routed.keys {
            let table_id = self.table_id(&routed.invocation.plugin, &key.table)?;
            leasehold_keyspace::storage_key_into(&mut storage_key, table_id, &key.key);
            holders.push(table.holder(&storage_key));
        }
        Ok(most_held(&holders, node_count))
    }

    /// The connection to `node`, opened now if needed.
    async fn connection(&self, node: u16) -> Result<Rc<Client>, ClientError> {
        if let Some(Some(client)) = self.nodes.borrow().get(usize::from(node)) {
            return Ok(Rc::clone(client));
        }
        let address = self
            .table
            .borrow()
            .client_addresses
            .get(usize::from(node))
            .cloned()
            .ok_or_else(|| ClientError::Protocol(format!("no address for node {node}")))?;
        let client = Rc::new(Client::connect_with_token(address.as_str(), &self.token).await?);
        // Another call may have connected while this one waited: keep the first
        // connection, so that both calls share it (this one is closed when dropped).
        let mut nodes = self.nodes.borrow_mut();
        match nodes.get_mut(usize::from(node)) {
            Some(Some(existing)) => Ok(Rc::clone(existing)),
            Some(slot) => {
                *slot = Some(Rc::clone(&client));
                Ok(client)
            }
            None => Ok(client),
        }
    }

    /// Runs one request on the node holding its keys; see [`Client::invoke`].
    pub async fn invoke(&self, routed: RoutedInvocation) -> Result<InvokeResult, ClientError> {
        let mut results = self.invoke_many(vec![routed]).await?;
        results.pop().ok_or_else(|| ClientError::Protocol("no result for one invocation".into()))
    }

    /// Runs many requests, each on the node holding its keys: one `invokeMany` message per
    /// node, all in flight at once. Results come back in request order. A failure of any
    /// node's call fails the whole call (requests to other nodes may have run: retry them
    /// under the same request ids).
    pub async fn invoke_many(&self, requests: Vec<RoutedInvocation>) -> Result<Vec<InvokeResult>, ClientError> {
        let mut by_node: Vec<Vec<usize>> = vec![Vec::new(); usize::from(self.table.borrow().node_count.max(1))];
        for (index, routed) in requests.iter().enumerate() {
            by_node[usize::from(self.node_for(routed)?)].push(index);
        }
        let mut results: Vec<Option<InvokeResult>> = vec![None; requests.len()];
        let replies = self.send_grouped(&requests, by_node, true).await?;
        let mut redirected: Vec<(usize, u16)> = Vec::new();
        let mut stale_digest = None;
        for (index, reply) in replies {
            match reply {
                Reply::Result(result) => results[index] = Some(result),
                Reply::Redirected { node, lease_table_digest } => {
                    redirected.push((index, node));
                    stale_digest = Some(lease_table_digest);
                }
            }
        }
        if !redirected.is_empty() {
            self.redirects_total.set(self.redirects_total.get() + redirected.len() as u64);
            if stale_digest != Some(self.table.borrow().digest) {
                self.refresh().await?;
            }
            // Sent where the node said, without asking again: a node whose keys moved
            // on since forwards the request instead of redirecting it in circles.
            let node_count = usize::from(self.table.borrow().node_count.max(1));
            let mut by_node: Vec<Vec<usize>> = vec![Vec::new(); node_count];
            for (index, node) in redirected {
                let node = usize::from(node);
                if node >= node_count {
                    return Err(ClientError::Protocol(format!("redirected to node {node} of {node_count}")));
                }
                by_node[node].push(index);
            }
            for (index, reply) in self.send_grouped(&requests, by_node, false).await? {
                match reply {
                    Reply::Result(result) => results[index] = Some(result),
                    Reply::Redirected { node, .. } => {
                        return Err(ClientError::Protocol(format!(
                            "node {node} redirected a request that did not ask for it"
                        )))
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|result| result.ok_or_else(|| ClientError::Protocol("a request got no reply".into())))
            .collect()
    }

    /// Sends the requests at the indices of `by_node[node]` to each node in one message,
    /// all nodes at once, and returns the replies with their request indices.
    async fn send_grouped(
        &self,
        requests: &[RoutedInvocation],
        by_node: Vec<Vec<usize>>,
        redirect_if_elsewhere: bool,
    ) -> Result<Vec<(usize, Reply)>, ClientError> {
        let mut calls = Vec::new();
        for (node, indices) in by_node.into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let connection = self.connection(node as u16).await?;
            let call = connection
                .invoke_many_call(indices.iter().map(|&index| &requests[index].invocation), redirect_if_elsewhere)?;
            calls.push(async move {
                // Dropping the last handle of a connection closes it, so the call holds
                // one until its replies are in (the table may have replaced the
                // connection meanwhile).
                let _connection = connection;
                call.replies().await.map(|replies| indices.into_iter().zip(replies).collect::<Vec<_>>())
            });
        }
        let mut replies = Vec::with_capacity(requests.len());
        for node_replies in futures::future::join_all(calls).await {
            replies.extend(node_replies?);
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::most_held;

    #[test]
    fn the_node_holding_most_keys_wins_and_ties_go_to_the_earliest_key() {
        assert_eq!(most_held(&[2, 1, 2], 3), 2, "two keys beat one");
        assert_eq!(most_held(&[2, 1], 3), 2, "a tie goes to the first key's holder");
        assert_eq!(most_held(&[1, 2], 3), 1);
        assert_eq!(most_held(&[0, 1, 1, 0, 2], 3), 0, "0 and 1 tie; 0 holds the first key");
        assert_eq!(most_held(&[1], 1), 0, "holders past the node count wrap instead of panicking");
    }
}
