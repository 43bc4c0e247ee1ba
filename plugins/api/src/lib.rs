//! The request and response types of the workload plugins (banking, ycsb-t, smallbank,
//! travel, movie, social, testkit), shared by the plugins and by
//! the programs that call them (benchmark harness, tests).
//!
//! Why a crate of its own: a plugin exports the `#[no_mangle]` entry point
//! `leasehold_plugin_entry_v1`. If programs depended on plugin crates for these types,
//! linking two plugins into one program could pull in both entry points and fail with a
//! duplicate symbol. Programs therefore never depend on plugin crates, and the types live
//! here. (The workload plugins also build an rlib, for one caller: each plugin argument
//! fuzz target in `fuzz/` links exactly one plugin.)
//! Values travel in the SDK's encoding (`leasehold_sdk::encode`/`decode`).

/// The banking workload (RTSFaaS banking service).
pub mod banking {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Transfer {
        pub from: u64,
        pub to: u64,
        pub amount: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TransferResult {
        pub from_balance: i64,
        pub to_balance: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Deposit {
        pub account: u64,
        pub amount: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Account {
        pub account: u64,
    }

    /// Opens `count` accounts from `first` on, each with `balance`.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Open {
        pub first: u64,
        pub count: u64,
        pub balance: i64,
    }

    /// Sums the balances of `count` accounts from `first` on.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Range {
        pub first: u64,
        pub count: u64,
    }

    /// Largest range one `open` or `total` transaction may cover.
    pub const RANGE_MAX: u64 = 100_000;
}

/// The YCSB-T workload (Styx's transfer).
pub mod ycsb_t {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Transfer {
        pub a: u64,
        pub b: u64,
        pub amount: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Load {
        pub first: u64,
        pub count: u64,
        pub value: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Range {
        pub first: u64,
        pub count: u64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Key {
        pub key: u64,
    }

    /// Largest range one `load` or `total` transaction may cover.
    pub const RANGE_MAX: u64 = 100_000;
}

/// The engine's own test plugin: scripted read/write programs.
pub mod testkit {
    use serde::{Deserialize, Serialize};

    /// One operation of a scripted step. Keys are single bytes; a missing value reads as 0.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub enum Op {
        /// Appends the value of the key to the step's output.
        Read(u8),
        /// Adds to the value of the key.
        Add(u8, i64),
        /// Sets the value of the key.
        Set(u8, i64),
        /// Aborts the transaction (a logic abort) when the value of the key is negative.
        AbortIfNegative(u8),
        /// Panics inside the plugin.
        Panic,
        /// Writes a key that the plan did not declare (the engine must refuse it).
        Undeclared(u8),
    }

    /// The script of one `program` transaction: the ops of each of its three steps.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
    pub struct Program {
        pub steps: [Vec<Op>; 3],
    }

    /// Keys of [`Op::Undeclared`] are moved here, outside what the plan declares.
    pub const UNDECLARED_KEY_BASE: u16 = 1000;

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Nothing {}

    /// One micro-operation of a `list_append` transaction, the list-append workload of
    /// Elle: keys hold append-only lists of `u64`, and reads return the whole list, so a
    /// history checker sees the order in which the values were appended.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ListOp {
        /// Returns the list under the key (empty when it has none), including what this
        /// transaction appended to it so far.
        Read(u64),
        /// Appends the value to the list under the key.
        Append(u64, u64),
        /// Aborts the transaction (a logic abort): none of its appends may take effect.
        Abort,
    }

    /// The arguments of `list_append`: micro-operations run in order, as one transaction.
    /// Its output is a `Vec<Vec<u64>>`: the list each [`ListOp::Read`] returned, in order.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
    pub struct ListTransaction {
        pub ops: Vec<ListOp>,
    }

    /// Most micro-operations one `list_append` transaction may carry (the planner refuses
    /// more), so that random arguments cannot declare huge access sets.
    pub const LIST_OPS_MAX: usize = 64;

    /// The largest encoded list the `lists` table stores; an append beyond it aborts the
    /// transaction with a value-too-large abort.
    pub const LIST_BYTES_MAX: u32 = 1 << 20;
}

/// The SmallBank workload (FaSST/DrTM parameters).
pub mod smallbank {
    use serde::{Deserialize, Serialize};

    /// Two customers: the source and the destination of money.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Amalgamate {
        pub from: u64,
        pub to: u64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Customer {
        pub customer: u64,
    }

    /// One customer and an amount (deposit_checking, transact_savings, write_check).
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CustomerAmount {
        pub customer: u64,
        pub amount: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct SendPayment {
        pub from: u64,
        pub to: u64,
        pub amount: i64,
    }

    /// What every transaction type returns: the change to the sum of all balances, and one
    /// customer's balances after it (the receiving customer for amalgamate and send_payment).
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Receipt {
        pub delta: i64,
        pub customer: u64,
        pub savings: i64,
        pub checking: i64,
    }

    /// Opens `count` customers from `first` on, each with `balance` in savings and in checking.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Load {
        pub first: u64,
        pub count: u64,
        pub balance: i64,
    }

