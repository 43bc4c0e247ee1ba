//! A hostile plugin whose function never returns (`plugins/endless`), against a real
//! engine: native code cannot be stopped, so the node must at least stay up and say what
//! is wrong. The call shows in `status` (naming the plugin and the function) and in an
//! error line of the log once it has run longer than `--plugin-call-warn-ms`, and the
//! node keeps answering status and plugin listings while the call spins.

use leasehold_client::{BlockingClient, Invocation};
use leasehold_integration::{plugin_bytes, EngineProcess, Launch};
use std::time::{Duration, Instant};

#[test]
fn an_endless_plugin_call_is_reported_and_the_node_keeps_answering() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut launch = Launch::default();
    launch.log_label = Some("endless".into());
    let engine =
        EngineProcess::start_with(&directory.path().join("node"), launch, &["--plugin-call-warn-ms", "300"]);
    let address = engine.address;
    let client = BlockingClient::connect(address).expect("connect");
    let info = client.deploy_plugin(&plugin_bytes("endless")).expect("deploy the endless plugin");
    assert_eq!(info.name, "endless");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking too");
    assert!(client.status().expect("status").overdue_plugin_calls.is_empty(), "nothing runs yet");

    // The call never returns, so its client waits on a thread of its own; killing the
    // engine at the end of the test ends that wait.
    std::thread::spawn(move || {
        let spinner = BlockingClient::connect(address).expect("connect");
        let _ = spinner.invoke(Invocation::json("endless", "spin", "{}"));
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    let overdue = loop {
        let status = client.status().expect("the node answers status while the plugin spins");
        if !status.overdue_plugin_calls.is_empty() {
            break status.overdue_plugin_calls;
        }
        assert!(Instant::now() < deadline, "the endless call was never reported");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert!(overdue[0].starts_with("endless ") && overdue[0].contains(": spin running for"), "{overdue:?}");
    let plugins = client.list_plugins().expect("the node lists plugins while the plugin spins");
    assert!(plugins.iter().any(|plugin| plugin.name == "banking"), "{plugins:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !engine.log_lines().iter().any(|line| line.contains("a plugin call has not returned") && line.contains("spin")) {
        assert!(Instant::now() < deadline, "no error line names the call: {:?}", engine.log_lines());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still spinning: the report stays until the call returns.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(client.status().expect("status").overdue_plugin_calls.len(), 1);
}
