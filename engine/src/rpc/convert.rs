//! Conversions between the Cap'n Proto types generated from `leasehold.capnp` and the
//! domain types of [`crate::model`], plus [`Refusal`], every reason a request can be
//! refused before it runs. This is the only place that knows both sides, so the rest of
//! the engine never sees a generated type.

use crate::model::{
    AbortKind, Arguments, Invocation, LeaseTableSnapshot, NodeStatus, Outcome, PluginInfo, Redirect, Rejection,
    RequestId, SessionPosition, Timestamp, REQUEST_ID_BYTES_MAX,
};
use crate::node::Completed;
use leasehold_schema::leasehold_capnp as wire;

// The schema publishes the request id limit to clients in other languages; it must be
// the limit the node enforces.
const _: () = assert!(wire::REQUEST_ID_BYTES_MAX as usize == REQUEST_ID_BYTES_MAX);

/// Why a request did not run: refused by the node, or by the RPC edge before it reached
/// the node. Its `Display` is the message the client sees.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    #[error(transparent)]
    Node(#[from] Rejection),
    /// The request could not be decoded (broken pointers, text that is not UTF-8, a union
    /// member this node does not know).
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("the call carries {count} invocations; at most {max} are allowed in one invokeMany")]
    TooManyInvocations { count: usize, max: usize },
}

impl Refusal {
    fn kind(&self) -> wire::RejectionKind {
        match self {
            Refusal::Node(rejection) => rejection_kind(rejection),
            Refusal::Malformed(_) => wire::RejectionKind::MalformedRequest,
            Refusal::TooManyInvocations { .. } => wire::RejectionKind::TooManyInvocations,
        }
    }
}

fn rejection_kind(rejection: &Rejection) -> wire::RejectionKind {
    use wire::RejectionKind as Kind;
    match rejection {
        Rejection::UnknownPlugin(_) => Kind::UnknownPlugin,
        Rejection::UnknownWorkflow { .. } => Kind::UnknownWorkflow,
        Rejection::UnknownTable { .. } => Kind::UnknownTable,
        Rejection::BadArguments(_) => Kind::BadArguments,
        Rejection::PlanFailed(_) => Kind::PlanFailed,
        Rejection::RequestIdTooLong => Kind::RequestIdTooLong,
        Rejection::AccessSetTooLarge { .. } => Kind::AccessSetTooLarge,
        Rejection::KeyTooLong { .. } => Kind::KeyTooLong,
        Rejection::ShuttingDown => Kind::ShuttingDown,
        Rejection::Storage(_) => Kind::Storage,
        Rejection::Retry(_) => Kind::Retry,
        Rejection::PluginQuarantined { .. } => Kind::PluginQuarantined,
        Rejection::UnknownSession(_) => Kind::UnknownSession,
        Rejection::SequenceAcknowledged { .. } => Kind::SequenceAcknowledged,
        Rejection::SessionFull { .. } => Kind::SessionFull,
        Rejection::TooManySessions(_) => Kind::TooManySessions,
    }
}

fn abort_kind(kind: AbortKind) -> wire::AbortKind {
    match kind {
        AbortKind::Logic => wire::AbortKind::Logic,
        AbortKind::UndeclaredAccess => wire::AbortKind::UndeclaredAccess,
        AbortKind::PluginPanic => wire::AbortKind::PluginPanic,
        AbortKind::ValueTooLarge => wire::AbortKind::ValueTooLarge,
        AbortKind::PluginTimedOut => wire::AbortKind::PluginTimedOut,
    }
}

/// Reads a text field that must be valid UTF-8; `field` names it in the refusal.
pub(super) fn read_text<'a>(text: capnp::Result<capnp::text::Reader<'a>>, field: &str) -> Result<&'a str, Refusal> {
    let text = text.map_err(|error| Refusal::Malformed(format!("{field}: {error}")))?;
    text.to_str().map_err(|_| Refusal::Malformed(format!("{field} is not valid UTF-8")))
}

/// Reads a data field; `field` names it in the refusal.
pub(super) fn read_data<'a>(data: capnp::Result<capnp::data::Reader<'a>>, field: &str) -> Result<&'a [u8], Refusal> {
    data.map_err(|error| Refusal::Malformed(format!("{field}: {error}")))
}

/// The answer to one invocation that was not refused.
#[derive(Debug)]
pub(super) enum Reply {
    Completed(Completed),
    /// The request asked for redirects and its keys are held elsewhere.
    Redirected(Redirect),
}

