//! Seeded, reproducible request generators for the workloads of `shared/WORKLOADS.md`,
//! and what the harness needs to load each workload and check its invariant.
//!
//! A generator produces invocations in the plugin's own argument encoding. Banking and
//! YCSB-T draw keys uniformly (theta 0) or from a Zipfian distribution with the given
//! theta; SmallBank uses FaSST's hot set instead and travel draws ids uniformly (both
//! ignore theta); movie draws the movie of a review and social the user of a request with
//! theta (0, uniform, is what DeathStarBench and Boki ran).
//!
//! The invariant of every workload is checked after the run from what [`audit_invocations`]
//! read, by [`verdict`]: a sum that must equal [`initial_sum`] plus the [`committed_delta`] of
//! every committed request (travel's audit also checks capacity and both-or-neither,
//! [`audit_violation`]). Movie and social check structure (review lists, timelines) against
//! a [`Journal`] of their committed writes; their own modules ([`crate::movie`],
//! [`crate::social`]) hold those checks.

use crate::{movie, social};
use leasehold_client::{Arguments, Invocation, RoutingKey, Timestamp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// RTSFaaS banking: transfer(from, to, amount) as withdraw => deposit.
    Banking,
    /// YCSB-T: transfer(a uniform, b Zipfian).
    YcsbT,
    /// SmallBank (FaSST/DrTM): six transaction types over savings and checking, with a
    /// hot set of customers.
    Smallbank,
    /// Travel (DeathStarBench hotel reservation): 1:1 search and reserve(hotel, flight).
    Travel,
    /// Movie (DeathStarBench compose-review): login => rate => store review.
    Movie,
    /// Social (Retwis as Boki ran it): login, profile, post list, and post notifying
    /// followers.
    Social,
}

impl WorkloadKind {
    pub fn plugin(self) -> &'static str {
        match self {
            WorkloadKind::Banking => "banking",
            WorkloadKind::YcsbT => "ycsb-t",
            WorkloadKind::Smallbank => "smallbank",
            WorkloadKind::Travel => "travel",
            WorkloadKind::Movie => movie::PLUGIN,
            WorkloadKind::Social => social::PLUGIN,
        }
    }

    /// Default key count and initial value (WORKLOADS.md). For SmallBank the keys are
    /// customers and the value each of their two balances; for travel the keys are the
    /// number of hotels (and of flights) and the value the capacity of each; for movie the
    /// keys are the number of movies (and of users), for social the number of users, and
    /// neither uses the value.
    pub fn defaults(self) -> (u64, i64) {
        match self {
            WorkloadKind::Banking => (100_000, 1_000_000),
            WorkloadKind::YcsbT => (10_000, 1_000_000),
            WorkloadKind::Smallbank => (100_000, 1_000_000),
            // Capacity high enough that a 10 s run at ~10^5 requests/s rarely sells out,
            // so reserve measures reservations rather than sold-out aborts.
            WorkloadKind::Travel => (100, TRAVEL_CAPACITY),
            WorkloadKind::Movie => (movie::DEFAULT_KEYS, 0),
            WorkloadKind::Social => (social::DEFAULT_KEYS, 0),
        }
    }

    /// Whether the invariant check needs the outputs of committed `workflow` requests
    /// (movie's composes and social's posts, in a [`Journal`]).
    pub fn journals(self, workflow: &str) -> bool {
        match self {
            WorkloadKind::Movie => workflow == movie::COMPOSE,
            WorkloadKind::Social => workflow == social::POST,
            WorkloadKind::Banking | WorkloadKind::YcsbT | WorkloadKind::Smallbank | WorkloadKind::Travel => false,
        }
    }

    /// Whether the workload is a plain transfer, which the Redis and PostgreSQL peers of
    /// `leasehold compare` implement.
    pub fn is_transfer(self) -> bool {
        matches!(self, WorkloadKind::Banking | WorkloadKind::YcsbT)
    }
}

/// Default seats per flight and rooms per hotel for travel.
pub const TRAVEL_CAPACITY: i64 = 10_000;

/// SmallBank's hot customers (FaSST/DrTM: 4,000 of 100,000 per node).
pub const SMALLBANK_HOT_CUSTOMERS: u64 = 4_000;
/// Share of SmallBank transactions whose customers all come from the hot set.
pub const SMALLBANK_HOT_SHARE: f64 = 0.9;
/// SmallBank's mix in percent, in the order of [`SmallbankTransaction::ALL`].
pub const SMALLBANK_MIX: [u32; 6] = [15, 15, 15, 25, 15, 15];
/// How many hotels and flights one travel search names (DeathStarBench's geo service
/// returns the few nearest hotels).
pub const TRAVEL_SEARCH_WIDTH: u64 = 5;

/// SmallBank's transaction types, named as the plugin's workflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmallbankTransaction {
    Amalgamate,
    Balance,
    DepositChecking,
    SendPayment,
    TransactSavings,
    WriteCheck,
}

impl SmallbankTransaction {
    pub const ALL: [SmallbankTransaction; 6] = [
        SmallbankTransaction::Amalgamate,
        SmallbankTransaction::Balance,
        SmallbankTransaction::DepositChecking,
        SmallbankTransaction::SendPayment,
        SmallbankTransaction::TransactSavings,
        SmallbankTransaction::WriteCheck,
    ];

