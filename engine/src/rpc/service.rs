//! The `Leasehold` capability served to clients: decodes each call at the edge, hands it
//! to the [`NodeHandle`] and writes the answer. One service object (and one
//! [`CallTracker`]) exists per RPC thread and is shared by that thread's connections.

use super::convert::{self, Refusal, Reply};
use crate::model::Rejection;
use crate::node::{NodeHandle, Pending, Submitted, SubmittedInto};
use crate::txn::ReplyBatch;
use leasehold_schema::leasehold_capnp::{invocation, leasehold};
use std::cell::Cell;
use std::rc::Rc;
use tokio::sync::Notify;

/// Counts the calls one RPC thread is still answering. Stopping the server first stops
/// taking new calls, then waits here until the calls in flight have been answered, so
/// that clients get their results rather than a dropped connection.
pub(super) struct CallTracker {
    stopping: Cell<bool>,
    in_flight: Cell<usize>,
    idle: Notify,
}

/// Marks one call as in flight for as long as it lives.
struct CallGuard(Rc<CallTracker>);

impl CallTracker {
    pub(super) fn new() -> Rc<CallTracker> {
        Rc::new(CallTracker { stopping: Cell::new(false), in_flight: Cell::new(0), idle: Notify::new() })
    }

    /// Registers a new call, or returns `None` once the server is stopping.
    fn begin(self: &Rc<Self>) -> Option<CallGuard> {
        if self.stopping.get() {
            return None;
        }
        self.in_flight.set(self.in_flight.get() + 1);
        Some(CallGuard(self.clone()))
    }

    pub(super) fn stop_taking_calls(&self) {
        self.stopping.set(true);
    }

