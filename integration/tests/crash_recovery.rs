//! Crash recovery of a single node: SIGKILL in the middle of a banking load.
//!
//! Several clients send transfers to a real `leasehold-engine` process, each tracked for
//! exactly-once retries by a unique request id, or by its place in a client session. The
//! engine is SIGKILLed while requests are in flight, restarted on the same data
//! directory, and every request that was not acknowledged is sent again, unchanged. Then
//! every account's balance must equal its initial balance plus the effect of every
//! transfer exactly once: nothing acknowledged was lost, nothing was applied twice.
//! Acknowledged requests retried after the restart must return their original outcome.

use leasehold_client::{BlockingClient, ClientError, Invocation, InvokeResult, RejectionKind, SessionNumbers};
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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tracking {
    RequestIds,
    Sessions,
}

#[derive(Clone, Debug)]
struct Sent {
    transfer: Transfer,
    /// As sent: a retry sends it again unchanged.
    invocation: Invocation,
    acknowledged: Option<InvokeResult>,
}

fn transfer_invocation(transfer: &Transfer) -> Invocation {
    Invocation::encoded("banking", "transfer", leasehold_sdk::encode(transfer).expect("encode transfer"))
}

/// What tells a request apart in the test's books: its id, or its session and number.
fn request_key(invocation: &Invocation) -> Vec<u8> {
    match &invocation.session {
        Some(position) => format!("s{}-{}", position.session, position.sequence).into_bytes(),
        None => invocation.request_id.clone(),
    }
}

/// One client: sends batches until the engine goes away or `stop` is set; returns every
/// request it sent, with the reply if one came.
fn run_client(
    address: std::net::SocketAddr,
    client: u64,
    tracking: Tracking,
    stop: Arc<AtomicBool>,
) -> Vec<(Vec<u8>, Sent)> {
    let connection = BlockingClient::connect(address).expect("connect before the crash");
    let mut session = (tracking == Tracking::Sessions)
        .then(|| SessionNumbers::new(connection.open_session().expect("open a session")));
    let mut sent = Vec::new();
    let mut next = leasehold_integration::seeded_numbers(client * 7919 + 1);
    for batch in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let requests: Vec<Sent> = (0..BATCH)
            .map(|i| {
                let from = next(ACCOUNTS);
                let to = (from + 1 + next(ACCOUNTS - 1)) % ACCOUNTS;
                let transfer = Transfer { from, to, amount: 1 + next(100) as i64 };
                let invocation = match &mut session {
                    Some(numbers) => numbers.place(transfer_invocation(&transfer)),
                    None => transfer_invocation(&transfer).with_request_id(format!("c{client}-b{batch}-r{i}")),
                };
                Sent { transfer, invocation, acknowledged: None }
            })
            .collect();
        let invocations = requests.iter().map(|request| request.invocation.clone()).collect();
        match connection.invoke_many(invocations) {
            Ok(results) => {
                assert_eq!(results.len(), requests.len());
                for (mut request, result) in requests.into_iter().zip(results) {
                    if let (Some(numbers), Some(position)) = (&mut session, &request.invocation.session) {
                        numbers.answered(position);
                    }
                    request.acknowledged = Some(result);
                    sent.push((request_key(&request.invocation), request));
                }
            }
            Err(_) => {
                // The engine died with these in flight: not acknowledged.
                sent.extend(requests.into_iter().map(|request| (request_key(&request.invocation), request)));
                break;
            }
        }
    }
    sent
}

