//! Conversions between the client's plain types and the Cap'n Proto types generated from
//! `leasehold.capnp`. Replies come from the network, so every read is checked: a reply
//! that does not match the schema becomes [`ClientError::Protocol`], never a panic.

use crate::error::ClientError;
use crate::types::{
    AbortKind, Arguments, Invocation, InvokeResult, LeaseTable, NodeStatus, PluginInfo, RejectionKind, TableInfo,
    Timestamp,
};
use leasehold_schema::leasehold_capnp as wire;

/// The longest list Cap'n Proto can encode (element counts have 29 bits).
const LIST_LENGTH_MAX: usize = (1 << 29) - 1;

/// The length of a list to send, refused when Cap'n Proto cannot encode it.
pub(crate) fn list_length(length: usize) -> Result<u32, ClientError> {
    if length > LIST_LENGTH_MAX {
        return Err(ClientError::InvalidRequest(format!("{length} items; a list holds at most {LIST_LENGTH_MAX}")));
    }
    u32::try_from(length).map_err(|_| ClientError::InvalidRequest(format!("{length} items do not fit in one list")))
}

/// Writes one invocation; `redirect_if_elsewhere` asks the node for a redirect instead of
/// forwarding (see `Invocation.redirectIfElsewhere`).
pub(crate) fn write_invocation(
    mut builder: wire::invocation::Builder<'_>,
    invocation: &Invocation,
    redirect_if_elsewhere: bool,
) {
    builder.set_redirect_if_elsewhere(redirect_if_elsewhere);
    builder.set_plugin(&invocation.plugin);
    builder.set_workflow(&invocation.workflow);
    if !invocation.request_id.is_empty() {
        builder.set_request_id(&invocation.request_id);
    }
    if let Some(position) = &invocation.session {
        let mut session = builder.reborrow().init_session();
        session.set_session(position.session);
        session.set_sequence(position.sequence);
        session.set_first_unanswered(position.first_unanswered);
    }
    let mut arguments = builder.init_arguments();
    match &invocation.arguments {
        Arguments::Encoded(bytes) => arguments.set_encoded(bytes),
        Arguments::Json(text) => arguments.set_json(text),
    }
}

pub(crate) fn read_text(text: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, ClientError> {
    let text = text.map_err(ClientError::protocol)?;
    text.to_string().map_err(|_| ClientError::Protocol("a text field is not valid UTF-8".into()))
}

fn read_timestamp(timestamp: capnp::Result<wire::timestamp::Reader<'_>>) -> Result<Timestamp, ClientError> {
    let timestamp = timestamp.map_err(ClientError::protocol)?;
    Ok(Timestamp { epoch: timestamp.get_epoch(), node: timestamp.get_node(), sequence: timestamp.get_sequence() })
}

/// A reply union member added to the schema after this client was built.
pub(crate) fn unknown_member(what: &str, member: capnp::NotInSchema) -> ClientError {
    ClientError::Protocol(format!("the node sent {what} this client does not know (union member {})", member.0))
}

pub(crate) fn abort_kind(kind: Result<wire::AbortKind, capnp::NotInSchema>) -> AbortKind {
    match kind {
        Ok(wire::AbortKind::Logic) => AbortKind::Logic,
        Ok(wire::AbortKind::UndeclaredAccess) => AbortKind::UndeclaredAccess,
        Ok(wire::AbortKind::PluginPanic) => AbortKind::PluginPanic,
        Ok(wire::AbortKind::ValueTooLarge) => AbortKind::ValueTooLarge,
        Ok(wire::AbortKind::PluginTimedOut) => AbortKind::PluginTimedOut,
        Err(capnp::NotInSchema(ordinal)) => AbortKind::Unrecognized(ordinal),
    }
}

pub(crate) fn rejection_kind(kind: Result<wire::RejectionKind, capnp::NotInSchema>) -> RejectionKind {
    use wire::RejectionKind as Wire;
    match kind {
        Ok(Wire::UnknownPlugin) => RejectionKind::UnknownPlugin,
        Ok(Wire::UnknownWorkflow) => RejectionKind::UnknownWorkflow,
        Ok(Wire::UnknownTable) => RejectionKind::UnknownTable,
        Ok(Wire::BadArguments) => RejectionKind::BadArguments,
        Ok(Wire::PlanFailed) => RejectionKind::PlanFailed,
        Ok(Wire::RequestIdTooLong) => RejectionKind::RequestIdTooLong,
        Ok(Wire::AccessSetTooLarge) => RejectionKind::AccessSetTooLarge,
        Ok(Wire::KeyTooLong) => RejectionKind::KeyTooLong,
        Ok(Wire::ShuttingDown) => RejectionKind::ShuttingDown,
        Ok(Wire::Storage) => RejectionKind::Storage,
        Ok(Wire::MalformedRequest) => RejectionKind::MalformedRequest,
        Ok(Wire::TooManyInvocations) => RejectionKind::TooManyInvocations,
        Ok(Wire::Retry) => RejectionKind::Retry,
        Ok(Wire::PluginQuarantined) => RejectionKind::PluginQuarantined,
        Ok(Wire::UnknownSession) => RejectionKind::UnknownSession,
        Ok(Wire::SequenceAcknowledged) => RejectionKind::SequenceAcknowledged,
        Ok(Wire::SessionFull) => RejectionKind::SessionFull,
        Ok(Wire::TooManySessions) => RejectionKind::TooManySessions,
        Err(capnp::NotInSchema(ordinal)) => RejectionKind::Unrecognized(ordinal),
    }
}

/// Reads a rejection as its kind and message.
pub(crate) fn read_rejection(
    rejection: capnp::Result<wire::rejection::Reader<'_>>,
) -> Result<(RejectionKind, String), ClientError> {
    let rejection = rejection.map_err(ClientError::protocol)?;
    Ok((rejection_kind(rejection.get_kind()), read_text(rejection.get_message())?))
}

/// A rejection as the error of a call that has no rejected result of its own.
pub(crate) fn rejected(rejection: capnp::Result<wire::rejection::Reader<'_>>) -> ClientError {
    match read_rejection(rejection) {
        Ok((kind, message)) => ClientError::Rejected { kind, message },
        Err(error) => error,
    }
}

/// The answer to one invocation: its result, or (only when the invocation asked for it)
/// the node that holds its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Result(InvokeResult),
    Redirected { node: u16, lease_table_digest: u64 },
}

