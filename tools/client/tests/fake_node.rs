//! End-to-end tests of the client against a fake node: a small in-process implementation
//! of the `Gate` and `Leasehold` interfaces served over TCP on the loopback, so that the
//! whole path (authentication, encoding, RPC, decoding) runs without an engine. The real
//! engine is tested from `integration/`.

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use leasehold_client::{
    AbortKind, BlockingClient, Client, ClientError, Invocation, InvokeResult, RejectionKind, TableInfo, Timestamp,
};
use leasehold_schema::leasehold_capnp::{
    gate, invocation, leasehold, result, AbortKind as WireAbortKind, RejectionKind as WireRejectionKind,
};
use std::net::SocketAddr;
use std::rc::Rc;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// The most invocations the fake node accepts in one `invokeMany`.
const FAKE_INVOCATIONS_MAX: u32 = 3;

/// The one token the fake gate refuses; it accepts every other, like a node without a
/// configured token, so that the tests below need none.
const REFUSED_TOKEN: &[u8] = b"wrong";

/// The fake node's bootstrap: hands out the fake node unless the token is [`REFUSED_TOKEN`].
struct FakeGate {
    node: leasehold::Client,
}

impl gate::Server for FakeGate {
    async fn authenticate(
        self: Rc<Self>,
        params: gate::AuthenticateParams,
        mut results: gate::AuthenticateResults,
    ) -> Result<(), capnp::Error> {
        if params.get()?.get_token()? == REFUSED_TOKEN {
            // The exception a real node raises for a refused token.
            return Err(capnp::Error::failed("authentication failed".into()));
        }
        results.get().set_leasehold(self.node.clone());
        Ok(())
    }
}

/// Answers like a node with one plugin, "echo": workflow "run" commits with the arguments
/// as output, workflow "refuse" aborts, anything else is rejected.
struct FakeNode;

fn answer(request: invocation::Reader<'_>, result: result::Builder<'_>) -> capnp::Result<()> {
    let plugin = request.get_plugin()?.to_str()?;
    let workflow = request.get_workflow()?.to_str()?;
    if plugin != "echo" {
        let mut rejection = result.init_rejected();
        rejection.set_kind(WireRejectionKind::UnknownPlugin);
        rejection.set_message(format!("unknown plugin {plugin:?}"));
        return Ok(());
    }
    let sequence = request.get_request_id()?.len() as u32;
    if workflow == "refuse" {
        let mut aborted = result.init_aborted();
        aborted.reborrow().init_timestamp().set_sequence(sequence);
        aborted.set_kind(WireAbortKind::Logic);
        aborted.set_message("refused");
        return Ok(());
    }
    let mut committed = result.init_committed();
    let mut timestamp = committed.reborrow().init_timestamp();
    timestamp.set_epoch(5);
    timestamp.set_node(1);
    timestamp.set_sequence(sequence);
    match request.get_arguments().which()? {
        invocation::arguments::Encoded(bytes) => committed.set_output(bytes?),
        invocation::arguments::Json(text) => {
            let text = text?.to_str()?;
            committed.set_output(text.as_bytes());
            committed.set_output_json(text);
        }
    }
    Ok(())
}

impl leasehold::Server for FakeNode {
    async fn deploy_plugin(
        self: Rc<Self>,
        params: leasehold::DeployPluginParams,
        mut results: leasehold::DeployPluginResults,
    ) -> Result<(), capnp::Error> {
        let library = params.get()?.get_library()?;
        let mut result = results.get().init_result();
        if library == b"a plugin" {
            let mut info = result.init_info();
            info.set_name("echo");
            info.set_version("1.2.3");
            info.set_digest("00ff");
            let mut table = info.reborrow().init_tables(1).get(0);
            table.set_name("values");
            table.set_value_bytes_max(16);
            info.init_workflows(1).set(0, "run");
        } else {
            result.set_error("not a shared library");
        }
        Ok(())
    }

    async fn list_plugins(
        self: Rc<Self>,
        _params: leasehold::ListPluginsParams,
        mut results: leasehold::ListPluginsResults,
    ) -> Result<(), capnp::Error> {
        results.get().init_plugins(1).get(0).set_name("echo");
        Ok(())
    }