    pub fn workflow(self) -> &'static str {
        match self {
            SmallbankTransaction::Amalgamate => "amalgamate",
            SmallbankTransaction::Balance => "balance",
            SmallbankTransaction::DepositChecking => "deposit_checking",
            SmallbankTransaction::SendPayment => "send_payment",
            SmallbankTransaction::TransactSavings => "transact_savings",
            SmallbankTransaction::WriteCheck => "write_check",
        }
    }

    /// Draws a type by [`SMALLBANK_MIX`].
    fn draw(rng: &mut SmallRng) -> SmallbankTransaction {
        let mut ticket = rng.random_range(0..SMALLBANK_MIX.iter().sum::<u32>());
        for (transaction, share) in SmallbankTransaction::ALL.into_iter().zip(SMALLBANK_MIX) {
            if ticket < share {
                return transaction;
            }
            ticket -= share;
        }
        unreachable!("the ticket is below the sum of the shares")
    }
}

/// A key sampler: uniform when theta is 0, Zipfian otherwise. Hot keys are spread over
/// the key space by a fixed permutation, so they do not cluster on low numbers.
pub struct KeySampler {
    keys: u64,
    zipf: Option<Zipf<f64>>,
}

impl KeySampler {
    pub fn new(keys: u64, theta: f64) -> KeySampler {
        assert!(keys > 0, "a workload needs at least one key");
        let zipf = (theta > 0.0).then(|| Zipf::new(keys as f64, theta).expect("valid Zipf parameters"));
        KeySampler { keys, zipf }
    }

    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.keys),
            Some(zipf) => {
                let rank = (zipf.sample(rng) as u64).saturating_sub(1).min(self.keys - 1);
                // As YCSB's scrambled Zipfian: hash the rank (FNV-1a) onto the key space.
                // Rare collisions merge two ranks, which barely changes the skew.
                fnv1a(rank) % self.keys
            }
        }
    }
}