/// Reads the result of an invocation that did not ask for redirects.
pub(crate) fn read_result(result: wire::result::Reader<'_>) -> Result<InvokeResult, ClientError> {
    match read_reply(result)? {
        Reply::Result(result) => Ok(result),
        Reply::Redirected { node, .. } => {
            Err(ClientError::Protocol(format!("the node redirected to node {node} a request that did not ask for it")))
        }
    }
}

/// Reads the answer to an invocation, which may be a redirect.
pub(crate) fn read_reply(result: wire::result::Reader<'_>) -> Result<Reply, ClientError> {
    if let Ok(wire::result::Redirected(redirect)) = result.which() {
        let redirect = redirect.map_err(ClientError::protocol)?;
        return Ok(Reply::Redirected {
            node: redirect.get_node(),
            lease_table_digest: redirect.get_lease_table_digest(),
        });
    }
    read_invocation_result(result).map(Reply::Result)
}

fn read_invocation_result(result: wire::result::Reader<'_>) -> Result<InvokeResult, ClientError> {
    match result.which().map_err(|member| unknown_member("a result", member))? {
        wire::result::Committed(committed) => {
            let output_json = read_text(committed.get_output_json())?;
            Ok(InvokeResult::Committed {
                timestamp: read_timestamp(committed.get_timestamp())?,
                output: committed.get_output().map_err(ClientError::protocol)?.to_vec(),
                // The schema sends no JSON as empty text; JSON output itself is never empty.
                output_json: if output_json.is_empty() { None } else { Some(output_json) },
            })
        }
        wire::result::Aborted(aborted) => Ok(InvokeResult::Aborted {
            timestamp: read_timestamp(aborted.get_timestamp())?,
            kind: abort_kind(aborted.get_kind()),
            message: read_text(aborted.get_message())?,
        }),
        wire::result::Rejected(rejection) => {
            let (kind, message) = read_rejection(rejection)?;
            Ok(InvokeResult::Rejected { kind, message })
        }
        wire::result::Redirected(_) => unreachable!("read_reply reads redirects first"),
    }
}

