//! The request and response types of the workload plugins (banking, ycsb-t, smallbank,
//! travel, testkit), shared by the plugins and by
//! the programs that call them (benchmark harness, tests).
//!
//! Why a crate of its own: a plugin exports the `#[no_mangle]` entry point
//! `leasehold_plugin_entry_v1`. If programs depended on plugin crates for these types,
//! linking two plugins into one program could pull in both entry points and fail with a
//! duplicate symbol. Plugins are therefore `cdylib`s only, and their types live here.
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