    async fn invoke(
        self: Rc<Self>,
        params: leasehold::InvokeParams,
        mut results: leasehold::InvokeResults,
    ) -> Result<(), capnp::Error> {
        answer(params.get()?.get_request()?, results.get().init_result())
    }

    async fn invoke_many(
        self: Rc<Self>,
        params: leasehold::InvokeManyParams,
        mut results: leasehold::InvokeManyResults,
    ) -> Result<(), capnp::Error> {
        let requests = params.get()?.get_requests()?;
        let result = results.get().init_result();
        if requests.len() > FAKE_INVOCATIONS_MAX {
            let mut rejection = result.init_rejected();
            rejection.set_kind(WireRejectionKind::TooManyInvocations);
            rejection.set_message("too many invocations");
            return Ok(());
        }
        let mut list = result.init_results(requests.len());
        for (index, request) in (0..).zip(requests.iter()) {
            answer(request, list.reborrow().get(index))?;
        }
        Ok(())
    }

    async fn read_key(
        self: Rc<Self>,
        params: leasehold::ReadKeyParams,
        mut results: leasehold::ReadKeyResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let mut result = results.get().init_result();
        if params.get_table()?.to_str()? != "values" {
            let mut rejection = result.init_rejected();
            rejection.set_kind(WireRejectionKind::UnknownTable);
            rejection.set_message("no such table");
        } else if params.get_key()? == b"present" {
            result.init_found().set_value(b"value");
        } else {
            result.set_absent(());
        }
        Ok(())
    }

    async fn status(
        self: Rc<Self>,
        _params: leasehold::StatusParams,
        mut results: leasehold::StatusResults,
    ) -> Result<(), capnp::Error> {
        let mut status = results.get().init_status();
        status.set_node(1);
        status.set_durable_epoch(5);
        status.set_cc("lease");
        status.init_plugins(1).set(0, "echo");
        Ok(())
    }
}

/// Starts serving the fake node on the current `LocalSet`; returns its address.
async fn serve_fake_node() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the loopback");
    let address = listener.local_addr().expect("local address");
    let node: gate::Client = capnp_rpc::new_client(FakeGate { node: capnp_rpc::new_client(FakeNode) });
    tokio::task::spawn_local(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (reader, writer) = stream.into_split();
            let network = twoparty::VatNetwork::new(
                futures::io::BufReader::new(reader.compat()),
                futures::io::BufWriter::new(writer.compat_write()),
                Side::Server,
                Default::default(),
            );
            tokio::task::spawn_local(RpcSystem::new(Box::new(network), Some(node.clone().client)));
        }
    });
    address
}

/// Runs `test` inside a `LocalSet`, as the client requires.
fn in_local_set<F: std::future::Future<Output = ()>>(test: F) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&runtime, test);
}