/// Reads a lease table, checking what routing relies on: at least one node, one address
/// per node in id order, and holders that exist.
pub(crate) fn read_lease_table(table: wire::lease_table::Reader<'_>) -> Result<LeaseTable, ClientError> {
    let node_count = table.get_node_count();
    if node_count == 0 {
        return Err(ClientError::Protocol("a lease table of no nodes".into()));
    }
    let nodes = table.get_nodes().map_err(ClientError::protocol)?;
    if nodes.len() != u32::from(node_count) {
        return Err(ClientError::Protocol(format!(
            "a lease table of {node_count} nodes lists {} addresses",
            nodes.len()
        )));
    }
    let mut client_addresses = Vec::with_capacity(usize::from(node_count));
    for (expected, node) in (0..).zip(nodes.iter()) {
        if node.get_node() != expected {
            return Err(ClientError::Protocol(format!(
                "lease table address {expected} names node {}",
                node.get_node()
            )));
        }
        client_addresses.push(read_text(node.get_client_address())?);
    }
    let moved_list = table.get_moved().map_err(ClientError::protocol)?;
    let mut moved = std::collections::HashMap::with_capacity(moved_list.len() as usize);
    for lease in moved_list.iter() {
        let holder = lease.get_holder();
        if holder >= node_count {
            return Err(ClientError::Protocol(format!("a lease held by node {holder} of {node_count}")));
        }
        moved.insert(lease.get_storage_key().map_err(ClientError::protocol)?.to_vec(), holder);
    }
    Ok(LeaseTable { node_count, digest: table.get_digest(), client_addresses, moved })
}

fn read_text_list(list: capnp::Result<capnp::text_list::Reader<'_>>) -> Result<Vec<String>, ClientError> {
    list.map_err(ClientError::protocol)?.iter().map(read_text).collect()
}

pub(crate) fn read_plugin_info(info: wire::plugin_info::Reader<'_>) -> Result<PluginInfo, ClientError> {
    let tables = info
        .get_tables()
        .map_err(ClientError::protocol)?
        .iter()
        .map(|table| {
            Ok(TableInfo {
                name: read_text(table.get_name())?,
                value_bytes_max: table.get_value_bytes_max(),
                table_id: table.get_table_id(),
            })
        })
        .collect::<Result<_, ClientError>>()?;
    Ok(PluginInfo {
        name: read_text(info.get_name())?,
        version: read_text(info.get_version())?,
        build_info: read_text(info.get_build_info())?,
        digest: read_text(info.get_digest())?,
        tables,
        workflows: read_text_list(info.get_workflows())?,
    })
}