    /// Sums both balances of `count` customers from `first` on.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Range {
        pub first: u64,
        pub count: u64,
    }

    /// What `total` returns: the sum over both tables and how many customers exist.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Total {
        pub sum: i64,
        pub customers: u64,
    }

    /// Largest range one `load` or `total` transaction may cover (two keys per customer).
    pub const RANGE_MAX: u64 = 50_000;

    /// WriteCheck's overdraft penalty, as in H-Store's SmallBank.
    pub const OVERDRAFT_PENALTY: i64 = 1;
}

/// The travel reservation workload (DeathStarBench hotel reservation, transactional).
pub mod travel {
    use serde::{Deserialize, Serialize};

    /// A hotel's rooms or a flight's seats.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Inventory {
        pub capacity: u32,
        pub reserved: u32,
        /// Price per night or per seat, in whole currency units.
        pub price: u32,
        /// Rating 0..=50 (tenths of a star).
        pub rating: u8,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Reservation {
        pub hotel: u64,
        pub flight: u64,
    }

    /// A user's record: every reservation they made, in commit order.
    #[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
    pub struct User {
        pub reservations: Vec<Reservation>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Reserve {
        pub user: String,
        pub hotel: u64,
        pub flight: u64,
    }

    /// What `reserve` returns: the reservation and how many the user now holds.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Reserved {
        pub reservation: Reservation,
        pub user_reservations: u64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Search {
        pub hotels: Vec<u64>,
        pub flights: Vec<u64>,
    }

    /// The best hotels and flights with room left, best first.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Ranking {
        pub hotels: Vec<u64>,
        pub flights: Vec<u64>,
    }

    /// Creates hotels and flights `0..count` with `capacity` each, and the users (with no
    /// reservations).
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Load {
        pub hotels: u64,
        pub flights: u64,
        pub capacity: u32,
    }

    /// Reads hotels and flights `0..count` and every user.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Audit {
        pub hotels: u64,
        pub flights: u64,
    }

    /// What `audit` returns; missing hotels, flights or users are `None`. The harness checks
    /// it (`leasehold_bench::wire::travel::AuditReport::violation`).
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct AuditReport {
        pub hotels: Vec<Option<Inventory>>,
        pub flights: Vec<Option<Inventory>>,
        pub users: Vec<Option<User>>,
    }

    /// Users `Cornell_0`..=`Cornell_500`: DeathStarBench's loader includes both ends.
    pub const USER_COUNT: u64 = 501;

    /// Most hotels or flights one `search` may name (it declares a read of each).
    pub const SEARCH_MAX: usize = 64;

    /// How many hotels and flights `search` returns.
    pub const SEARCH_RESULTS: usize = 5;

    /// Most hotels or flights `load` and `audit` may cover in one transaction.
    pub const INVENTORY_MAX: u64 = 10_000;

    /// The name of user number `index`.
    pub fn user_name(index: u64) -> String {
        format!("Cornell_{index}")
    }

    impl AuditReport {
        /// The first violation of travel's invariant, if any: a missing or over-capacity
        /// hotel or flight, or a counter that differs from the reservations users hold
        /// (which is what a half-made reservation would leave).
        pub fn violation(&self) -> Option<String> {
            let mut hotel_holders = vec![0u64; self.hotels.len()];
            let mut flight_holders = vec![0u64; self.flights.len()];
            for (index, user) in self.users.iter().enumerate() {
                let Some(user) = user else { return Some(format!("user {} is missing", user_name(index as u64))) };
                for reservation in &user.reservations {
                    let (Some(hotel), Some(flight)) = (
                        hotel_holders.get_mut(reservation.hotel as usize),
                        flight_holders.get_mut(reservation.flight as usize),
                    ) else {
                        return Some(format!(
                            "user {} holds {reservation:?} outside the audit",
                            user_name(index as u64)
                        ));
                    };
                    *hotel += 1;
                    *flight += 1;
                }
            }
            for (kind, inventories, holders) in
                [("hotel", &self.hotels, &hotel_holders), ("flight", &self.flights, &flight_holders)]
            {
                for (id, (inventory, &held)) in inventories.iter().zip(holders).enumerate() {
                    let Some(inventory) = inventory else { return Some(format!("{kind} {id} is missing")) };
                    let (reserved, capacity) = (inventory.reserved, inventory.capacity);
                    if reserved > capacity {
                        return Some(format!("{kind} {id} over capacity: {reserved} reserved of {capacity}"));
                    }
                    if u64::from(reserved) != held {
                        return Some(format!("{kind} {id} counts {reserved} reservations but users hold {held}"));
                    }
                }
            }
            None
        }

        /// Reservations held over all users.
        pub fn reservations(&self) -> u64 {
            self.users.iter().flatten().map(|user| user.reservations.len() as u64).sum()
        }
    }
}

