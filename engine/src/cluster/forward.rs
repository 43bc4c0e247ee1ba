//! Forwarding: a node runs a client's request on the node that holds most of its keys.
//!
//! The receiving node plans the request (it needs the access set to route it), asks
//! [`super::routing::route`] where it should run, and when that is another node sends it
//! there as a [`Frame::Forward`]. The other node plans it again, submits it to its own
//! next epoch like any client request and sends the outcome back as a
//! [`Frame::ForwardReply`] once the epoch is durable everywhere. The client's call waits
//! on the receiving node the whole time, so forwarding is invisible to it.
//!
//! Only requests with a request id are forwarded. If the cluster view changes while a
//! forwarded request is out, the receiving node answers the client with `Retry` without
//! knowing whether the request ran; the client's retry under the same id then returns the
//! first outcome if there was one (exactly-once), which is safe only because the id is
//! tracked.
//!
//! Two halves: [`Forwards`] is the receiving node's table of requests it forwarded and
//! waits for; [`ForwardServer`] is the thread on the running node that plans, submits and
//! answers forwarded requests.

use super::driver::ClusterStats;
use super::transport::Transport;
use super::wire::Frame;
use crate::model::{Arguments, Invocation, NodeId, Rejection, RequestId};
use crate::txn::epoch::DriverMessage;
use crate::txn::{PlannedTransaction, Reply, Submission, TransactionStats};
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Requests this node forwarded, waiting for their replies, by forward id.
#[derive(Default)]
pub struct Forwards {
    next_id: AtomicU64,
    waiting: Mutex<FxHashMap<u64, Reply>>,
}

impl Forwards {
    /// Registers a reply to complete when the forward's answer arrives; returns its id.
    pub fn register(&self, reply: Reply) -> u64 {
        let forward_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.waiting.lock().insert(forward_id, reply);
        forward_id
    }

    /// Completes a forward with the running node's answer. An answer for a forward that
    /// was already failed (the view changed meanwhile) is dropped.
    pub fn complete(&self, forward_id: u64, result: Result<crate::model::Outcome, Rejection>) {
        if let Some(reply) = self.waiting.lock().remove(&forward_id) {
            reply.send(result);
        }
    }

    /// Fails every forward still out: the view changed, so their answers may never come.
    pub fn fail_all(&self, rejection: &Rejection) {
        let waiting = std::mem::take(&mut *self.waiting.lock());
        for (_, reply) in waiting {
            reply.send(Err(rejection.clone()));
        }
    }

    /// Forwards still waiting for an answer.
    pub fn outstanding(&self) -> usize {
        self.waiting.lock().len()
    }
}

/// A forwarded request as it arrived.
pub struct ForwardedRequest {
    pub from: NodeId,
    pub forward_id: u64,
    pub generation: u64,
    pub invocation: Invocation,
}

impl ForwardedRequest {
    /// The request of a [`Frame::Forward`]; any other frame comes back unchanged.
    pub fn from_frame(from: NodeId, frame: Frame) -> Result<ForwardedRequest, Frame> {
        match frame {
            Frame::Forward { forward_id, generation, plugin, workflow, request_id, arguments } => {
                Ok(ForwardedRequest {
                    from,
                    forward_id,
                    generation,
                    invocation: Invocation {
                        plugin,
                        workflow,
                        request_id: RequestId::from_bytes(request_id),
                        arguments: Arguments::Encoded(arguments),
                    },
                })
            }
            other => Err(other),
        }
    }
}

/// Plans a forwarded request exactly as a client's request is planned.
pub type Planner = Box<dyn Fn(Invocation) -> Result<PlannedTransaction, Rejection> + Send + Sync>;

/// The thread that runs requests other nodes forwarded to this one.
pub struct ForwardServer {
    requests: tokio::sync::mpsc::UnboundedSender<ForwardedRequest>,
}