pub(crate) fn read_node_status(status: wire::node_status::Reader<'_>) -> Result<NodeStatus, ClientError> {
    Ok(NodeStatus {
        node: status.get_node(),
        version: read_text(status.get_version())?,
        durable_epoch: status.get_durable_epoch(),
        committed_total: status.get_committed_total(),
        aborted_total: status.get_aborted_total(),
        rejected_total: status.get_rejected_total(),
        epochs_total: status.get_epochs_total(),
        resident_keys: status.get_resident_keys(),
        plugins: read_text_list(status.get_plugins())?,
        uptime_ms: status.get_uptime_ms(),
        cc: read_text(status.get_cc())?,
        fsync: read_text(status.get_fsync())?,
        cluster_nodes: status.get_cluster_nodes(),
        cluster_generation: status.get_cluster_generation(),
        cluster_synced: status.get_cluster_synced(),
        lease_table_digest: status.get_lease_table_digest(),
        leases_lent: status.get_leases_lent(),
        local_accesses: status.get_local_accesses(),
        remote_accesses: status.get_remote_accesses(),
        fenced_total: status.get_fenced_total(),
        fabric: read_text(status.get_fabric())?,
        lease_moves_total: status.get_lease_moves_total(),
        bytes_migrated_total: status.get_bytes_migrated_total(),
        concurrency_retries_total: status.get_concurrency_retries_total(),
        forwarded_total: status.get_forwarded_total(),
        forwards_received_total: status.get_forwards_received_total(),
        transactions_decayed: status.get_transactions_decayed(),
        redirected_total: status.get_redirected_total(),
        overdue_plugin_calls: read_text_list(status.get_overdue_plugin_calls())?,
        abandoned_plugin_calls: status.get_abandoned_plugin_calls(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use capnp::message::{Builder, HeapAllocator};

    fn result_message(fill: impl FnOnce(wire::result::Builder<'_>)) -> Builder<HeapAllocator> {
        let mut message = Builder::new_default();
        fill(message.init_root());
        message
    }

    fn read_back(message: &Builder<HeapAllocator>) -> Result<InvokeResult, ClientError> {
        read_result(message.get_root_as_reader().expect("root"))
    }

    #[test]
    fn writes_an_invocation_as_the_schema_describes() {
        let invocation = Invocation::json("banking", "transfer", "{\"amount\":5}").with_request_id(*b"retry-7");
        let mut message = Builder::new_default();
        write_invocation(message.init_root(), &invocation, false);
        let reader: wire::invocation::Reader<'_> = message.get_root_as_reader().expect("root");
        assert_eq!(reader.get_plugin().expect("plugin").to_str(), Ok("banking"));
        assert_eq!(reader.get_workflow().expect("workflow").to_str(), Ok("transfer"));
        assert_eq!(reader.get_request_id().expect("request id"), b"retry-7");
        match reader.get_arguments().which() {
            Ok(wire::invocation::arguments::Json(text)) => {
                assert_eq!(text.expect("json").to_str(), Ok("{\"amount\":5}"));
            }
            _ => panic!("expected JSON arguments"),
        }

        let invocation = Invocation::encoded("ycsb", "read", vec![1, 2, 3]);
        let mut message = Builder::new_default();
        write_invocation(message.init_root(), &invocation, true);
        let reader: wire::invocation::Reader<'_> = message.get_root_as_reader().expect("root");
        assert!(!reader.has_request_id(), "an untracked request sends no id");
        assert!(reader.get_redirect_if_elsewhere(), "a routed request asks for redirects");
        match reader.get_arguments().which() {
            Ok(wire::invocation::arguments::Encoded(bytes)) => assert_eq!(bytes.expect("bytes"), &[1, 2, 3]),
            _ => panic!("expected encoded arguments"),
        }
    }

    #[test]
    fn reads_a_committed_result_and_treats_empty_json_as_absent() {
        let message = result_message(|result| {
            let mut committed = result.init_committed();
            let mut timestamp = committed.reborrow().init_timestamp();
            timestamp.set_epoch(12);
            timestamp.set_node(2);
            timestamp.set_sequence(40);
            committed.set_output(&[9, 9]);
        });
        assert_eq!(
            read_back(&message).expect("result"),
            InvokeResult::Committed {
                timestamp: Timestamp { epoch: 12, node: 2, sequence: 40 },
                output: vec![9, 9],
                output_json: None
            }
        );

        let message = result_message(|result| {
            let mut committed = result.init_committed();
            committed.set_output_json("{\"balance\":3}");
        });
        match read_back(&message).expect("result") {
            InvokeResult::Committed { output_json, .. } => assert_eq!(output_json.as_deref(), Some("{\"balance\":3}")),
            other => panic!("expected a committed result, got {other:?}"),
        }
    }

    #[test]
    fn reads_aborted_and_rejected_results() {
        let message = result_message(|result| {
            let mut aborted = result.init_aborted();
            aborted.set_kind(wire::AbortKind::UndeclaredAccess);
            aborted.set_message("touched accounts/9");
        });
        assert_eq!(
            read_back(&message).expect("result"),
            InvokeResult::Aborted {
                timestamp: Timestamp::default(),
                kind: AbortKind::UndeclaredAccess,
                message: "touched accounts/9".into()
            }
        );

        let message = result_message(|result| {
            let mut rejection = result.init_rejected();
            rejection.set_kind(wire::RejectionKind::TooManyInvocations);
            rejection.set_message("too many");
        });
        assert_eq!(
            read_back(&message).expect("result"),
            InvokeResult::Rejected { kind: RejectionKind::TooManyInvocations, message: "too many".into() }
        );
    }

    #[test]
    fn a_result_that_is_not_utf8_is_a_protocol_error() {
        let message = result_message(|result| {
            let aborted = result.init_aborted();
            aborted.init_message(1).as_bytes_mut().copy_from_slice(&[0xc3]);
        });
        assert!(matches!(read_back(&message), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn kinds_added_later_stay_readable() {
        assert_eq!(rejection_kind(Err(capnp::NotInSchema(40))), RejectionKind::Unrecognized(40));
        assert_eq!(abort_kind(Err(capnp::NotInSchema(7))), AbortKind::Unrecognized(7));
        assert_eq!(RejectionKind::Unrecognized(40).to_string(), "rejection-kind-40");
        assert_eq!(RejectionKind::KeyTooLong.to_string(), "key-too-long");
    }

    #[test]
    fn reads_plugin_info_and_node_status() {
        let mut message = Builder::new_default();
        {
            let mut info: wire::plugin_info::Builder<'_> = message.init_root();
            info.set_name("banking");
            info.set_version("0.1.0");
            info.set_digest("ff00");
            let mut tables = info.reborrow().init_tables(1);
            tables.reborrow().get(0).set_name("accounts");
            tables.reborrow().get(0).set_value_bytes_max(128);
            tables.reborrow().get(0).set_table_id(0xdead_beef);
            let mut workflows = info.init_workflows(2);
            workflows.set(0, "transfer");
            workflows.set(1, "audit");
        }
        let info = read_plugin_info(message.get_root_as_reader().expect("root")).expect("plugin info");
        assert_eq!(info.name, "banking");
        assert_eq!(info.build_info, "");
        assert_eq!(
            info.tables,
            vec![TableInfo { name: "accounts".into(), value_bytes_max: 128, table_id: 0xdead_beef }]
        );
        assert_eq!(info.workflows, vec!["transfer".to_string(), "audit".to_string()]);

        let mut message = Builder::new_default();
        {
            let mut status: wire::node_status::Builder<'_> = message.init_root();
            status.set_node(3);
            status.set_durable_epoch(77);
            status.set_fsync("every-epoch");
            status.init_plugins(1).set(0, "banking");
        }
        let status = read_node_status(message.get_root_as_reader().expect("root")).expect("status");
        assert_eq!((status.node, status.durable_epoch), (3, 77));
        assert_eq!(status.fsync, "every-epoch");
        assert_eq!(status.plugins, vec!["banking".to_string()]);
    }

    #[test]
    fn refuses_lists_cap_n_proto_cannot_encode() {
        assert_eq!(list_length(3).expect("small list"), 3);
        assert!(matches!(list_length(LIST_LENGTH_MAX + 1), Err(ClientError::InvalidRequest(_))));
    }

    #[test]
    fn reads_redirects_only_where_they_were_asked_for() {
        let message = result_message(|result| {
            let mut redirect = result.init_redirected();
            redirect.set_node(2);
            redirect.set_lease_table_digest(99);
        });
        let reader = message.get_root_as_reader().expect("root");
        assert_eq!(read_reply(reader).expect("reply"), Reply::Redirected { node: 2, lease_table_digest: 99 });
        assert!(matches!(read_back(&message), Err(ClientError::Protocol(_))), "an unasked-for redirect is refused");
    }

    fn lease_table_message(
        node_count: u16,
        addresses: &[(u16, &str)],
        moved: &[(&[u8], u16)],
    ) -> Builder<HeapAllocator> {
        let mut message = Builder::new_default();
        let mut table: wire::lease_table::Builder<'_> = message.init_root();
        table.set_node_count(node_count);
        table.set_digest(7);
        let mut nodes = table.reborrow().init_nodes(addresses.len() as u32);
        for (index, (node, address)) in (0..).zip(addresses) {
            nodes.reborrow().get(index).set_node(*node);
            nodes.reborrow().get(index).set_client_address(*address);
        }
        let mut list = table.init_moved(moved.len() as u32);
        for (index, (key, holder)) in (0..).zip(moved) {
            list.reborrow().get(index).set_storage_key(key);
            list.reborrow().get(index).set_holder(*holder);
        }
        message
    }

    #[test]
    fn reads_a_lease_table_and_refuses_one_that_routing_cannot_use() {
        let key = leasehold_keyspace::storage_key(3, b"account-1");
        let home = leasehold_keyspace::home_node(&key, 3);
        let elsewhere = (home + 1) % 3;
        let addresses = [(0, "a:1"), (1, "b:2"), (2, "c:3")];
        let message = lease_table_message(3, &addresses, &[(&key, elsewhere)]);
        let table = read_lease_table(message.get_root_as_reader().expect("root")).expect("lease table");
        assert_eq!((table.node_count, table.digest), (3, 7));
        assert_eq!(table.client_addresses, vec!["a:1", "b:2", "c:3"]);
        assert_eq!(table.holder(&key), elsewhere, "a moved lease overrides the home node");
        let other = leasehold_keyspace::storage_key(3, b"account-2");
        assert_eq!(table.holder(&other), leasehold_keyspace::home_node(&other, 3));

        for (node_count, addresses, moved) in [
            (0u16, &addresses[..0], &[][..]),
            (3, &addresses[..2], &[][..]),
            (3, &[(0, "a:1"), (2, "c:3"), (1, "b:2")][..], &[][..]),
            (3, &addresses[..], &[(&key[..], 3u16)][..]),
        ] {
            let message = lease_table_message(node_count, addresses, moved);
            let read = read_lease_table(message.get_root_as_reader().expect("root"));
            assert!(matches!(read, Err(ClientError::Protocol(_))), "{node_count} {addresses:?} {moved:?}: {read:?}");
        }
    }
}
