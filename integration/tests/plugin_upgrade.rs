//! Deploying a new version of a plugin while requests are in flight: no restart, the
//! planned requests finish, new requests run on the new version, and the upgrade
//! survives a restart.
//!
//! The "new version" is the same library with bytes appended (ELF loaders ignore
//! trailing data), which gives it a new digest and therefore its own file and mapping.

use leasehold_engine::config::Config;
use leasehold_engine::model::{Arguments, Invocation, RequestId};
use leasehold_engine::node::Node;
use leasehold_integration::plugin_bytes;
use leasehold_plugin_api::testkit::{Op, Program};

fn add_one(request: u32) -> Invocation {
    let program = Program { steps: [vec![Op::Add(0, 1)], vec![], vec![Op::Read(0)]] };
    Invocation {
        plugin: "testkit".into(),
        workflow: "program".into(),
        arguments: Arguments::Encoded(leasehold_sdk::encode(&program).expect("encode")),
        request_id: RequestId::Id(request.to_be_bytes().to_vec().into()),
    }
}

#[test]
fn a_new_version_deploys_without_restart_while_planned_requests_finish() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let config = Config { data_dir: directory.path().to_path_buf(), ..Config::default() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let original = plugin_bytes("testkit");
    let mut upgraded = original.clone();
    upgraded.extend_from_slice(b"leasehold upgrade marker");

    let node = Node::start(config.clone()).expect("start");
    let handle = node.handle();
    let first = handle.deploy_plugin(&original).expect("deploy v1");
    let in_flight: Vec<_> = (0..500).map(|r| handle.submit(add_one(r)).expect("planned on v1")).collect();
    let second = handle.deploy_plugin(&upgraded).expect("deploy v2 while requests are in flight");
    assert_ne!(first.digest, second.digest);
    let listed = handle.plugins();
    assert_eq!(listed.len(), 1, "one plugin, now at the new version");
    assert_eq!(listed[0].digest, second.digest);
    for pending in in_flight {
        let completed = runtime.block_on(pending.wait()).expect("planned request completes");
        assert!(completed.outcome.is_committed(), "{:?}", completed.outcome);
    }
    let after = runtime.block_on(handle.submit(add_one(1000)).expect("planned on v2").wait()).expect("completes");
    let output = match after.outcome {
        leasehold_engine::model::Outcome::Committed { output, .. } => output,
        other => panic!("expected a commit, got {other:?}"),
    };
    assert_eq!(leasehold_sdk::decode::<Vec<i64>>(&output).expect("decode"), vec![501]);
    // RocksDB closes once the node has stopped and its last handle is gone.
    drop(handle);
    node.shutdown().expect("shutdown");

    let node = Node::start(config).expect("restart");
    let listed = node.handle().plugins();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, second.digest, "the upgraded version is the one reloaded after a restart");
    node.shutdown().expect("shutdown");
}