/// Decodes one invocation, checking what the edge can check without the node: the
/// request id length (before copying it) and the text encodings.
pub(super) fn read_invocation(request: wire::invocation::Reader<'_>) -> Result<Invocation, Refusal> {
    let request_id = read_data(request.get_request_id(), "requestId")?;
    if request_id.len() > REQUEST_ID_BYTES_MAX {
        return Err(Rejection::RequestIdTooLong.into());
    }
    let request_id = if request.has_session() {
        let session = request.get_session().map_err(|error| Refusal::Malformed(format!("session: {error}")))?;
        if !request_id.is_empty() {
            return Err(Refusal::Malformed("a request carries a requestId or a session, not both".into()));
        }
        if session.get_sequence() == 0 || session.get_first_unanswered() == 0 {
            return Err(Refusal::Malformed("session sequence numbers start at 1".into()));
        }
        RequestId::Session(SessionPosition {
            session: session.get_session(),
            sequence: session.get_sequence(),
            first_unanswered: session.get_first_unanswered(),
        })
    } else {
        RequestId::from_bytes(request_id)
    };
    let plugin = read_text(request.get_plugin(), "plugin")?;
    let workflow = read_text(request.get_workflow(), "workflow")?;
    let arguments = match request.get_arguments().which() {
        Ok(wire::invocation::arguments::Encoded(bytes)) => {
            Arguments::Encoded(read_data(bytes, "arguments.encoded")?.to_vec())
        }
        Ok(wire::invocation::arguments::Json(text)) => Arguments::Json(read_text(text, "arguments.json")?.to_owned()),
        Err(capnp::NotInSchema(member)) => {
            return Err(Refusal::Malformed(format!(
                "arguments use union member {member}, which this node does not know"
            )));
        }
    };
    Ok(Invocation { plugin: plugin.to_owned(), workflow: workflow.to_owned(), arguments, request_id })
}

fn write_timestamp(mut builder: wire::timestamp::Builder<'_>, timestamp: Timestamp) {
    builder.set_epoch(timestamp.epoch);
    builder.set_node(timestamp.node);
    builder.set_sequence(timestamp.sequence);
}

/// Writes a refusal as a `Rejection`: its kind for programs, its `Display` for people.
pub(super) fn write_refusal(mut builder: wire::rejection::Builder<'_>, refusal: &Refusal) {
    builder.set_kind(refusal.kind());
    builder.set_message(refusal.to_string());
}

/// Writes the answer to `openSession`.
pub(super) fn write_open_session_result(
    mut builder: wire::open_session_result::Builder<'_>,
    opened: &Result<u64, Refusal>,
) {
    match opened {
        Ok(session) => builder.set_session(*session),
        Err(refusal) => write_refusal(builder.init_rejected(), refusal),
    }
}

/// Writes the result of one invocation.
pub(super) fn write_result(builder: wire::result::Builder<'_>, result: &Result<Reply, Refusal>) {
    let completed = match result {
        Ok(Reply::Completed(completed)) => completed,
        Ok(Reply::Redirected(redirect)) => {
            let mut redirected = builder.init_redirected();
            redirected.set_node(redirect.node);
            redirected.set_client_address(&redirect.client_address);
            redirected.set_lease_table_digest(redirect.lease_table_digest);
            return;
        }
        Err(refusal) => return write_refusal(builder.init_rejected(), refusal),
    };
    match &completed.outcome {
        Outcome::Committed { timestamp, output } => {
            let mut committed = builder.init_committed();
            write_timestamp(committed.reborrow().init_timestamp(), *timestamp);
            committed.set_output(output);
            // Left unset (empty) for encoded arguments, as the schema documents.
            if let Some(json) = &completed.output_json {
                committed.set_output_json(json);
            }
        }
        Outcome::Aborted { timestamp, kind, message } => {
            let mut aborted = builder.init_aborted();
            write_timestamp(aborted.reborrow().init_timestamp(), *timestamp);
            aborted.set_kind(abort_kind(*kind));
            aborted.set_message(message);
        }
    }
}

/// Writes the result of reading one key.
pub(super) fn write_read_result(
    mut builder: wire::read_result::Builder<'_>,
    result: &Result<Option<Vec<u8>>, Refusal>,
) {
    match result {
        Ok(Some(value)) => builder.init_found().set_value(value),
        Ok(None) => builder.set_absent(()),
        Err(refusal) => write_refusal(builder.init_rejected(), refusal),
    }
}

fn write_text_list(mut builder: capnp::text_list::Builder<'_>, items: &[String]) {
    for (index, item) in (0..).zip(items) {
        builder.set(index, item);
    }
}

/// Lengths of lists the engine builds itself (plugins, tables, workflows), which are far
/// below the 2^29 entries a Cap'n Proto list can hold.
pub(super) fn list_length(length: usize) -> u32 {
    u32::try_from(length).unwrap_or(u32::MAX)
}