    /// Resolves once no call is in flight.
    pub(super) async fn wait_idle(&self) {
        loop {
            // Created before the check, so a call that finishes in between still wakes us.
            let idle = self.idle.notified();
            if self.in_flight.get() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let remaining = self.0.in_flight.get() - 1;
        self.0.in_flight.set(remaining);
        if remaining == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Counts refusals decided at the edge with the node's own (the node never sees these
/// requests), so that the metric and `status` agree.
fn count_edge_refusals(node: &NodeHandle, count: usize) {
    node.count_rejections(count as u64);
}

/// The refusal for calls that arrive while the server is stopping.
fn shutting_down(node: &NodeHandle) -> Refusal {
    count_edge_refusals(node, 1);
    Rejection::ShuttingDown.into()
}

/// Decodes one invocation and submits it; refusals from either step come back at once.
fn submit(node: &NodeHandle, request: invocation::Reader<'_>) -> Result<Submitted, Refusal> {
    let invocation = convert::read_invocation(request).inspect_err(|_| count_edge_refusals(node, 1))?;
    Ok(node.submit_or_redirect(invocation, request.get_redirect_if_elsewhere())?)
}

/// Decodes a key read and submits it.
fn submit_read(
    node: &NodeHandle,
    request: leasehold::read_key_params::Reader<'_>,
) -> Result<Pending<Option<Vec<u8>>>, Refusal> {
    let (plugin, table, key) = read_key_request(request).inspect_err(|_| count_edge_refusals(node, 1))?;
    Ok(node.read_key(plugin, table, key)?)
}

fn read_key_request(request: leasehold::read_key_params::Reader<'_>) -> Result<(&str, &str, &[u8]), Refusal> {
    let plugin = convert::read_text(request.get_plugin(), "plugin")?;
    let table = convert::read_text(request.get_table(), "table")?;
    let key = convert::read_data(request.get_key(), "key")?;
    Ok((plugin, table, key))
}

/// Waits for a submitted invocation's outcome; a refusal or redirect stays as it is.
async fn completion(submitted: Result<Submitted, Refusal>) -> Result<Reply, Refusal> {
    match submitted? {
        Submitted::Running(pending) => Ok(Reply::Completed(pending.wait().await?)),
        Submitted::Redirected(redirect) => Ok(Reply::Redirected(redirect)),
    }
}

/// Waits for a submitted read's value; a refusal stays as it is.
async fn read_value(submitted: Result<Pending<Option<Vec<u8>>>, Refusal>) -> Result<Option<Vec<u8>>, Refusal> {
    Ok(submitted?.wait().await?)
}

pub(super) struct LeaseholdService {
    node: NodeHandle,
    invocations_per_message_max: usize,
    calls: Rc<CallTracker>,
}

impl LeaseholdService {
    pub(super) fn new(
        node: NodeHandle,
        invocations_per_message_max: usize,
        calls: Rc<CallTracker>,
    ) -> LeaseholdService {
        LeaseholdService { node, invocations_per_message_max, calls }
    }
}

impl leasehold::Server for LeaseholdService {
    async fn deploy_plugin(
        self: Rc<Self>,
        params: leasehold::DeployPluginParams,
        mut results: leasehold::DeployPluginResults,
    ) -> Result<(), capnp::Error> {
        let Some(_call) = self.calls.begin() else {
            results.get().init_result().set_error(Rejection::ShuttingDown.to_string());
            return Ok(());
        };
        // The blocking pool needs its own copy; the request message is released at once.
        let library = params.get()?.get_library()?.to_vec();
        drop(params);
        let node = self.node.clone();
        // Loading a library and writing it to RocksDB takes milliseconds; on a blocking
        // thread it does not stall the other calls this RPC thread serves.
        let deployed = tokio::task::spawn_blocking(move || node.deploy_plugin(&library))
            .await
            .map_err(|error| capnp::Error::failed(format!("deploying the plugin failed unexpectedly: {error}")))?;
        let mut result = results.get().init_result();
        match deployed {
            Ok(info) => {
                tracing::info!(plugin = %info.name, version = %info.version, digest = %info.digest, "plugin deployed");
                convert::write_plugin_info(result.init_info(), &info);
            }
            Err(error) => {
                tracing::info!(%error, "plugin deploy refused");
                result.set_error(error.to_string());
            }
        }
        Ok(())
    }

    async fn list_plugins(
        self: Rc<Self>,
        _params: leasehold::ListPluginsParams,
        mut results: leasehold::ListPluginsResults,
    ) -> Result<(), capnp::Error> {
        let plugins = self.node.plugins();
        convert::write_plugin_list(results.get().init_plugins(convert::list_length(plugins.len())), &plugins);
        Ok(())
    }

    async fn invoke(
        self: Rc<Self>,
        params: leasehold::InvokeParams,
        mut results: leasehold::InvokeResults,
    ) -> Result<(), capnp::Error> {
        let result = match self.calls.begin() {
            Some(_call) => {
                let submitted = submit(&self.node, params.get()?.get_request()?);
                // The request is decoded; its message need not live while the transaction runs.
                drop(params);
                completion(submitted).await
            }
            None => Err(shutting_down(&self.node)),
        };
        convert::write_result(results.get().init_result(), &result);
        Ok(())
    }

    async fn invoke_many(
        self: Rc<Self>,
        params: leasehold::InvokeManyParams,
        mut results: leasehold::InvokeManyResults,
    ) -> Result<(), capnp::Error> {
        let Some(_call) = self.calls.begin() else {
            convert::write_refusal(results.get().init_result().init_rejected(), &shutting_down(&self.node));
            return Ok(());
        };
        let requests = params.get()?.get_requests()?;
        let count = requests.len();
        if count as usize > self.invocations_per_message_max {
            let refusal = Refusal::TooManyInvocations { count: count as usize, max: self.invocations_per_message_max };
            count_edge_refusals(&self.node, count as usize);
            convert::write_refusal(results.get().init_result().init_rejected(), &refusal);
            return Ok(());
        }
        // Every request is planned and submitted before any is awaited, so that they can
        // all land in the same epoch. Those that run here answer through one batch: one
        // wake-up for the message, not one per request.
        let (batch, batch_results) = ReplyBatch::new();
        let mut decoded = Vec::with_capacity(count as usize);
        // Per request: why it could not be decoded, or `None` for one of `decoded`.
        let mut refusals: Vec<Option<Refusal>> = Vec::with_capacity(count as usize);
        for request in requests.iter() {
            match convert::read_invocation(request) {
                Ok(invocation) => {
                    decoded.push((invocation, request.get_redirect_if_elsewhere()));
                    refusals.push(None);
                }
                Err(refusal) => {
                    count_edge_refusals(&self.node, 1);
                    refusals.push(Some(refusal));
                }
            }
        }
        drop(params);
        let mut answers = self.node.submit_all_into(decoded, &batch).into_iter();
        let submitted: Vec<Result<SubmittedInto, Refusal>> = refusals
            .into_iter()
            .map(|refusal| match refusal {
                Some(refusal) => Err(refusal),
                None => answers.next().expect("one answer per decoded request").map_err(Refusal::from),
            })
            .collect();
        batch.seal();
        drop(batch);
        // Every place is answered (a reply dropped unanswered answers `ShuttingDown`), so
        // the batch's results always arrive.
        let mut batch_results = batch_results.await.unwrap_or_default();
        let mut outcomes = Vec::with_capacity(submitted.len());
        for submitted in submitted {
            outcomes.push(match submitted {
                Ok(SubmittedInto::Batch(place)) => {
                    place.completed(&mut batch_results).map(Reply::Completed).map_err(Refusal::from)
                }
                // Forwarded requests (in a cluster) and redirects answer on their own.
                Ok(SubmittedInto::Alone(submitted)) => completion(Ok(submitted)).await,
                Err(refusal) => Err(refusal),
            });
        }
        let mut list = results.get().init_result().init_results(count);
        for (index, outcome) in (0..).zip(&outcomes) {
            convert::write_result(list.reborrow().get(index), outcome);
        }
        Ok(())
    }

    async fn read_key(
        self: Rc<Self>,
        params: leasehold::ReadKeyParams,
        mut results: leasehold::ReadKeyResults,
    ) -> Result<(), capnp::Error> {
        let result = match self.calls.begin() {
            Some(_call) => {
                let submitted = submit_read(&self.node, params.get()?);
                drop(params);
                read_value(submitted).await
            }
            None => Err(shutting_down(&self.node)),
        };
        convert::write_read_result(results.get().init_result(), &result);
        Ok(())
    }

    async fn status(
        self: Rc<Self>,
        _params: leasehold::StatusParams,
        mut results: leasehold::StatusResults,
    ) -> Result<(), capnp::Error> {
        convert::write_node_status(results.get().init_status(), &self.node.status());
        Ok(())
    }

    async fn open_session(
        self: Rc<Self>,
        _params: leasehold::OpenSessionParams,
        mut results: leasehold::OpenSessionResults,
    ) -> Result<(), capnp::Error> {
        let opened = match self.calls.begin() {
            Some(_call) => {
                // Opening syncs a write to disk: off the RPC thread, which serves others.
                let node = self.node.clone();
                match tokio::task::spawn_blocking(move || node.open_session()).await {
                    Ok(opened) => opened.map_err(Refusal::from),
                    Err(error) => {
                        Err(Refusal::Node(Rejection::Storage(format!("opening the session failed: {error}"))))
                    }
                }
            }
            None => Err(shutting_down(&self.node)),
        };
        convert::write_open_session_result(results.get().init_result(), &opened);
        Ok(())
    }

    async fn lease_table(
        self: Rc<Self>,
        _params: leasehold::LeaseTableParams,
        mut results: leasehold::LeaseTableResults,
    ) -> Result<(), capnp::Error> {
        convert::write_lease_table(results.get().init_table(), &self.node.lease_table());
        Ok(())
    }
}