/// The movie review workload (DeathStarBench media service, compose-review).
pub mod movie {
    use serde::{Deserialize, Serialize};

    /// A registered user (DeathStarBench's user service), stored under the user name.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct User {
        pub user_id: u64,
        pub username: String,
        pub password: String,
    }

    /// A movie (DeathStarBench's movie-id and rating services), stored under the title: the
    /// ratings its reviews gave add up here.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Movie {
        pub movie_id: u64,
        pub title: String,
        pub rating_count: u64,
        pub rating_sum: u64,
    }

    /// The reviews of one movie or one user (DeathStarBench's movie-review and user-review
    /// services): a list, newest first, linked through the reviews themselves. A list whose
    /// entries live in the reviews keeps every value small and every key of a compose known
    /// before it runs (the engine plans access sets from the arguments).
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ReviewList {
        pub count: u64,
        pub newest: Option<u64>,
    }

    /// A stored review (DeathStarBench's review storage) with the links of both lists it is
    /// on: the next older review of the same movie and of the same user.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Review {
        pub review_id: u64,
        pub user_id: u64,
        pub movie_id: u64,
        pub rating: u8,
        pub text: String,
        pub older_by_movie: Option<u64>,
        pub older_by_user: Option<u64>,
    }

    /// `compose_review` arguments, as DeathStarBench's frontend receives them (user name,
    /// password, title, rating, text). The review id comes from the caller: DeathStarBench's
    /// unique-id service runs before the reviews are stored, and here the transaction's keys
    /// must be known before it runs.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct ComposeReview {
        pub review_id: u64,
        pub username: String,
        pub password: String,
        pub title: String,
        pub rating: u8,
        pub text: String,
    }

    /// What `login` hands to `rate`.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct LoggedIn {
        pub user_id: u64,
    }

    /// What `rate` hands to `store_review`.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Rated {
        pub user_id: u64,
        pub movie_id: u64,
    }

    /// What `compose_review` returns: the stored review and the lengths of its two lists.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Composed {
        pub review_id: u64,
        pub user_id: u64,
        pub movie_id: u64,
        pub rating: u8,
        pub movie_reviews: u64,
        pub user_reviews: u64,
    }

    /// Creates movies and users `first..first + count` (movie and user `i` get id `i`), with
    /// no ratings and no reviews.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Load {
        pub first: u64,
        pub count: u64,
    }

    /// Reads movies and users `first..first + count` with their review lists.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AuditLists {
        pub first: u64,
        pub count: u64,
    }

    /// What `audit_lists` returns, one entry per movie or user number; `None` when missing.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct ListsReport {
        pub movies: Vec<Option<Movie>>,
        pub movie_reviews: Vec<Option<ReviewList>>,
        pub user_reviews: Vec<Option<ReviewList>>,
    }

    /// Reads the reviews of the given ids.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct AuditReviews {
        pub ids: Vec<u64>,
    }

    /// A stored review without its text (the audit checks links, not prose): what
    /// `audit_reviews` returns per id, `None` when no review has that id.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ReviewSummary {
        pub review_id: u64,
        pub user_id: u64,
        pub movie_id: u64,
        pub rating: u8,
        pub text_bytes: u32,
        pub older_by_movie: Option<u64>,
        pub older_by_user: Option<u64>,
    }

    /// Ratings go from 0 to this (DeathStarBench's compose-review script).
    pub const RATING_MAX: u8 = 10;
    /// Length of the review texts the harness sends (DeathStarBench: 256 random characters).
    pub const TEXT_BYTES: usize = 256;
    /// Longest review text a compose may carry.
    pub const TEXT_BYTES_MAX: usize = 4096;
    /// Most movies and users (each) one `load` or `audit_lists` may cover, and most ids one
    /// `audit_reviews` may read.
    pub const RANGE_MAX: u64 = 10_000;

    /// The name of user number `index` (DeathStarBench's register script).
    pub fn username(index: u64) -> String {
        format!("username_{index}")
    }

    /// The password of user number `index` (DeathStarBench's register script).
    pub fn password(index: u64) -> String {
        format!("password_{index}")
    }

    /// The title of movie number `index` (DeathStarBench loads titles from TMDB; these are
    /// stand-ins that keep the keys of the same shape: short text).
    pub fn title(index: u64) -> String {
        format!("Movie {index}")
    }
}

/// The social network workload (Retwis as Boki ran it).
pub mod social {
    use serde::{Deserialize, Serialize};

