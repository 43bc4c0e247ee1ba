//! The argument and output encodings of the SmallBank and travel plugins, as the harness
//! sends and reads them: field-for-field mirrors of the types in `plugins/smallbank` and
//! `plugins/travel` (postcard is positional, so names may differ but order and types may
//! not).
//!
//! Mirrored rather than imported on purpose: a binary that links a plugin's rlib and calls
//! code compiled into it (serde's `expecting`, `Debug`, any non-generic function) pulls in
//! an object file that may also hold the plugin's `#[no_mangle] leasehold_plugin_entry_v1`,
//! and two plugins' copies of that export make the link fail. The integration test
//! `integration/tests/workloads.rs` runs these encodings against the real plugins, so a
//! mismatch shows up there as undecodable outputs or planner aborts.

/// `plugins/smallbank`'s types.
pub mod smallbank {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Amalgamate {
        pub from: u64,
        pub to: u64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Customer {
        pub customer: u64,
    }

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

    /// Every transaction's output: `delta` is its change to the sum of all balances.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Receipt {
        pub delta: i64,
        pub customer: u64,
        pub savings: i64,
        pub checking: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Load {
        pub first: u64,
        pub count: u64,
        pub balance: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Range {
        pub first: u64,
        pub count: u64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Total {
        pub sum: i64,
        pub customers: u64,
    }
}

/// `plugins/travel`'s types.
pub mod travel {
    use serde::{Deserialize, Serialize};

    /// Users `Cornell_0`..=`Cornell_500`, as the plugin loads them.
    pub const USER_COUNT: u64 = 501;

    pub fn user_name(index: u64) -> String {
        format!("Cornell_{index}")
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Inventory {
        pub capacity: u32,
        pub reserved: u32,
        pub price: u32,
        pub rating: u8,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Reservation {
        pub hotel: u64,
        pub flight: u64,
    }

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

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Load {
        pub hotels: u64,
        pub flights: u64,
        pub capacity: u32,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Audit {
        pub hotels: u64,
        pub flights: u64,
    }

    /// `audit`'s output: users in order `Cornell_0`, `Cornell_1`, ...
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct AuditReport {
        pub hotels: Vec<Option<Inventory>>,
        pub flights: Vec<Option<Inventory>>,
        pub users: Vec<Option<User>>,
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
