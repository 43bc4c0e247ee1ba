//! The travel workload (DeathStarBench hotel reservation in the transactional form Beldi
//! and Boki use, see shared WORKLOADS.md).
//!
//! Tables: `hotels` and `flights` hold an [`Inventory`] (capacity, reserved, price,
//! rating) per big-endian id; `users` holds a [`User`] (the reservations made) under the
//! user name (`Cornell_0`..`Cornell_500`, as DeathStarBench loads them).
//!
//! * `reserve(user, hotel, flight)` is one transaction over the DAG
//!   check_user => (reserve_hotel, reserve_flight) => record_reservation: both parts are
//!   reserved or neither (a full hotel or flight aborts the whole transaction).
//! * `search(hotels, flights)` is read-only: it ranks the given hotels and flights that
//!   still have room by rating, then price.
//! * `load` creates the inventory and the users; `audit` returns every counter and every
//!   user's reservations so that the harness can check the invariant: nothing over
//!   capacity, and every reservation holds both parts (each hotel's and each flight's
//!   counter equals the number of user reservations naming it).

pub use leasehold_plugin_api::travel::*;
use leasehold_sdk::prelude::*;

pub const HOTELS: Table = Table(0);
pub const FLIGHTS: Table = Table(1);
pub const USERS: Table = Table(2);

/// Largest user record: capacity bounds the number of reservations, and each takes a few
/// bytes, so a user with this many bytes of reservations is far beyond any sane load.
const USER_BYTES_MAX: u32 = 4 << 20;

fn check_inventory_count(count: u64) -> Result<(), Abort> {
    if count == 0 || count > INVENTORY_MAX {
        return Err(Abort::new(format!("hotel and flight counts must be in 1..={INVENTORY_MAX}")));
    }
    Ok(())
}

fn read_user(ctx: &Context, name: &str) -> Result<User, Abort> {
    ctx.read_value(USERS, name.as_bytes())?.ok_or_else(|| Abort::new(format!("no user {name}")))
}

/// Takes one unit of `table`'s `id`, aborting when it is sold out.
fn take_one(ctx: &mut Context, table: Table, kind: &str, id: u64) -> Result<Vec<u8>, Abort> {
    let key = key_u64(id);
    let mut inventory: Inventory = ctx.read_value(table, &key)?.ok_or_else(|| Abort::new(format!("no {kind} {id}")))?;
    if inventory.reserved >= inventory.capacity {
        return Err(Abort::new(format!("{kind} {id} is sold out")));
    }
    inventory.reserved += 1;
    ctx.write_value(table, &key, &inventory)?;
    encode(&inventory.reserved)
}

fn check_user(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Reserve = ctx.arguments()?;
    read_user(ctx, &args.user)?;
    encode(&())
}

fn reserve_hotel(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Reserve = ctx.arguments()?;
    take_one(ctx, HOTELS, "hotel", args.hotel)
}

fn reserve_flight(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Reserve = ctx.arguments()?;
    take_one(ctx, FLIGHTS, "flight", args.flight)
}

fn record_reservation(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Reserve = ctx.arguments()?;
    let mut user = read_user(ctx, &args.user)?;
    let reservation = Reservation { hotel: args.hotel, flight: args.flight };
    user.reservations.push(reservation);
    ctx.write_value(USERS, args.user.as_bytes(), &user)?;
    encode(&Reserved { reservation, user_reservations: user.reservations.len() as u64 })
}

/// The ids of `ids` with room left, best rated first, then cheapest, then lowest id.
fn rank(ctx: &Context, table: Table, ids: &[u64]) -> Result<Vec<u64>, Abort> {
    let mut available = Vec::with_capacity(ids.len());
    for &id in ids {
        if let Some(inventory) = ctx.read_value::<Inventory>(table, &key_u64(id))? {
            if inventory.reserved < inventory.capacity {
                available.push((std::cmp::Reverse(inventory.rating), inventory.price, id));
            }
        }
    }
    available.sort_unstable();
    available.dedup();
    Ok(available.into_iter().take(SEARCH_RESULTS).map(|(_, _, id)| id).collect())
}

fn search(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Search = ctx.arguments()?;
    encode(&Ranking { hotels: rank(ctx, HOTELS, &args.hotels)?, flights: rank(ctx, FLIGHTS, &args.flights)? })
}