fn fnv1a(value: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// An id no other request of the same run gets: what movie's reviews and social's posts
/// are stored under. Two rounds of SplitMix64's finalizer, a bijection, over the run and
/// over (client, sequence): distinct within a run, and spread out across runs against the
/// same node (a collision there aborts one request as "id taken", which breaks nothing).
pub fn unique_id(run: u64, client: u32, sequence: u64) -> u64 {
    fn mix(mut value: u64) -> u64 {
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }
    mix(run ^ mix((u64::from(client) << 40) ^ sequence))
}

/// Generates one client's requests.
pub struct Generator {
    kind: WorkloadKind,
    rng: SmallRng,
    first: KeySampler,
    second: KeySampler,
    keys: u64,
    client: u32,
    sequence: u64,
    run: u64,
    /// Social's follow graph (who a post may notify); empty for the other workloads.
    followers: Vec<Vec<u64>>,
    /// Transfers draw keys from `[group_base, group_base + group_keys)`.
    group_base: u64,
    group_keys: u64,
    /// The node and node count at which request ids are homed, if they are.
    request_id_home: Option<(u16, u16)>,
}

impl Generator {
    /// `run` distinguishes request ids of separate runs against the same node.
    pub fn new(kind: WorkloadKind, keys: u64, theta: f64, seed: u64, client: u32, run: u64) -> Generator {
        let rng = SmallRng::seed_from_u64(seed ^ (u64::from(client) << 32) ^ 0x5EED);
        let (first, second) = match kind {
            // Banking draws both accounts from the same distribution.
            WorkloadKind::Banking => (KeySampler::new(keys, theta), KeySampler::new(keys, theta)),
            // YCSB-T: a uniform, b Zipfian.
            WorkloadKind::YcsbT => (KeySampler::new(keys, 0.0), KeySampler::new(keys, theta)),
            // These draw their own ids (hot set, uniform); the samplers stay unused.
            WorkloadKind::Smallbank | WorkloadKind::Travel => (KeySampler::new(keys, 0.0), KeySampler::new(keys, 0.0)),
            // Movie: the movie by theta (the users stay uniform); social: the user by theta.
            WorkloadKind::Movie | WorkloadKind::Social => (KeySampler::new(keys, theta), KeySampler::new(keys, 0.0)),
        };
        let followers = if kind == WorkloadKind::Social { social::followers(keys) } else { Vec::new() };
        Generator {
            kind,
            rng,
            first,
            second,
            keys,
            client,
            sequence: 0,
            run,
            followers,
            group_base: 0,
            group_keys: keys,
            request_id_home: None,
        }
    }

    /// Homes every request id's exactly-once record at `node` of `node_count` (see
    /// `leasehold_keyspace::home_request_id_at`).
    pub fn request_ids_at(mut self, node: u16, node_count: u16) -> Generator {
        assert!(node < node_count, "node {node} is one of {node_count} nodes");
        self.request_id_home = Some((node, node_count));
        self
    }

    /// The next request (a transfer for banking and YCSB-T), with a unique request id.
    pub fn next_request(&mut self) -> Invocation {
        let (workflow, arguments) = match self.kind {
            WorkloadKind::Banking | WorkloadKind::YcsbT => ("transfer", self.next_transfer()),
            WorkloadKind::Smallbank => self.next_smallbank(),
            WorkloadKind::Travel => self.next_travel(),
            WorkloadKind::Movie => {
                let movie = self.first.sample(&mut self.rng);
                let id = unique_id(self.run, self.client, self.sequence);
                let compose = movie::compose(&mut self.rng, self.keys, movie, id);
                (movie::COMPOSE, leasehold_sdk::encode(&compose).expect("compose arguments encode"))
            }
            WorkloadKind::Social => {
                let id = unique_id(self.run, self.client, self.sequence);
                let first = &self.first;
                social::next(&mut self.rng, &self.followers, |rng| first.sample(rng), id)
            }
        };
        self.sequence += 1;
        let mut request_id = Vec::with_capacity(20);
        request_id.extend_from_slice(&self.run.to_be_bytes());
        request_id.extend_from_slice(&self.client.to_be_bytes());
        request_id.extend_from_slice(&self.sequence.to_be_bytes());
        if let Some((node, node_count)) = self.request_id_home {
            leasehold_keyspace::home_request_id_at(&mut request_id, node, node_count);
        }
        Invocation {
            plugin: self.kind.plugin().to_string(),
            workflow: workflow.to_string(),
            arguments: Arguments::Encoded(arguments),
            request_id,
            session: None,
        }
    }

    /// Restricts transfers (banking, YCSB-T) to key group `group` of `groups` contiguous
    /// groups; the last group takes the remainder.
    pub fn in_group(mut self, group: u64, groups: u64, theta: f64) -> Generator {
        assert!(group < groups && groups <= self.keys, "a key group exists and holds keys");
        let span = self.keys / groups;
        self.group_base = group * span;
        self.group_keys = if group == groups - 1 { self.keys - self.group_base } else { span };
        self.first = KeySampler::new(self.group_keys, theta);
        self.second = KeySampler::new(self.group_keys, if self.kind == WorkloadKind::YcsbT { 0.0 } else { theta });
        if self.kind == WorkloadKind::YcsbT {
            std::mem::swap(&mut self.first, &mut self.second);
        }
        self
    }

    fn next_transfer(&mut self) -> Vec<u8> {
        let from = self.group_base + self.first.sample(&mut self.rng);
        let mut to = self.group_base + self.second.sample(&mut self.rng);
        if to == from {
            to = self.group_base + (to - self.group_base + 1) % self.group_keys;
        }
        let amount = self.rng.random_range(1..=10);
        match self.kind {
            WorkloadKind::Banking => {
                leasehold_sdk::encode(&leasehold_plugin_api::banking::Transfer { from, to, amount })
            }
            WorkloadKind::YcsbT => {
                leasehold_sdk::encode(&leasehold_plugin_api::ycsb_t::Transfer { a: from, b: to, amount })
            }
            WorkloadKind::Smallbank | WorkloadKind::Travel | WorkloadKind::Movie | WorkloadKind::Social => {
                unreachable!("only banking and YCSB-T transfer")
            }
        }
        .expect("transfer arguments encode")
    }

    /// FaSST's SmallBank: the type by the mix; with probability 0.9 every customer of the
    /// transaction is hot (the first 4,000 ids), otherwise drawn from all customers.
    fn next_smallbank(&mut self) -> (&'static str, Vec<u8>) {
        use leasehold_plugin_api::smallbank;
        let transaction = SmallbankTransaction::draw(&mut self.rng);
        let pool =
            if self.rng.random_bool(SMALLBANK_HOT_SHARE) { SMALLBANK_HOT_CUSTOMERS.min(self.keys) } else { self.keys };
        let customer = self.rng.random_range(0..pool);
        // A second, different customer (when there is one) from the same pool.
        let mut other = self.rng.random_range(0..pool);
        if other == customer {
            other = (other + 1) % pool;
        }
        let amount = self.rng.random_range(1..=100);
        let arguments = match transaction {
            SmallbankTransaction::Amalgamate => {
                leasehold_sdk::encode(&smallbank::Amalgamate { from: customer, to: other })
            }
            SmallbankTransaction::Balance => leasehold_sdk::encode(&smallbank::Customer { customer }),
            SmallbankTransaction::SendPayment => {
                leasehold_sdk::encode(&smallbank::SendPayment { from: customer, to: other, amount })
            }
            SmallbankTransaction::DepositChecking
            | SmallbankTransaction::TransactSavings
            | SmallbankTransaction::WriteCheck => {
                leasehold_sdk::encode(&smallbank::CustomerAmount { customer, amount })
            }
        };
        (transaction.workflow(), arguments.expect("smallbank arguments encode"))
    }

    /// Travel: search and reserve 1:1, every id uniform. A search names the hotels and
    /// flights "near" a uniformly drawn one (consecutive ids), so they are distinct.
    fn next_travel(&mut self) -> (&'static str, Vec<u8>) {
        use leasehold_plugin_api::travel;
        if self.rng.random_bool(0.5) {
            let width = TRAVEL_SEARCH_WIDTH.min(self.keys);
            let near = |start: u64| (0..width).map(|offset| (start + offset) % self.keys).collect::<Vec<_>>();
            let (hotel, flight) = (self.rng.random_range(0..self.keys), self.rng.random_range(0..self.keys));
            let search = travel::Search { hotels: near(hotel), flights: near(flight) };
            ("search", leasehold_sdk::encode(&search).expect("search arguments encode"))
        } else {
            let user = travel::user_name(self.rng.random_range(0..travel::USER_COUNT));
            let (hotel, flight) = (self.rng.random_range(0..self.keys), self.rng.random_range(0..self.keys));
            (
                "reserve",
                leasehold_sdk::encode(&travel::Reserve { user, hotel, flight }).expect("reserve arguments encode"),
            )
        }
    }
}

/// The invocations that load `keys` keys with `value` each, in chunks (travel: `keys`
/// hotels and flights with capacity `value`, and the users, in one transaction; movie:
/// `keys` movies and users; social: `keys` users with their follow graph).
pub fn load_invocations(kind: WorkloadKind, keys: u64, value: i64) -> Vec<Invocation> {
    const CHUNK: u64 = 10_000;
    match kind {
        WorkloadKind::Travel => {
            let capacity = u32::try_from(value).expect("travel capacity fits in a u32");
            let load = leasehold_plugin_api::travel::Load { hotels: keys, flights: keys, capacity };
            return vec![invocation(kind, "load", leasehold_sdk::encode(&load))];
        }
        WorkloadKind::Movie => {
            return movie::loads(keys)
                .iter()
                .map(|load| invocation(kind, "load", leasehold_sdk::encode(load)))
                .collect()
        }
        WorkloadKind::Social => {
            return social::loads(keys)
                .iter()
                .map(|load| invocation(kind, "load", leasehold_sdk::encode(load)))
                .collect()
        }
        WorkloadKind::Banking | WorkloadKind::YcsbT | WorkloadKind::Smallbank => {}
    }
    (0..keys.div_ceil(CHUNK))
        .map(|chunk| {
            let first = chunk * CHUNK;
            let count = CHUNK.min(keys - first);
            let (workflow, arguments) = match kind {
                WorkloadKind::Banking => (
                    "open",
                    leasehold_sdk::encode(&leasehold_plugin_api::banking::Open { first, count, balance: value }),
                ),
                WorkloadKind::YcsbT => {
                    ("load", leasehold_sdk::encode(&leasehold_plugin_api::ycsb_t::Load { first, count, value }))
                }
                WorkloadKind::Smallbank => (
                    "load",
                    leasehold_sdk::encode(&leasehold_plugin_api::smallbank::Load { first, count, balance: value }),
                ),
                WorkloadKind::Travel | WorkloadKind::Movie | WorkloadKind::Social => {
                    unreachable!("loaded above")
                }
            };
            Invocation {
                plugin: kind.plugin().to_string(),
                workflow: workflow.to_string(),
                arguments: Arguments::Encoded(arguments.expect("load arguments encode")),
                request_id: Vec::new(),
                session: None,
            }
        })
        .collect()
}

fn invocation(kind: WorkloadKind, workflow: &str, arguments: Result<Vec<u8>, leasehold_sdk::Abort>) -> Invocation {
    Invocation {
        plugin: kind.plugin().to_string(),
        workflow: workflow.to_string(),
        arguments: Arguments::Encoded(arguments.expect("harness arguments encode")),
        request_id: Vec::new(),
        session: None,
    }
}

/// The invocations that sum all values (for the invariant check), in chunks. For travel
/// this is one `audit`, whose sum is the number of reservations held. Movie and social
/// check against a journal instead: see [`audit_invocations`].
pub fn total_invocations(kind: WorkloadKind, keys: u64) -> Vec<Invocation> {
    const CHUNK: u64 = 10_000;
    match kind {
        WorkloadKind::Travel => {
            let audit = leasehold_plugin_api::travel::Audit { hotels: keys, flights: keys };
            return vec![invocation(kind, "audit", leasehold_sdk::encode(&audit))];
        }
        WorkloadKind::Movie | WorkloadKind::Social => return audit_invocations(kind, keys, &Journal::default()),
        WorkloadKind::Banking | WorkloadKind::YcsbT | WorkloadKind::Smallbank => {}
    }
    (0..keys.div_ceil(CHUNK))
        .map(|chunk| {
            let first = chunk * CHUNK;
            let count = CHUNK.min(keys - first);
            let arguments = match kind {
                WorkloadKind::Banking => leasehold_sdk::encode(&leasehold_plugin_api::banking::Range { first, count }),
                WorkloadKind::YcsbT => leasehold_sdk::encode(&leasehold_plugin_api::ycsb_t::Range { first, count }),
                WorkloadKind::Smallbank => {
                    leasehold_sdk::encode(&leasehold_plugin_api::smallbank::Range { first, count })
                }
                WorkloadKind::Travel | WorkloadKind::Movie | WorkloadKind::Social => {
                    unreachable!("audited above")
                }
            };
            Invocation {
                plugin: kind.plugin().to_string(),
                workflow: "total".to_string(),
                arguments: Arguments::Encoded(arguments.expect("range arguments encode")),
                request_id: Vec::new(),
                session: None,
            }
        })
        .collect()
}

/// Decodes the output of one `total` invocation into the sum it reports.
pub fn decode_total(kind: WorkloadKind, output: &[u8]) -> Option<i64> {
    match kind {
        WorkloadKind::Banking => leasehold_sdk::decode::<(i64, u64)>(output).ok().map(|(sum, _)| sum),
        WorkloadKind::YcsbT => leasehold_sdk::decode::<i64>(output).ok(),
        WorkloadKind::Smallbank => {
            leasehold_sdk::decode::<leasehold_plugin_api::smallbank::Total>(output).ok().map(|t| t.sum)
        }
        WorkloadKind::Travel => leasehold_sdk::decode::<leasehold_plugin_api::travel::AuditReport>(output)
            .ok()
            .and_then(|audit| i64::try_from(audit.reservations()).ok()),
        // Their counts come from the whole audit (`verdict`), not from one output.
        WorkloadKind::Movie | WorkloadKind::Social => None,
    }
}

/// The sum `total_invocations` report right after `load_invocations`.
pub fn initial_sum(kind: WorkloadKind, keys: u64, value: i64) -> i64 {
    match kind {
        WorkloadKind::Banking | WorkloadKind::YcsbT => keys as i64 * value,
        // Savings and checking each start with `value`.
        WorkloadKind::Smallbank => 2 * keys as i64 * value,
        // Nobody has reserved anything yet; nobody has reviewed or posted.
        WorkloadKind::Travel | WorkloadKind::Movie | WorkloadKind::Social => 0,
    }
}

/// How much a committed request of `workflow` changed the sum that `total_invocations`
/// read, from its output; `None` when the output does not decode.
pub fn committed_delta(kind: WorkloadKind, workflow: &str, output: &[u8]) -> Option<i64> {
    match (kind, workflow) {
        (WorkloadKind::Banking | WorkloadKind::YcsbT, _) => Some(0),
        (WorkloadKind::Smallbank, _) => {
            leasehold_sdk::decode::<leasehold_plugin_api::smallbank::Receipt>(output).ok().map(|receipt| receipt.delta)
        }
        // Each committed reservation adds one; the output is checked to be one.
        (WorkloadKind::Travel, "reserve") => {
            leasehold_sdk::decode::<leasehold_plugin_api::travel::Reserved>(output).ok().map(|_| 1)
        }
        (WorkloadKind::Travel, _) => Some(0),
        // Each committed compose stores one review, each committed post one post.
        (WorkloadKind::Movie, movie::COMPOSE) => {
            leasehold_sdk::decode::<leasehold_plugin_api::movie::Composed>(output).ok().map(|_| 1)
        }
        (WorkloadKind::Social, social::POST) => {
            leasehold_sdk::decode::<leasehold_plugin_api::social::Posted>(output).ok().map(|_| 1)
        }
        (WorkloadKind::Movie | WorkloadKind::Social, _) => Some(0),
    }
}

/// The keys a generated request will use, as its plugin's planner declares them, for a
/// client that routes requests by the cluster's lease table: both accounts of a banking
/// or YCSB-T transfer. Other workloads name none, so a routing client sends their
/// requests to the nodes in turn (and the nodes forward them).
pub fn routing_keys(kind: WorkloadKind, invocation: &Invocation) -> Vec<RoutingKey> {
    let Arguments::Encoded(arguments) = &invocation.arguments else { return Vec::new() };
    let accounts = match (kind, invocation.workflow.as_str()) {
        (WorkloadKind::Banking, "transfer") => {
            leasehold_sdk::decode::<leasehold_plugin_api::banking::Transfer>(arguments)
                .ok()
                .map(|transfer| ("accounts", [transfer.from, transfer.to]))
        }
        (WorkloadKind::YcsbT, "transfer") => leasehold_sdk::decode::<leasehold_plugin_api::ycsb_t::Transfer>(arguments)
            .ok()
            .map(|transfer| ("keys", [transfer.a, transfer.b])),
        _ => None,
    };
    accounts.map_or_else(Vec::new, |(table, keys)| {
        keys.iter().map(|&key| RoutingKey::new(table, leasehold_sdk::key_u64(key))).collect()
    })
}

/// The violation of an invariant beyond the sum that one `total` output shows, if any
/// (travel: over capacity, or a reservation without both parts).
pub fn audit_violation(kind: WorkloadKind, output: &[u8]) -> Option<String> {
    match kind {
        WorkloadKind::Travel => match leasehold_sdk::decode::<leasehold_plugin_api::travel::AuditReport>(output) {
            Ok(audit) => audit.violation(),
            Err(error) => Some(format!("undecodable audit: {error}")),
        },
        WorkloadKind::Banking | WorkloadKind::YcsbT | WorkloadKind::Smallbank => None,
        // Checked over the whole audit by `verdict`.
        WorkloadKind::Movie | WorkloadKind::Social => None,
    }
}

/// One committed request whose effects an invariant check replays: where it sits in the
/// serial order and what it returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub timestamp: Timestamp,
    pub output: Vec<u8>,
}