fn sigkill_mid_load(tracking: Tracking) {
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
                std::thread::spawn(move || run_client(address, c + 10 * round, tracking, stop))
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
    // Retry every unacknowledged request, and (with ids: a session forgets what its client
    // acknowledged) a sample of acknowledged ones.
    let mut retried = 0;
    for (key, sent) in all.iter_mut() {
        let retry_acknowledged =
            tracking == Tracking::RequestIds && sent.acknowledged.is_some() && key.ends_with(b"-r0");
        if sent.acknowledged.is_some() && !retry_acknowledged {
            continue;
        }
        let result = client.invoke(sent.invocation.clone()).expect("retry after restart");
        match &sent.acknowledged {
            Some(first) => assert_eq!(&result, first, "a retried id returns its first outcome"),
            None => sent.acknowledged = Some(result),
        }
        retried += 1;
    }
    assert!(retried >= unacknowledged);
    if tracking == Tracking::Sessions {
        // Retrying again returns the outcomes the first retries got: they ran once.
        for sent in all.values().filter(|sent| sent.invocation.session.is_some()).take(50) {
            let result = client.invoke(sent.invocation.clone()).expect("second retry");
            match &result {
                InvokeResult::Rejected { kind: RejectionKind::SequenceAcknowledged, .. } => {}
                result => assert_eq!(Some(result), sent.acknowledged.as_ref(), "a retry returns the first outcome"),
            }
        }
    }

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
    println!(
        "{tracking:?}: {} transfers, {acknowledged} acknowledged before the crashes, {unacknowledged} retried",
        all.len()
    );
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_transfer_and_applies_none_twice() {
    sigkill_mid_load(Tracking::RequestIds);
}

#[test]
fn sigkill_mid_load_with_client_sessions_loses_nothing_and_applies_nothing_twice() {
    sigkill_mid_load(Tracking::Sessions);
}

/// What a session refuses, and that a session and its acknowledgements survive a
/// restart.
#[test]
fn sessions_refuse_unknown_numbers_and_forget_what_the_client_acknowledged() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut engine = EngineProcess::start(directory.path(), &[]);
    let client = BlockingClient::connect(engine.address).expect("connect");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking");
    let open = Open { first: 0, count: 10, balance: 100 };
    let opened = client.invoke(Invocation::encoded("banking", "open", leasehold_sdk::encode(&open).expect("encode")));
    assert!(opened.expect("open accounts").is_committed());
    let transfer = Transfer { from: 1, to: 2, amount: 7 };

    let mut numbers = SessionNumbers::new(client.open_session().expect("open a session"));
    let first = numbers.place(transfer_invocation(&transfer));
    let second = numbers.place(transfer_invocation(&transfer));
    let first_result = client.invoke(first.clone()).expect("first");
    assert!(first_result.is_committed(), "{first_result:?}");
    numbers.answered(first.session.as_ref().expect("placed"));
    // Not acknowledged yet (the client sent nothing after it): a retry gets the outcome.
    assert_eq!(client.invoke(first.clone()).expect("retry"), first_result);
    let second_result = client.invoke(second.clone()).expect("second");
    assert!(second_result.is_committed(), "{second_result:?}");
    numbers.answered(second.session.as_ref().expect("placed"));
    // The third request tells the node that the client has 1 and 2.
    let third = numbers.place(transfer_invocation(&transfer));
    assert!(client.invoke(third.clone()).expect("third").is_committed());

    engine.kill();
    engine.restart();
    let client = BlockingClient::connect(engine.address).expect("connect after restart");
    match client.invoke(first.clone()).expect("an acknowledged request") {
        InvokeResult::Rejected { kind: RejectionKind::SequenceAcknowledged, message } => {
            assert!(message.contains("acknowledged"), "{message}")
        }
        other => panic!("an acknowledged request must be refused, not {other:?}"),
    }
    let mut stranger = third.clone();
    stranger.session.as_mut().expect("placed").session = 0xdead_beef;
    match client.invoke(stranger).expect("an unknown session") {
        InvokeResult::Rejected { kind: RejectionKind::UnknownSession, .. } => {}
        other => panic!("an unknown session must be refused, not {other:?}"),
    }
    // The transfers ran exactly once each: three of them.
    let balances = banking_balances(&client, 10);
    assert_eq!((balances[1], balances[2]), (100 - 3 * 7, 100 + 3 * 7));
    // A request with both an id and a session is malformed.
    let mut both = numbers.place(transfer_invocation(&transfer));
    both.request_id = b"also-an-id".to_vec();
    match client.invoke(both) {
        Ok(InvokeResult::Rejected { kind: RejectionKind::MalformedRequest, .. }) => {}
        Err(ClientError::Rejected { kind: RejectionKind::MalformedRequest, .. }) => {}
        other => panic!("a request with an id and a session is malformed, not {other:?}"),
    }
}