/// A fixed, varied price and rating per id, so that ranking has something to order.
fn inventory_for(id: u64, capacity: u32, base_price: u32) -> Inventory {
    Inventory { capacity, reserved: 0, price: base_price + (id * 37 % 200) as u32, rating: (id * 13 % 51) as u8 }
}

fn load(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Load = ctx.arguments()?;
    for hotel in 0..args.hotels {
        ctx.write_value(HOTELS, &key_u64(hotel), &inventory_for(hotel, args.capacity, 80))?;
    }
    for flight in 0..args.flights {
        ctx.write_value(FLIGHTS, &key_u64(flight), &inventory_for(flight, args.capacity, 150))?;
    }
    for user in 0..USER_COUNT {
        ctx.write_value(USERS, user_name(user).as_bytes(), &User::default())?;
    }
    encode(&USER_COUNT)
}

fn audit(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Audit = ctx.arguments()?;
    let inventories = |table: Table, count: u64| -> Result<Vec<Option<Inventory>>, Abort> {
        (0..count).map(|id| ctx.read_value(table, &key_u64(id))).collect()
    };
    let hotels = inventories(HOTELS, args.hotels)?;
    let flights = inventories(FLIGHTS, args.flights)?;
    let users =
        (0..USER_COUNT).map(|user| ctx.read_value(USERS, user_name(user).as_bytes())).collect::<Result<_, _>>()?;
    encode(&AuditReport { hotels, flights, users })
}

export_plugin!(|| {
    Plugin::new("travel", env!("CARGO_PKG_VERSION"))
        .table(HOTELS, "hotels", 64)
        .table(FLIGHTS, "flights", 64)
        .table(USERS, "users", USER_BYTES_MAX)
        .function("check_user", check_user)
        .function("reserve_hotel", reserve_hotel)
        .function("reserve_flight", reserve_flight)
        .function("record_reservation", record_reservation)
        .function("search", search)
        .function("load", load)
        .function("audit", audit)
        .workflow::<Reserve, Reserved>("reserve", |args, plan| {
            plan.write(USERS, args.user.as_bytes());
            plan.write(HOTELS, &key_u64(args.hotel));
            plan.write(FLIGHTS, &key_u64(args.flight));
            Ok(())
        })
        .step("check_user", &[])
        // Hotel and flight are independent steps; the engine may run them in parallel.
        .step("reserve_hotel", &["check_user"])
        .step("reserve_flight", &["check_user"])
        .step("record_reservation", &["reserve_hotel", "reserve_flight"])
        .done()
        .workflow::<Search, Ranking>("search", |args, plan| {
            if args.hotels.len() > SEARCH_MAX || args.flights.len() > SEARCH_MAX {
                return Err(Abort::new(format!("search names at most {SEARCH_MAX} hotels and {SEARCH_MAX} flights")));
            }
            for hotel in &args.hotels {
                plan.read(HOTELS, &key_u64(*hotel));
            }
            for flight in &args.flights {
                plan.read(FLIGHTS, &key_u64(*flight));
            }
            Ok(())
        })
        .step("search", &[])
        .done()
        .workflow::<Load, u64>("load", |args, plan| {
            check_inventory_count(args.hotels)?;
            check_inventory_count(args.flights)?;
            for hotel in 0..args.hotels {
                plan.write(HOTELS, &key_u64(hotel));
            }
            for flight in 0..args.flights {
                plan.write(FLIGHTS, &key_u64(flight));
            }
            for user in 0..USER_COUNT {
                plan.write(USERS, user_name(user).as_bytes());
            }
            Ok(())
        })
        .step("load", &[])
        .done()
        .workflow::<Audit, AuditReport>("audit", |args, plan| {
            check_inventory_count(args.hotels)?;
            check_inventory_count(args.flights)?;
            for hotel in 0..args.hotels {
                plan.read(HOTELS, &key_u64(hotel));
            }
            for flight in 0..args.flights {
                plan.read(FLIGHTS, &key_u64(flight));
            }
            for user in 0..USER_COUNT {
                plan.read(USERS, user_name(user).as_bytes());
            }
            Ok(())
        })
        .step("audit", &[])
        .done()
});