/// The committed requests of a run that its invariant check replays (movie's composes,
/// social's posts; see [`WorkloadKind::journals`]), in the order clients saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    pub entries: Vec<JournalEntry>,
}

impl Journal {
    /// Notes a committed request if its workload journals `workflow`.
    pub fn record(&mut self, kind: WorkloadKind, workflow: &str, timestamp: Timestamp, output: &[u8]) {
        if kind.journals(workflow) {
            self.entries.push(JournalEntry { timestamp, output: output.to_vec() });
        }
    }

    pub fn append(&mut self, other: Journal) {
        self.entries.extend(other.entries);
    }

    /// The entries in serial (timestamp) order, which is the order they took effect in.
    pub fn in_commit_order(&self) -> Vec<&JournalEntry> {
        let mut entries: Vec<&JournalEntry> = self.entries.iter().collect();
        entries.sort_by_key(|entry| entry.timestamp);
        entries
    }
}

/// What an invariant check found: the workload's count or sum (`None` when the audit could
/// not be read) and the first violation, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub found: Option<i64>,
    pub violation: Option<String>,
}

/// The read-only invocations whose outputs [`verdict`] checks after a run: the `total`s or
/// travel's audit, or, for movie and social, every list or timeline and every journalled
/// review or post.
pub fn audit_invocations(kind: WorkloadKind, keys: u64, journal: &Journal) -> Vec<Invocation> {
    let audits = match kind {
        WorkloadKind::Movie => movie::audits(keys, journal),
        WorkloadKind::Social => social::audits(keys, journal),
        WorkloadKind::Banking | WorkloadKind::YcsbT | WorkloadKind::Smallbank | WorkloadKind::Travel => {
            return total_invocations(kind, keys)
        }
    };
    audits.into_iter().map(|(workflow, arguments)| invocation(kind, workflow, Ok(arguments))).collect()
}

