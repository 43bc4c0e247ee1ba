//! The SmallBank, travel, movie and social workloads end to end: the harness
//! (`leasehold-bench`) drives a real in-process node (RocksDB in a temporary directory, the
//! plugin loaded from its built library, Cap'n Proto over loopback) for about two seconds,
//! then checks the workload's invariant. Scripted calls check the transaction semantics the
//! invariants rely on: SmallBank's aborts, overdraft penalty and deltas; movie's and
//! social's aborts leaving no trace, and social notifying only followers.

use leasehold_bench::run::{self, BenchConfig, BenchReport};
use leasehold_bench::workload::WorkloadKind;
use leasehold_client::{BlockingClient, Invocation, InvokeResult};
use leasehold_engine::config::Config;
use leasehold_engine::node::Node;
use leasehold_engine::rpc::RpcServer;
use leasehold_integration::plugin_bytes;
use std::time::{Duration, Instant};

/// A node with `plugin` deployed, serving clients on a free loopback port.
struct TestNode {
    node: Node,
    server: RpcServer,
    _directory: tempfile::TempDir,
}

impl TestNode {
    fn start(plugin: &str) -> TestNode {
        let directory = tempfile::tempdir().expect("temporary directory");
        let config = Config {
            data_dir: directory.path().to_path_buf(),
            client_address: "127.0.0.1:0".parse().expect("literal address"),
            executor_threads: 2,
            ..Config::default()
        };
        let node = Node::start(config.clone()).expect("start node");
        let server = RpcServer::start(&config, node.handle()).expect("start RPC server");
        node.handle().deploy_plugin(&plugin_bytes(plugin)).expect("deploy plugin");
        TestNode { node, server, _directory: directory }
    }

    fn bench(&self, config: &BenchConfig) -> BenchReport {
        run::run(self.server.local_address(), config, |_| {}).expect("benchmark run")
    }

    fn stop(self) {
        self.server.stop();
        self.node.shutdown().expect("clean shutdown");
    }
}

fn config(workload: WorkloadKind, keys: u64, initial_value: i64) -> BenchConfig {
    BenchConfig {
        key_groups: 1,
        route_by_lease_table: false,
        request_ids_at_node: false,
        tracking: leasehold_bench::run::Tracking::Sessions,
        workload,
        keys,
        initial_value,
        theta: 0.0,
        clients: 2,
        batch: 50,
        pipeline: 2,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(2),
        rate: None,
        seed: 7,
        load: true,
    }
}

