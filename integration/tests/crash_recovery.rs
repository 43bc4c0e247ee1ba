//! Crash recovery of a single node: SIGKILL in the middle of a banking load.
//!
//! Several clients send transfers under unique request ids to a real `leasehold-engine`
//! process. The engine is SIGKILLed while requests are in flight, restarted on the same
//! data directory, and every request that was not acknowledged is sent again under its
//! id. Then every account's balance must equal its initial balance plus the effect of
//! every transfer exactly once: nothing acknowledged was lost, nothing was applied twice.
//! Acknowledged requests retried after the restart must return their original outcome.

use leasehold_client::{BlockingClient, Invocation, InvokeResult};
use leasehold_integration::{banking_balances, plugin_bytes, EngineProcess};
use leasehold_plugin_api::banking::{Open, Transfer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ACCOUNTS: u64 = 500;
const INITIAL: i64 = 1_000_000;
const CLIENTS: u64 = 4;
const BATCH: u64 = 25;

#[derive(Clone, Debug)]
struct Sent {
    transfer: Transfer,
    acknowledged: Option<InvokeResult>,
}

fn transfer_invocation(id: &[u8], transfer: &Transfer) -> Invocation {
    Invocation::encoded("banking", "transfer", leasehold_sdk::encode(transfer).expect("encode transfer"))
        .with_request_id(id.to_vec())
}

/// One client: sends batches until the engine goes away or `stop` is set; returns every
/// request it sent, with the reply if one came.
fn run_client(address: std::net::SocketAddr, client: u64, stop: Arc<AtomicBool>) -> Vec<(Vec<u8>, Sent)> {
    let connection = BlockingClient::connect(address).expect("connect before the crash");
    let mut sent = Vec::new();
    let mut next = leasehold_integration::seeded_numbers(client * 7919 + 1);
    for batch in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let requests: Vec<(Vec<u8>, Transfer)> = (0..BATCH)
            .map(|i| {
                let from = next(ACCOUNTS);
                let to = (from + 1 + next(ACCOUNTS - 1)) % ACCOUNTS;
                let id = format!("c{client}-b{batch}-r{i}").into_bytes();
                (id, Transfer { from, to, amount: 1 + next(100) as i64 })
            })
            .collect();
        let invocations = requests.iter().map(|(id, t)| transfer_invocation(id, t)).collect();
        match connection.invoke_many(invocations) {
            Ok(results) => {
                assert_eq!(results.len(), requests.len());
                for ((id, transfer), result) in requests.into_iter().zip(results) {
                    sent.push((id, Sent { transfer, acknowledged: Some(result) }));
                }
            }
            Err(_) => {
                // The engine died with these in flight: not acknowledged.
                for (id, transfer) in requests {
                    sent.push((id, Sent { transfer, acknowledged: None }));
                }
                break;
            }
        }
    }
    sent
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_transfer_and_applies_none_twice() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut engine = EngineProcess::start(directory.path(), &[]);
    let setup = BlockingClient::connect(engine.address).expect("connect");
    setup.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking");
    let open = Open { first: 0, count: ACCOUNTS, balance: INITIAL };
    let opened = setup
        .invoke(Invocation::encoded("banking", "open", leasehold_sdk::encode(&open).expect("encode")))
        .expect("open accounts");
    assert!(opened.is_committed(), "{opened:?}");
    drop(setup);

    let mut all: HashMap<Vec<u8>, Sent> = HashMap::new();
    for round in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (address, stop) = (engine.address, stop.clone());
                std::thread::spawn(move || run_client(address, c + 10 * round, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        engine.kill();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            all.extend(client.join().expect("client thread"));
        }
        engine.restart();
    }

    let acknowledged = all.values().filter(|s| s.acknowledged.is_some()).count();
    let unacknowledged = all.len() - acknowledged;
    assert!(acknowledged > 100, "the load ran before the crash ({acknowledged} acknowledged)");
    assert!(unacknowledged > 0, "the crash hit requests in flight");

    let client = BlockingClient::connect(engine.address).expect("connect after restart");
    // Retry every unacknowledged request, and a sample of acknowledged ones.
    let mut retried = 0;
    for (id, sent) in all.iter_mut() {
        let retry_acknowledged = sent.acknowledged.is_some() && id.ends_with(b"-r0");
        if sent.acknowledged.is_some() && !retry_acknowledged {
            continue;
        }
        let result = client.invoke(transfer_invocation(id, &sent.transfer)).expect("retry after restart");
        match &sent.acknowledged {
            Some(first) => assert_eq!(&result, first, "a retried id returns its first outcome"),
            None => sent.acknowledged = Some(result),
        }
        retried += 1;
    }
    assert!(retried >= unacknowledged);

    let mut expected = vec![INITIAL; ACCOUNTS as usize];
    for sent in all.values() {
        match sent.acknowledged.as_ref().expect("every request has an outcome now") {
            InvokeResult::Committed { .. } => {
                expected[sent.transfer.from as usize] -= sent.transfer.amount;
                expected[sent.transfer.to as usize] += sent.transfer.amount;
            }
            other => panic!("transfers of small amounts must commit: {other:?}"),
        }
    }
    for (account, balance) in banking_balances(&client, ACCOUNTS).into_iter().enumerate() {
        assert_eq!(balance, expected[account], "balance of account {account}");
    }
    assert_eq!(expected.iter().sum::<i64>(), ACCOUNTS as i64 * INITIAL, "transfers keep the sum");
    println!("{} transfers, {acknowledged} acknowledged before the crashes, {unacknowledged} retried", all.len());
}
