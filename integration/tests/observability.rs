//! The Prometheus endpoint of a real engine process reports what the node did.

use leasehold_client::{BlockingClient, Invocation};
use leasehold_integration::{plugin_bytes, EngineProcess};
use leasehold_plugin_api::banking::{Open, Transfer};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

fn scrape(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

fn counter(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_metrics_endpoint_counts_commits_aborts_and_rejections() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let engine = EngineProcess::start(directory.path(), &["--metrics-address", &metrics_address]);
    let client = BlockingClient::connect(engine.address).expect("connect");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy");
    let open = leasehold_sdk::encode(&Open { first: 0, count: 10, balance: 100 }).expect("encode");
    assert!(client.invoke(Invocation::encoded("banking", "open", open)).expect("open").is_committed());
    for amount in [10, 20, 1000] {
        let transfer = leasehold_sdk::encode(&Transfer { from: 1, to: 2, amount }).expect("encode");
        client.invoke(Invocation::encoded("banking", "transfer", transfer)).expect("transfer");
    }
    client.invoke(Invocation::json("banking", "no-such-workflow", "{}")).expect("rejected, not failed");

    // The exporter publishes asynchronously; poll briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = scrape(&metrics_address);
        let committed = counter(&page, "leasehold_transactions_committed_total");
        let aborted = counter(&page, "leasehold_transactions_aborted_total");
        let rejected = counter(&page, "leasehold_requests_rejected_total");
        if committed == Some(3.0) && aborted == Some(1.0) && rejected == Some(1.0) {
            assert!(page.contains("leasehold_epoch_latency_seconds"), "epoch latency histogram is published");
            break;
        }
        assert!(Instant::now() < deadline, "metrics never showed 3 commits, 1 abort, 1 rejection:\n{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