#[test]
fn smallbank_keeps_the_sum_of_balances_plus_committed_deltas() {
    let node = TestNode::start("smallbank");
    // Small balances, so that TransactSavings and SendPayment on hot customers hit
    // insufficient funds and WriteCheck overdraws: the aborts must not move the sum.
    let report = node.bench(&config(WorkloadKind::Smallbank, 10_000, 300));
    node.stop();
    assert!(report.committed > 100, "too few commits to mean anything: {}", report.summary());
    assert!(report.aborted > 0, "small balances should make some transactions abort: {}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    let (expected, found) = (report.sum_expected.expect("a loaded run checks"), report.sum_found.expect("summed"));
    assert_eq!(expected, found);
    // Deposits and withdrawals really moved money, so the check is not just "unchanged".
    assert_ne!(found, 2 * 10_000 * 300, "the sum should have moved");
}

#[test]
fn travel_never_overbooks_when_hotels_and_flights_sell_out() {
    let node = TestNode::start("travel");
    // Capacity 20 over 10 hotels and 10 flights sells out early in the run, so many
    // reservations find one part full: those must leave the other part untouched.
    let report = node.bench(&config(WorkloadKind::Travel, 10, 20));
    node.stop();
    assert!(report.committed > 100, "{}", report.summary());
    assert!(report.aborted > 0, "sold-out hotels and flights should abort reservations: {}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    let held = report.sum_found.expect("a loaded run audits");
    assert!(held > 0 && held <= 10 * 20, "reservations held: {held}");
}

#[test]
fn travel_reservations_hold_both_parts() {
    let node = TestNode::start("travel");
    // Default shape (100 hotels and flights, room to spare): the counters are uneven, so
    // a reservation recorded with the wrong or a missing part shows as a counter that
    // differs from what users hold (a sold-out run would hide that: all counters equal).
    let (hotels, capacity) = WorkloadKind::Travel.defaults();
    let report = node.bench(&config(WorkloadKind::Travel, hotels, capacity));
    node.stop();
    assert!(report.committed > 100, "{}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    assert!(report.sum_found > Some(0), "{}", report.summary());
}

fn call(client: &BlockingClient, workflow: &str, arguments: &str) -> Result<serde_json::Value, String> {
    let invocation = Invocation::json("smallbank", workflow, arguments);
    match client.invoke(invocation).expect("invoke") {
        InvokeResult::Committed { output_json, .. } => {
            Ok(serde_json::from_str(&output_json.expect("smallbank outputs convert to JSON")).expect("valid JSON"))
        }
        InvokeResult::Aborted { message, .. } => Err(message),
        InvokeResult::Rejected { message, .. } => panic!("{workflow} rejected: {message}"),
    }
}

#[test]
fn smallbank_transactions_follow_the_specification() {
    let started = Instant::now();
    let node = TestNode::start("smallbank");
    let client = BlockingClient::connect(node.server.local_address()).expect("connect");
    call(&client, "load", r#"{"first":0,"count":3,"balance":100}"#).expect("load");
    let delta = |output: serde_json::Value| output["delta"].as_i64().expect("receipts carry a delta");

    // SendPayment and TransactSavings abort on insufficient funds and change nothing.
    let refused = call(&client, "send_payment", r#"{"from":0,"to":1,"amount":101}"#).expect_err("too much");
    assert!(refused.contains("insufficient funds"), "{refused}");
    assert!(call(&client, "transact_savings", r#"{"customer":0,"amount":101}"#).is_err());
    assert_eq!(delta(call(&client, "send_payment", r#"{"from":0,"to":1,"amount":100}"#).expect("pays")), 0);
    assert_eq!(delta(call(&client, "transact_savings", r#"{"customer":0,"amount":40}"#).expect("withdraws")), -40);
    // Customer 0 now has savings 60, checking 0: a check over 60 costs the penalty of 1.
    let overdraft = call(&client, "write_check", r#"{"customer":0,"amount":70}"#).expect("write check");
    assert_eq!((delta(overdraft.clone()), overdraft["checking"].as_i64()), (-71, Some(-71)));
    assert_eq!(delta(call(&client, "write_check", r#"{"customer":2,"amount":70}"#).expect("covered")), -70);
    assert_eq!(delta(call(&client, "deposit_checking", r#"{"customer":2,"amount":5}"#).expect("deposit")), 5);
    // Amalgamate moves everything of customer 1 (100 + 200) into customer 2's checking.
    let merged = call(&client, "amalgamate", r#"{"from":1,"to":2}"#).expect("amalgamate");
    assert_eq!((delta(merged.clone()), merged["checking"].as_i64()), (0, Some(100 - 70 + 5 + 300)));
    let emptied = call(&client, "balance", r#"{"customer":1}"#).expect("balance");
    assert_eq!((emptied["savings"].as_i64(), emptied["checking"].as_i64()), (Some(0), Some(0)));
    let total = call(&client, "total", r#"{"first":0,"count":3}"#).expect("total");
    assert_eq!(total["sum"].as_i64(), Some(600 - 40 - 71 - 70 + 5));
    drop(client);
    node.stop();
    eprintln!("smallbank semantics checked in {:?}", started.elapsed());
}

/// Outcome of one scripted call with JSON arguments.
#[derive(Debug)]
enum Called {
    Committed(serde_json::Value),
    Aborted(String),
    Rejected(String),
}

impl Called {
    fn committed(self) -> serde_json::Value {
        match self {
            Called::Committed(value) => value,
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    fn aborted(self) -> String {
        match self {
            Called::Aborted(message) => message,
            other => panic!("expected an abort, got {other:?}"),
        }
    }

    fn rejected(self) -> String {
        match self {
            Called::Rejected(message) => message,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}

fn call_json(client: &BlockingClient, plugin: &str, workflow: &str, arguments: serde_json::Value) -> Called {
    let invocation = Invocation::json(plugin, workflow, arguments.to_string());
    match client.invoke(invocation).expect("invoke") {
        InvokeResult::Committed { output_json, .. } => {
            let json = output_json.expect("outputs convert to JSON");
            Called::Committed(serde_json::from_str(&json).expect("valid JSON"))
        }
        InvokeResult::Aborted { message, .. } => Called::Aborted(message),
        InvokeResult::Rejected { message, .. } => Called::Rejected(message),
    }
}

#[test]
fn movie_every_review_is_reachable_from_its_movie_and_its_user() {
    let node = TestNode::start("movie");
    // 20 movies and 20 users: thousands of reviews each, so lists are long, composes on
    // the same movie or user conflict in every epoch, and the audit reads several chunks.
    let report = node.bench(&config(WorkloadKind::Movie, 20, 0));
    node.stop();
    assert!(report.committed > 100, "{}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    let stored = report.sum_found.expect("a loaded run audits");
    assert!(stored >= report.committed as i64, "reviews on lists {stored}: {}", report.summary());
}

#[test]
fn movie_aborted_composes_leave_no_trace() {
    let node = TestNode::start("movie");
    let client = BlockingClient::connect(node.server.local_address()).expect("connect");
    call_json(&client, "movie", "load", serde_json::json!({"first": 0, "count": 3})).committed();
    let compose = |review_id: u64, user: u64, password: &str, title: &str, rating: u8| {
        let arguments = serde_json::json!({
            "review_id": review_id, "username": format!("username_{user}"), "password": password,
            "title": title, "rating": rating, "text": "x".repeat(256),
        });
        call_json(&client, "movie", "compose_review", arguments)
    };
    let composed = compose(7, 1, "password_1", "Movie 2", 9).committed();
    assert_eq!(composed["review_id"], 7);
    assert_eq!((composed["user_id"].as_u64(), composed["movie_id"].as_u64()), (Some(1), Some(2)));
    assert_eq!((composed["movie_reviews"].as_u64(), composed["user_reviews"].as_u64()), (Some(1), Some(1)));
    // Each refusal comes from a different step: login, rate, store_review, the planner.
    assert!(compose(8, 1, "wrong", "Movie 2", 5).aborted().contains("incorrect password"));
    assert!(compose(9, 1, "password_1", "Movie 99", 5).aborted().contains("no movie"));
    assert!(compose(7, 0, "password_0", "Movie 2", 5).aborted().contains("taken"));
    assert!(compose(10, 0, "password_0", "Movie 2", 11).rejected().contains("rating"));

    let lists = call_json(&client, "movie", "audit_lists", serde_json::json!({"first": 0, "count": 3})).committed();
    // Only review 7 rated movie 2 and sits on its lists; user 0's failed compose left nothing.
    assert_eq!(lists["movies"][2]["rating_count"], 1);
    assert_eq!(lists["movies"][2]["rating_sum"], 9);
    assert_eq!(lists["movie_reviews"][2], serde_json::json!({"count": 1, "newest": 7}));
    assert_eq!(lists["user_reviews"][1], serde_json::json!({"count": 1, "newest": 7}));
    assert_eq!(lists["user_reviews"][0], serde_json::json!({"count": 0, "newest": null}));
    let reviews = call_json(&client, "movie", "audit_reviews", serde_json::json!({"ids": [7, 8, 9, 10]})).committed();
    assert_eq!(reviews[0]["rating"], 9);
    assert_eq!(reviews[0]["older_by_movie"], serde_json::Value::Null);
    assert_eq!(reviews.as_array().map(|r| r.iter().filter(|r| r.is_null()).count()), Some(3));

    // A second review of the same movie links to the first.
    compose(11, 0, "password_0", "Movie 2", 4).committed();
    let reviews = call_json(&client, "movie", "audit_reviews", serde_json::json!({"ids": [11]})).committed();
    assert_eq!((reviews[0]["older_by_movie"].as_u64(), reviews[0]["older_by_user"].as_u64()), (Some(7), None));
    drop(client);
    node.stop();
}

#[test]
fn social_followers_get_exactly_the_posts_that_notified_them() {
    let node = TestNode::start("social");
    // 50 users: every timeline (24) and the global one (96) overflow many times, so the
    // check covers cutting to the newest posts as well as every notification.
    let report = node.bench(&config(WorkloadKind::Social, 50, 0));
    node.stop();
    assert!(report.committed > 100, "{}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    let posts = report.sum_found.expect("a loaded run audits");
    assert!(posts > 200, "too few posts to overflow the timelines: {}", report.summary());
}

#[test]
fn social_default_shape_keeps_every_notification() {
    let node = TestNode::start("social");
    // 10,000 users (WORKLOADS.md): timelines rarely fill, so every notification of every
    // committed post must still be there.
    let (users, value) = WorkloadKind::Social.defaults();
    let report = node.bench(&config(WorkloadKind::Social, users, value));
    node.stop();
    assert!(report.committed > 100, "{}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    assert!(report.sum_found > Some(0), "{}", report.summary());
}

#[test]
fn social_posts_notify_only_followers_and_aborts_leave_no_trace() {
    let node = TestNode::start("social");
    let client = BlockingClient::connect(node.server.local_address()).expect("connect");
    // User 0 is followed by 1 and 2; users 1 and 2 are followed by 0 only.
    let users = serde_json::json!({"users": [
        {"user_id": 0, "followers": [1, 2], "followees": [1, 2]},
        {"user_id": 1, "followers": [0], "followees": [0]},
        {"user_id": 2, "followers": [0], "followees": [0]},
    ]});
    call_json(&client, "social", "load", users).committed();
    let post = |post_id: u64, author: u64, notify: &[u64]| {
        let arguments = serde_json::json!({"post_id": post_id, "author": author, "body": "hello", "notify": notify});
        call_json(&client, "social", "post", arguments)
    };
    let posted = post(100, 0, &[2, 1]).committed();
    assert_eq!(posted, serde_json::json!({"post_id": 100, "author": 0, "notified": [2, 1]}));
    // User 2 does not follow user 1: the whole post aborts, the global timeline included.
    assert!(post(101, 1, &[0, 2]).aborted().contains("does not follow"));
    assert!(post(100, 1, &[0]).aborted().contains("taken"));
    assert!(post(102, 0, &[1, 1]).rejected().contains("twice"));
    assert!(post(103, 0, &[0]).rejected().contains("author"));
    post(104, 2, &[0]).committed();

    let list = |user: serde_json::Value| {
        let posts = call_json(&client, "social", "post_list", serde_json::json!({"user_id": user})).committed();
        posts["posts"].as_array().expect("posts").iter().map(|p| p["post_id"].as_u64()).collect::<Vec<_>>()
    };
    assert_eq!(list(serde_json::json!(2)), vec![Some(100)]);
    assert_eq!(list(serde_json::json!(1)), vec![Some(100)]);
    assert_eq!(list(serde_json::json!(0)), vec![Some(104)]);
    // Newest first; the aborted posts are nowhere.
    assert_eq!(list(serde_json::Value::Null), vec![Some(104), Some(100)]);
    let posts = call_json(&client, "social", "audit_posts", serde_json::json!({"ids": [100, 101, 104]})).committed();
    assert_eq!(posts["posts"][1], serde_json::Value::Null);
    assert_eq!(posts["posts"][0]["author_name"], "testuser_0");

    let profile = call_json(&client, "social", "profile", serde_json::json!({"user_id": 0})).committed();
    assert_eq!(profile, serde_json::json!({"username": "testuser_0", "followers": 2, "followees": 2, "posts": 1}));
    let login = |password: &str| {
        call_json(&client, "social", "login", serde_json::json!({"username": "testuser_1", "password": password}))
    };
    assert_eq!(login("password_1").committed()["user_id"], 1);
    assert!(login("password_0").aborted().contains("incorrect password"));
    drop(client);
    node.stop();
}

#[test]
fn social_timelines_keep_the_newest_posts_in_order() {
    let node = TestNode::start("social");
    let client = BlockingClient::connect(node.server.local_address()).expect("connect");
    let users = serde_json::json!({"users": [
        {"user_id": 0, "followers": [1], "followees": []},
        {"user_id": 1, "followers": [], "followees": [0]},
    ]});
    call_json(&client, "social", "load", users).committed();
    for post_id in 0..30u64 {
        let arguments = serde_json::json!({"post_id": post_id, "author": 0, "body": "b", "notify": [1]});
        call_json(&client, "social", "post", arguments).committed();
    }
    let audit = serde_json::json!({"first": 0, "count": 2, "global": true});
    let timelines = call_json(&client, "social", "audit_timelines", audit).committed();
    let ids = |timeline: &serde_json::Value| {
        timeline["posts"].as_array().expect("posts").iter().map(|p| p["post_id"].as_u64()).collect::<Vec<_>>()
    };
    // Boki's limits: a user's timeline keeps the newest 24 posts, oldest first.
    assert_eq!(ids(&timelines["users"][1]), (6..30).map(Some).collect::<Vec<_>>());
    assert_eq!(ids(&timelines["users"][0]), Vec::<Option<u64>>::new());
    assert_eq!(ids(&timelines["global"]), (0..30).map(Some).collect::<Vec<_>>());
    let newest = call_json(&client, "social", "post_list", serde_json::json!({"user_id": 1})).committed();
    assert_eq!(ids(&newest), (22..30).rev().map(Some).collect::<Vec<_>>());
    drop(client);
    node.stop();
}