pub(super) fn write_plugin_info(mut builder: wire::plugin_info::Builder<'_>, info: &PluginInfo) {
    builder.set_name(&info.name);
    builder.set_version(&info.version);
    builder.set_build_info(&info.build_info);
    builder.set_digest(&info.digest);
    let mut tables = builder.reborrow().init_tables(list_length(info.tables.len()));
    for (index, table) in (0..).zip(&info.tables) {
        let mut entry = tables.reborrow().get(index);
        entry.set_name(&table.name);
        entry.set_value_bytes_max(table.value_bytes_max);
        entry.set_table_id(table.table_id);
    }
    write_text_list(builder.init_workflows(list_length(info.workflows.len())), &info.workflows);
}

pub(super) fn write_plugin_list(
    mut builder: capnp::struct_list::Builder<'_, wire::plugin_info::Owned>,
    plugins: &[PluginInfo],
) {
    for (index, plugin) in (0..).zip(plugins) {
        write_plugin_info(builder.reborrow().get(index), plugin);
    }
}

pub(super) fn write_node_status(mut builder: wire::node_status::Builder<'_>, status: &NodeStatus) {
    builder.set_node(status.node);
    builder.set_version(&status.version);
    builder.set_durable_epoch(status.durable_epoch);
    builder.set_committed_total(status.committed_total);
    builder.set_aborted_total(status.aborted_total);
    builder.set_rejected_total(status.rejected_total);
    builder.set_epochs_total(status.epochs_total);
    builder.set_resident_keys(status.resident_keys);
    builder.set_uptime_ms(status.uptime_ms);
    builder.set_cc(&status.cc);
    builder.set_fsync(&status.fsync);
    builder.set_cluster_nodes(status.cluster_nodes);
    builder.set_cluster_generation(status.cluster_generation);
    builder.set_cluster_synced(status.cluster_synced);
    builder.set_lease_table_digest(status.lease_table_digest);
    builder.set_leases_lent(status.leases_lent);
    builder.set_local_accesses(status.local_accesses);
    builder.set_remote_accesses(status.remote_accesses);
    builder.set_fenced_total(status.fenced_total);
    builder.set_fabric(&status.fabric);
    builder.set_lease_moves_total(status.lease_moves_total);
    builder.set_bytes_migrated_total(status.bytes_migrated_total);
    builder.set_forwarded_total(status.forwarded_total);
    builder.set_forwards_received_total(status.forwards_received_total);
    builder.set_transactions_decayed(status.transactions_decayed);
    builder.set_redirected_total(status.redirected_total);
    builder.set_abandoned_plugin_calls(status.abandoned_plugin_calls);
    write_text_list(
        builder.reborrow().init_overdue_plugin_calls(list_length(status.overdue_plugin_calls.len())),
        &status.overdue_plugin_calls,
    );
    builder.set_concurrency_retries_total(status.concurrency_retries_total);
    write_text_list(builder.init_plugins(list_length(status.plugins.len())), &status.plugins);
}