    /// What the user-name index holds (Boki's `username:` object and the password check of
    /// login).
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Credentials {
        pub user_id: u64,
        pub password: String,
        pub auth: u64,
    }

    /// A user (Boki's `userid:` object): name and both sides of the follow graph.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct User {
        pub user_id: u64,
        pub username: String,
        pub followers: Vec<u64>,
        pub followees: Vec<u64>,
    }

    /// A post as stored and as timelines carry it. Timelines carry whole posts, not ids
    /// (Boki stores ids and reads the posts after): the posts a timeline names are not known
    /// before `post_list` runs, and the engine plans every key from the arguments.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Post {
        pub post_id: u64,
        pub author: u64,
        pub author_name: String,
        pub body: String,
    }

    /// A user's timeline (the posts of the users they follow that notified them) or the global
    /// timeline: oldest first, at most [`USER_TIMELINE_MAX`] or [`GLOBAL_TIMELINE_MAX`].
    #[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
    pub struct Timeline {
        pub posts: Vec<Post>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Login {
        pub username: String,
        pub password: String,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct LoggedIn {
        pub user_id: u64,
        pub auth: u64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Profile {
        pub user_id: u64,
    }

    /// What `profile` returns (Boki's profile output).
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct ProfileView {
        pub username: String,
        pub followers: u64,
        pub followees: u64,
        pub posts: u64,
    }

    /// `post_list` arguments: a user's timeline, or the global one for `None` (as Boki's
    /// empty user id).
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PostList {
        pub user_id: Option<u64>,
    }

    /// What `post_list` returns: at most [`POST_LIST_MAX`] posts, newest first.
    #[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
    pub struct Posts {
        pub posts: Vec<Post>,
    }

    /// `post` arguments. The caller names the post id (Boki's unique-id call) and the
    /// followers to notify, at most [`NOTIFY_MAX`] (Boki shuffles the followers and takes
    /// four): the transaction's keys must be known before it runs, so the choice travels with
    /// the request, and the transaction checks that each one named follows the author.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct NewPost {
        pub post_id: u64,
        pub author: u64,
        pub body: String,
        pub notify: Vec<u64>,
    }

    /// What `post` returns: the post and the followers whose timelines received it.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Posted {
        pub post_id: u64,
        pub author: u64,
        pub notified: Vec<u64>,
    }

    /// One user for `load`: the user's id and both sides of their follow graph.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct NewUser {
        pub user_id: u64,
        pub followers: Vec<u64>,
        pub followees: Vec<u64>,
    }

    /// Creates users (name [`user_name`], password [`password`], empty timeline).
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct Load {
        pub users: Vec<NewUser>,
    }

    /// Reads the timelines of users `first..first + count`, and the global one when `global`.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AuditTimelines {
        pub first: u64,
        pub count: u64,
        pub global: bool,
    }

    /// What `audit_timelines` returns: `None` for a user without a timeline; the global
    /// timeline is `None` when not asked for or never written.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct TimelinesReport {
        pub users: Vec<Option<Timeline>>,
        pub global: Option<Timeline>,
    }

    /// Reads the posts of the given ids.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct AuditPosts {
        pub ids: Vec<u64>,
    }

    /// What `audit_posts` returns, one entry per id.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct PostsReport {
        pub posts: Vec<Option<Post>>,
    }

    /// Boki's `kMaxNotifyUsers`: a post reaches at most this many followers.
    pub const NOTIFY_MAX: usize = 4;
    /// Boki's `kUserPostListLimit`: a user's timeline keeps this many newest posts.
    pub const USER_TIMELINE_MAX: usize = 24;
    /// Boki's `kTimeLinePostListLimit`: the global timeline keeps this many newest posts.
    pub const GLOBAL_TIMELINE_MAX: usize = 96;
    /// Boki's `kMaxReturnPosts`: `post_list` returns at most this many posts.
    pub const POST_LIST_MAX: usize = 8;
    /// Length of the post bodies the harness sends (Boki's `bodylen` default).
    pub const BODY_BYTES: usize = 64;
    /// Longest post body a post may carry.
    pub const BODY_BYTES_MAX: usize = 1024;
    /// Most users one `load` or `audit_timelines` may cover, and most ids one `audit_posts`
    /// may read.
    pub const RANGE_MAX: u64 = 10_000;
    /// Most followers or followees one user may be loaded with.
    pub const FOLLOWS_MAX: usize = 1_000;

    /// The name of user number `index` (Boki's `create_users`).
    pub fn user_name(index: u64) -> String {
        format!("testuser_{index}")
    }

    /// The password of user number `index` (Boki's `create_users`).
    pub fn password(index: u64) -> String {
        format!("password_{index}")
    }
}