impl ForwardServer {
    /// Starts the thread. `inbox` is the epoch driver's; answers go out through
    /// `transport` (set once the transport exists, which needs this server first).
    pub fn start(
        planner: Planner,
        inbox: Sender<DriverMessage>,
        stats: Arc<ClusterStats>,
        transport: Arc<std::sync::OnceLock<Arc<Transport>>>,
    ) -> std::io::Result<ForwardServer> {
        let (requests, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<ForwardedRequest>();
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        std::thread::Builder::new().name("leasehold-forward".into()).spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                while let Some(request) = arrivals.recv().await {
                    let (from, forward_id) = (request.from, request.forward_id);
                    let answer = match admit(&planner, &inbox, &stats, request) {
                        Ok(receiver) => receiver,
                        Err(rejection) => {
                            reply(&transport, from, forward_id, Err(rejection));
                            continue;
                        }
                    };
                    let transport = transport.clone();
                    tokio::task::spawn_local(async move {
                        // A dropped reply means the node stopped before the request ran.
                        let result = answer.await.unwrap_or(Err(Rejection::ShuttingDown));
                        reply(&transport, from, forward_id, result);
                    });
                }
            });
        })?;
        Ok(ForwardServer { requests })
    }

    /// Hands a forwarded request to the thread (called on the transport's receiver thread,
    /// which must not wait for planning).
    pub fn submit(&self, request: ForwardedRequest) {
        let _ = self.requests.send(request);
    }
}

/// Plans and submits a forwarded request, or says why it cannot run here.
fn admit(
    planner: &Planner,
    inbox: &Sender<DriverMessage>,
    stats: &ClusterStats,
    request: ForwardedRequest,
) -> Result<tokio::sync::oneshot::Receiver<Result<crate::model::Outcome, Rejection>>, Rejection> {
    // A request forwarded in another view may belong to an epoch the cluster rolled back
    // or to a table this node no longer agrees on: refuse it, the sender retries.
    let synced = stats.synced.load(Ordering::Acquire);
    if !synced || stats.generation.load(Ordering::Acquire) != request.generation {
        return Err(Rejection::Retry("the request was forwarded in a cluster view that has since changed".into()));
    }
    let transaction = planner(request.invocation)?;
    let (reply, receiver) = Reply::one();
    inbox.send(DriverMessage::Submit(Submission { transaction, reply })).map_err(|_| Rejection::ShuttingDown)?;
    TransactionStats::count(&stats.forwards_received_total, 1);
    Ok(receiver)
}

fn reply(
    transport: &std::sync::OnceLock<Arc<Transport>>,
    to: NodeId,
    forward_id: u64,
    result: Result<crate::model::Outcome, Rejection>,
) {
    if let Some(transport) = transport.get() {
        transport.send(to, &Frame::ForwardReply { forward_id, result });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, Timestamp};

    #[test]
    fn forwards_complete_once_and_fail_together_on_a_view_change() {
        let forwards = Forwards::default();
        let (first_reply, mut first) = Reply::one();
        let (second_reply, mut second) = Reply::one();
        let first_id = forwards.register(first_reply);
        let second_id = forwards.register(second_reply);
        assert_ne!(first_id, second_id);
        let outcome = Outcome::Committed { timestamp: Timestamp { epoch: 1, node: 1, sequence: 0 }, output: vec![7] };
        forwards.complete(first_id, Ok(outcome.clone()));
        assert_eq!(first.try_recv().expect("answered"), Ok(outcome.clone()));
        assert_eq!(forwards.outstanding(), 1);
        forwards.fail_all(&Rejection::Retry("view changed".into()));
        assert_eq!(second.try_recv().expect("failed"), Err(Rejection::Retry("view changed".into())));
        // A late answer after the failure goes nowhere, and a second answer to the first
        // forward changes nothing.
        forwards.complete(second_id, Ok(outcome.clone()));
        forwards.complete(first_id, Ok(outcome));
        assert_eq!(forwards.outstanding(), 0);
    }
}