#[test]
fn every_call_round_trips() {
    in_local_set(async {
        let client = Client::connect(serve_fake_node().await).await.expect("connect");

        let info = client.deploy_plugin(b"a plugin").await.expect("deploy");
        assert_eq!(info.name, "echo");
        assert_eq!(info.tables, vec![TableInfo { name: "values".into(), value_bytes_max: 16, table_id: 0 }]);
        assert_eq!(info.workflows, vec!["run".to_string()]);
        match client.deploy_plugin(b"garbage").await {
            Err(ClientError::DeployRefused { message }) => assert_eq!(message, "not a shared library"),
            other => panic!("expected a refused deploy, got {other:?}"),
        }

        let plugins = client.list_plugins().await.expect("list plugins");
        assert_eq!(plugins.len(), 1);
        assert_eq!(plugins[0].name, "echo");

        let committed = client.invoke(Invocation::json("echo", "run", "{\"n\":1}").with_request_id(*b"abc")).await;
        assert_eq!(
            committed.expect("invoke"),
            InvokeResult::Committed {
                timestamp: Timestamp { epoch: 5, node: 1, sequence: 3 },
                output: b"{\"n\":1}".to_vec(),
                output_json: Some("{\"n\":1}".into()),
            }
        );
        let aborted = client.invoke(Invocation::encoded("echo", "refuse", vec![1])).await.expect("invoke");
        assert!(matches!(aborted, InvokeResult::Aborted { kind: AbortKind::Logic, .. }));
        let rejected = client.invoke(Invocation::encoded("nope", "run", vec![])).await.expect("invoke");
        assert_eq!(
            rejected,
            InvokeResult::Rejected { kind: RejectionKind::UnknownPlugin, message: "unknown plugin \"nope\"".into() }
        );

        let results = client
            .invoke_many(vec![
                Invocation::encoded("echo", "run", vec![7]),
                Invocation::encoded("nope", "run", vec![]),
                Invocation::encoded("echo", "refuse", vec![]),
            ])
            .await
            .expect("invoke many");
        assert_eq!(results.len(), 3);
        assert!(matches!(&results[0], InvokeResult::Committed { output, output_json: None, .. } if output == &[7]));
        assert!(matches!(results[1], InvokeResult::Rejected { kind: RejectionKind::UnknownPlugin, .. }));
        assert!(matches!(results[2], InvokeResult::Aborted { .. }));
        let too_many = vec![Invocation::encoded("echo", "run", vec![]); FAKE_INVOCATIONS_MAX as usize + 1];
        match client.invoke_many(too_many).await {
            Err(ClientError::Rejected { kind: RejectionKind::TooManyInvocations, .. }) => {}
            other => panic!("expected the whole call to be rejected, got {other:?}"),
        }

        assert_eq!(client.read_key("echo", "values", b"present").await.expect("read"), Some(b"value".to_vec()));
        assert_eq!(client.read_key("echo", "values", b"missing").await.expect("read"), None);
        match client.read_key("echo", "other", b"present").await {
            Err(ClientError::Rejected { kind: RejectionKind::UnknownTable, message }) => {
                assert_eq!(message, "no such table")
            }
            other => panic!("expected a rejected read, got {other:?}"),
        }

        let status = client.status().await.expect("status");
        assert_eq!((status.node, status.durable_epoch, status.cc.as_str()), (1, 5, "lease"));
        assert_eq!(status.plugins, vec!["echo".to_string()]);

        client.disconnect().await.expect("disconnect");
    });
}

#[test]
fn a_refused_token_is_an_authentication_failure() {
    in_local_set(async {
        let address = serve_fake_node().await;
        match Client::connect_with_token(address, REFUSED_TOKEN).await {
            Err(ClientError::AuthenticationFailed) => {}
            Err(other) => panic!("expected an authentication failure, got {other:?}"),
            Ok(_) => panic!("the refused token was accepted"),
        }
        let client = Client::connect_with_token(address, b"right").await.expect("an accepted token");
        assert_eq!(client.status().await.expect("status").node, 1);
    });
}

#[test]
fn calls_on_one_connection_run_concurrently() {
    in_local_set(async {
        let client = Client::connect(serve_fake_node().await).await.expect("connect");
        let calls = (0..50u8).map(|n| client.invoke(Invocation::encoded("echo", "run", vec![n])));
        let results = futures::future::join_all(calls).await;
        for (n, result) in (0..50u8).zip(results) {
            assert!(matches!(result.expect("invoke"), InvokeResult::Committed { output, .. } if output == [n]));
        }
    });
}

#[test]
fn the_blocking_client_works_from_a_plain_thread() {
    let (address_sender, address) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        in_local_set(async move {
            address_sender.send(serve_fake_node().await).expect("hand over the address");
            let _ = stopped.await;
        })
    });
    let address = address.recv().expect("fake node address");

    let client = BlockingClient::connect(address).expect("connect");
    assert!(client.invoke(Invocation::json("echo", "run", "[]")).expect("invoke").is_committed());
    assert_eq!(client.status().expect("status").node, 1);

    // Once the node is gone, calls fail as disconnected rather than hanging.
    stop.send(()).expect("stop the fake node");
    server.join().expect("fake node thread");
    let error = client.status().expect_err("the node is gone");
    assert!(error.is_disconnected(), "expected a disconnect, got {error:?}");
}

#[test]
fn connecting_to_a_closed_port_fails_clearly() {
    let address =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port");
    match BlockingClient::connect(address) {
        Err(ClientError::Connect { address: described, .. }) => assert_eq!(described, address.to_string()),
        Err(other) => panic!("expected a connect error, got {other:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}