/// Writes where every key is held and how to reach each node.
pub(super) fn write_lease_table(mut builder: wire::lease_table::Builder<'_>, table: &LeaseTableSnapshot) {
    builder.set_node_count(table.node_count);
    builder.set_digest(table.digest);
    let mut nodes = builder.reborrow().init_nodes(list_length(table.client_addresses.len()));
    for (index, address) in (0..).zip(&table.client_addresses) {
        let mut entry = nodes.reborrow().get(index);
        entry.set_node(index as u16);
        entry.set_client_address(address);
    }
    let mut moved = builder.init_moved(list_length(table.moved.len()));
    for (index, (storage_key, holder)) in (0..).zip(&table.moved) {
        let mut entry = moved.reborrow().get(index);
        entry.set_storage_key(storage_key);
        entry.set_holder(*holder);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TableInfo;

    fn invocation_message(
        fill: impl FnOnce(wire::invocation::Builder<'_>),
    ) -> capnp::message::Builder<capnp::message::HeapAllocator> {
        let mut message = capnp::message::Builder::new_default();
        fill(message.init_root());
        message
    }

    #[test]
    fn reads_an_invocation_with_json_arguments() {
        let message = invocation_message(|mut request| {
            request.set_plugin("banking");
            request.set_workflow("transfer");
            request.set_request_id(b"id-1");
            request.init_arguments().set_json("{\"amount\":5}");
        });
        let reader = message.get_root_as_reader().expect("root");
        let invocation = read_invocation(reader).expect("well-formed invocation");
        assert_eq!(invocation.plugin, "banking");
        assert_eq!(invocation.workflow, "transfer");
        assert_eq!(invocation.request_id, RequestId::from_bytes(b"id-1".to_vec()));
        assert_eq!(invocation.arguments, Arguments::Json("{\"amount\":5}".into()));
    }

    #[test]
    fn refuses_a_long_request_id_as_the_node_would() {
        let message = invocation_message(|mut request| {
            request.set_request_id(&[7; REQUEST_ID_BYTES_MAX + 1]);
            request.init_arguments().set_encoded(&[]);
        });
        let refusal = read_invocation(message.get_root_as_reader().expect("root")).expect_err("too long");
        assert!(matches!(refusal, Refusal::Node(Rejection::RequestIdTooLong)));
        assert_eq!(refusal.kind(), wire::RejectionKind::RequestIdTooLong);
    }

    #[test]
    fn refuses_text_that_is_not_utf8() {
        let message = invocation_message(|mut request| {
            request.reborrow().init_plugin(2).as_bytes_mut().copy_from_slice(&[0xff, 0xfe]);
            request.init_arguments().set_encoded(&[1]);
        });
        let refusal = read_invocation(message.get_root_as_reader().expect("root")).expect_err("bad UTF-8");
        assert_eq!(refusal.kind(), wire::RejectionKind::MalformedRequest);
        assert_eq!(refusal.to_string(), "malformed request: plugin is not valid UTF-8");
    }

    #[test]
    fn writes_committed_and_refused_results() {
        let mut message = capnp::message::Builder::new_default();
        let completed = Completed {
            outcome: Outcome::Committed { timestamp: Timestamp { epoch: 9, node: 1, sequence: 3 }, output: vec![1, 2] },
            output_json: Some("[1,2]".into()),
        };
        write_result(message.init_root(), &Ok(Reply::Completed(completed)));
        let reader = message.get_root_as_reader::<wire::result::Reader<'_>>().expect("root");
        match reader.which() {
            Ok(wire::result::Committed(committed)) => {
                let timestamp = committed.get_timestamp().expect("timestamp");
                assert_eq!((timestamp.get_epoch(), timestamp.get_node(), timestamp.get_sequence()), (9, 1, 3));
                assert_eq!(committed.get_output().expect("output"), &[1, 2]);
                assert_eq!(committed.get_output_json().expect("json").to_str(), Ok("[1,2]"));
            }
            _ => panic!("expected a committed result"),
        }

        let mut message = capnp::message::Builder::new_default();
        let refusal = Refusal::Node(Rejection::UnknownPlugin("nope".into()));
        write_result(message.init_root(), &Err(refusal));
        let reader = message.get_root_as_reader::<wire::result::Reader<'_>>().expect("root");
        match reader.which() {
            Ok(wire::result::Rejected(rejection)) => {
                let rejection = rejection.expect("rejection");
                assert_eq!(rejection.get_kind(), Ok(wire::RejectionKind::UnknownPlugin));
                assert_eq!(rejection.get_message().expect("message").to_str(), Ok("unknown plugin \"nope\""));
            }
            _ => panic!("expected a rejected result"),
        }

        let mut message = capnp::message::Builder::new_default();
        let redirect = Redirect { node: 2, client_address: "127.0.0.1:7422".into(), lease_table_digest: 77 };
        write_result(message.init_root(), &Ok(Reply::Redirected(redirect)));
        let reader = message.get_root_as_reader::<wire::result::Reader<'_>>().expect("root");
        match reader.which() {
            Ok(wire::result::Redirected(redirected)) => {
                let redirected = redirected.expect("redirect");
                assert_eq!((redirected.get_node(), redirected.get_lease_table_digest()), (2, 77));
                assert_eq!(redirected.get_client_address().expect("address").to_str(), Ok("127.0.0.1:7422"));
            }
            _ => panic!("expected a redirect"),
        }
    }

    #[test]
    fn writes_plugin_info() {
        let info = PluginInfo {
            name: "banking".into(),
            version: "1.0.0".into(),
            build_info: "rustc".into(),
            digest: "abcd".into(),
            tables: vec![TableInfo { name: "accounts".into(), value_bytes_max: 64, table_id: 5 }],
            workflows: vec!["transfer".into(), "deposit".into()],
        };
        let mut message = capnp::message::Builder::new_default();
        write_plugin_info(message.init_root(), &info);
        let reader = message.get_root_as_reader::<wire::plugin_info::Reader<'_>>().expect("root");
        let tables = reader.get_tables().expect("tables");
        assert_eq!(tables.len(), 1);
        assert_eq!(tables.get(0).get_value_bytes_max(), 64);
        assert_eq!(tables.get(0).get_table_id(), 5);
        let workflows = reader.get_workflows().expect("workflows");
        assert_eq!(workflows.get(1).expect("workflow").to_str(), Ok("deposit"));
    }
}