/// Checks the outputs of [`audit_invocations`] (in their order).
pub fn verdict(kind: WorkloadKind, keys: u64, journal: &Journal, outputs: &[Vec<u8>]) -> Verdict {
    match kind {
        WorkloadKind::Movie => movie::check(keys, journal, outputs),
        WorkloadKind::Social => social::check(keys, journal, outputs),
        WorkloadKind::Banking | WorkloadKind::YcsbT | WorkloadKind::Smallbank | WorkloadKind::Travel => {
            let mut sum = Some(0i64);
            let mut violation = None;
            for output in outputs {
                sum = sum.zip(decode_total(kind, output)).map(|(sum, total)| sum + total);
                violation = violation.or_else(|| audit_violation(kind, output));
            }
            if sum.is_none() {
                violation.get_or_insert_with(|| "undecodable total".to_string());
            }
            Verdict { found: sum, violation }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_reproducible_and_ids_unique() {
        let mut a = Generator::new(WorkloadKind::Banking, 1000, 0.99, 42, 1, 7);
        let mut b = Generator::new(WorkloadKind::Banking, 1000, 0.99, 42, 1, 7);
        let mut ids = std::collections::HashSet::new();
        for _ in 0..100 {
            let (x, y) = (a.next_request(), b.next_request());
            assert_eq!(x.arguments, y.arguments);
            assert!(ids.insert(x.request_id));
        }
    }

    #[test]
    fn zipfian_sampling_is_skewed_and_in_range() {
        let sampler = KeySampler::new(10_000, 0.99);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let key = sampler.sample(&mut rng);
            assert!(key < 10_000);
            *counts.entry(key).or_insert(0u32) += 1;
        }
        let hottest = counts.values().max().copied().unwrap_or(0);
        // Under theta 0.99 the hottest key gets roughly a tenth of all draws; uniform
        // sampling would give it a handful.
        assert!(hottest > 1000, "hottest key drew {hottest}");
    }

    /// Decodes generated arguments as plain tuples of the argument types' fields (postcard
    /// is positional), so the test does not just repeat the encoding's own definition.
    fn decoded<T: serde::de::DeserializeOwned>(invocation: &Invocation) -> T {
        let Arguments::Encoded(bytes) = &invocation.arguments else { panic!("generators encode their arguments") };
        leasehold_sdk::decode(bytes).expect("generated arguments decode")
    }

    /// The customers a SmallBank request touches.
    fn smallbank_customers(invocation: &Invocation) -> Vec<u64> {
        match invocation.workflow.as_str() {
            "amalgamate" => {
                let (from, to): (u64, u64) = decoded(invocation);
                assert_ne!(from, to, "amalgamate moves money between two customers");
                vec![from, to]
            }
            "send_payment" => {
                let (from, to, amount): (u64, u64, i64) = decoded(invocation);
                assert_ne!(from, to, "send_payment pays another customer");
                assert!((1..=100).contains(&amount));
                vec![from, to]
            }
            "balance" => vec![decoded::<u64>(invocation)],
            "deposit_checking" | "transact_savings" | "write_check" => {
                let (customer, amount): (u64, i64) = decoded(invocation);
                assert!((1..=100).contains(&amount));
                vec![customer]
            }
            other => panic!("unexpected smallbank workflow {other}"),
        }
    }

    #[test]
    fn smallbank_follows_the_mix_and_the_hot_set() {
        const DRAWS: usize = 100_000;
        let mut generator = Generator::new(WorkloadKind::Smallbank, 100_000, 0.0, 3, 0, 1);
        let mut per_workflow = std::collections::HashMap::<String, usize>::new();
        let mut all_hot = 0usize;
        for _ in 0..DRAWS {
            let invocation = generator.next_request();
            assert_eq!(invocation.plugin, "smallbank");
            let customers = smallbank_customers(&invocation);
            assert!(customers.iter().all(|&c| c < 100_000));
            if customers.iter().all(|&c| c < SMALLBANK_HOT_CUSTOMERS) {
                all_hot += 1;
            }
            *per_workflow.entry(invocation.workflow).or_default() += 1;
        }
        for (transaction, percent) in SmallbankTransaction::ALL.into_iter().zip(SMALLBANK_MIX) {
            let share = per_workflow.get(transaction.workflow()).copied().unwrap_or(0) as f64 / DRAWS as f64;
            // 100,000 draws: the standard error of a 15% share is about 0.11 points.
            assert!((share - f64::from(percent) / 100.0).abs() < 0.01, "{transaction:?}: share {share}");
        }
        // 90% hot by choice, plus the few cold draws that land in the hot set anyway
        // (4% of 10% for one customer).
        let hot_share = all_hot as f64 / DRAWS as f64;
        assert!((0.895..0.91).contains(&hot_share), "hot share {hot_share}");
    }

    #[test]
    fn generated_workloads_are_reproducible_per_seed_and_client() {
        for kind in [WorkloadKind::Smallbank, WorkloadKind::Travel, WorkloadKind::Movie, WorkloadKind::Social] {
            let run = |seed, client| {
                let mut generator = Generator::new(kind, 1_000, 0.0, seed, client, 9);
                (0..200).map(|_| generator.next_request()).map(|i| (i.workflow, i.arguments)).collect::<Vec<_>>()
            };
            assert_eq!(run(5, 1), run(5, 1), "{kind:?} repeats with the same seed");
            assert_ne!(run(5, 1), run(6, 1), "{kind:?} changes with the seed");
            assert_ne!(run(5, 1), run(5, 2), "{kind:?} differs between clients");
        }
    }

    #[test]
    fn smallbank_with_fewer_customers_than_the_hot_set_stays_in_range() {
        let mut generator = Generator::new(WorkloadKind::Smallbank, 2, 0.0, 1, 0, 0);
        for _ in 0..1_000 {
            assert!(smallbank_customers(&generator.next_request()).iter().all(|&c| c < 2));
        }
    }

    #[test]
    fn travel_is_one_to_one_with_uniform_ids() {
        use leasehold_plugin_api::travel;
        const DRAWS: usize = 40_000;
        let mut generator = Generator::new(WorkloadKind::Travel, 100, 0.0, 11, 0, 1);
        let (mut searches, mut hotel_counts) = (0usize, vec![0usize; 100]);
        for _ in 0..DRAWS {
            let invocation = generator.next_request();
            match invocation.workflow.as_str() {
                "search" => {
                    searches += 1;
                    let (hotels, flights): (Vec<u64>, Vec<u64>) = decoded(&invocation);
                    assert_eq!(hotels.len() as u64, TRAVEL_SEARCH_WIDTH);
                    assert!(hotels.iter().chain(&flights).all(|&id| id < 100));
                }
                "reserve" => {
                    let (user, hotel, flight): (String, u64, u64) = decoded(&invocation);
                    let user: u64 = user.strip_prefix("Cornell_").and_then(|n| n.parse().ok()).expect("user name");
                    assert!(user < travel::USER_COUNT && flight < 100);
                    hotel_counts[hotel as usize] += 1;
                }
                other => panic!("unexpected travel workflow {other}"),
            }
        }
        let search_share = searches as f64 / DRAWS as f64;
        assert!((search_share - 0.5).abs() < 0.01, "search share {search_share}");
        // Uniform: about 200 reservations per hotel; none far off.
        let (least, most) = (hotel_counts.iter().min().copied(), hotel_counts.iter().max().copied());
        assert!(least > Some(120) && most < Some(290), "hotel reservations from {least:?} to {most:?}");
    }

    #[test]
    fn movie_composes_are_in_range_with_unique_review_ids() {
        use leasehold_plugin_api::movie::{self as api, ComposeReview};
        let mut generator = Generator::new(WorkloadKind::Movie, 1_000, 0.0, 3, 2, 11);
        let mut review_ids = std::collections::HashSet::new();
        let mut ratings = [0usize; 11];
        for _ in 0..10_000 {
            let invocation = generator.next_request();
            assert_eq!((invocation.plugin.as_str(), invocation.workflow.as_str()), ("movie", "compose_review"));
            let compose: ComposeReview = decoded(&invocation);
            assert!(review_ids.insert(compose.review_id), "review id {} drawn twice", compose.review_id);
            let user: u64 = compose.username.strip_prefix("username_").and_then(|n| n.parse().ok()).expect("a user");
            let movie: u64 = compose.title.strip_prefix("Movie ").and_then(|n| n.parse().ok()).expect("a title");
            assert!(user < 1_000 && movie < 1_000);
            assert_eq!(compose.password, api::password(user));
            assert_eq!(compose.text.len(), api::TEXT_BYTES);
            ratings[compose.rating as usize] += 1;
        }
        // Ratings 0..=10, uniform: about 909 each.
        assert!(ratings.iter().all(|&count| (750..1_070).contains(&count)), "{ratings:?}");
    }

    #[test]
    fn unique_ids_differ_across_clients_sequences_and_runs() {
        let mut ids = std::collections::HashSet::new();
        for run in [1, 2] {
            for client in 0..4 {
                for sequence in 0..1_000 {
                    assert!(ids.insert(unique_id(run, client, sequence)));
                }
            }
        }
    }

    #[test]
    fn movie_and_social_count_their_writes_and_journal_only_them() {
        use leasehold_plugin_api::{movie, social};
        let composed =
            movie::Composed { review_id: 1, user_id: 2, movie_id: 3, rating: 4, movie_reviews: 1, user_reviews: 1 };
        let composed = leasehold_sdk::encode(&composed).expect("encode");
        assert_eq!(committed_delta(WorkloadKind::Movie, "compose_review", &composed), Some(1));
        assert_eq!(committed_delta(WorkloadKind::Movie, "compose_review", &[]), None);
        let posted =
            leasehold_sdk::encode(&social::Posted { post_id: 1, author: 2, notified: vec![3] }).expect("encode");
        assert_eq!(committed_delta(WorkloadKind::Social, "post", &posted), Some(1));
        assert_eq!(committed_delta(WorkloadKind::Social, "post_list", &[9]), Some(0));
        let mut journal = Journal::default();
        let timestamp = Timestamp::default();
        journal.record(WorkloadKind::Social, "post_list", timestamp, &[1]);
        journal.record(WorkloadKind::Travel, "reserve", timestamp, &[1]);
        assert!(journal.entries.is_empty());
        journal.record(WorkloadKind::Social, "post", timestamp, &posted);
        assert_eq!(journal.entries.len(), 1);
        assert_eq!(initial_sum(WorkloadKind::Movie, 1_000, 0), 0);
        assert_eq!(load_invocations(WorkloadKind::Social, 10_000, 0).len(), 10);
        assert_eq!(load_invocations(WorkloadKind::Movie, 1_000, 0).len(), 1);
    }

    /// An audit as the travel plugin encodes it: one hotel and one flight of capacity 2,
    /// and `holders` users holding (hotel 0, flight 0).
    fn encoded_audit(hotel_reserved: u32, flight_reserved: u32, holders: usize) -> Vec<u8> {
        use leasehold_plugin_api::travel;
        let inventory = |reserved| Some(travel::Inventory { capacity: 2, reserved, price: 1, rating: 1 });
        let mut users = vec![Some(travel::User::default()); travel::USER_COUNT as usize];
        for user in users.iter_mut().take(holders) {
            user.as_mut().expect("users exist").reservations.push(travel::Reservation { hotel: 0, flight: 0 });
        }
        let report = travel::AuditReport {
            hotels: vec![inventory(hotel_reserved)],
            flights: vec![inventory(flight_reserved)],
            users,
        };
        leasehold_sdk::encode(&report).expect("encode audit")
    }

    #[test]
    fn travel_audit_accepts_consistent_state_and_names_each_violation() {
        let violation =
            |hotel, flight, holders| audit_violation(WorkloadKind::Travel, &encoded_audit(hotel, flight, holders));
        assert_eq!(violation(2, 2, 2), None);
        assert_eq!(decode_total(WorkloadKind::Travel, &encoded_audit(2, 2, 2)), Some(2));
        assert!(violation(3, 3, 3).expect("over capacity").contains("over capacity"));
        // A hotel taken without its flight: the flight counter disagrees with the users.
        assert!(violation(2, 1, 2).expect("half reservation").contains("flight 0 counts 1"));
        assert!(violation(1, 1, 2).expect("unrecorded").contains("hotel 0 counts 1"));
        assert!(audit_violation(WorkloadKind::Travel, &[1, 2]).expect("garbage").contains("undecodable"));
    }

    #[test]
    fn invariant_sums_start_right_and_deltas_decode() {
        assert_eq!(initial_sum(WorkloadKind::Banking, 10, 5), 50);
        assert_eq!(initial_sum(WorkloadKind::Smallbank, 10, 5), 100);
        assert_eq!(initial_sum(WorkloadKind::Travel, 10, 5), 0);
        let receipt = leasehold_plugin_api::smallbank::Receipt { delta: -7, customer: 1, savings: 2, checking: 3 };
        let output = leasehold_sdk::encode(&receipt).expect("encode receipt");
        assert_eq!(committed_delta(WorkloadKind::Smallbank, "write_check", &output), Some(-7));
        assert_eq!(committed_delta(WorkloadKind::Smallbank, "write_check", &[]), None);
        let reserved = leasehold_plugin_api::travel::Reserved {
            reservation: leasehold_plugin_api::travel::Reservation { hotel: 1, flight: 2 },
            user_reservations: 1,
        };
        let output = leasehold_sdk::encode(&reserved).expect("encode reservation");
        assert_eq!(committed_delta(WorkloadKind::Travel, "reserve", &output), Some(1));
        assert_eq!(committed_delta(WorkloadKind::Travel, "search", &output), Some(0));
        assert!(load_invocations(WorkloadKind::Smallbank, 25_000, 1).len() == 3);
        assert!(total_invocations(WorkloadKind::Travel, 100).len() == 1);
    }
}
