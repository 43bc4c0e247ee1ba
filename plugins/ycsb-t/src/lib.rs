//! The YCSB-T workload (transfer, as Styx used it; see shared WORKLOADS.md).
//!
//! One table, `keys`, holds a little-endian `i64` per big-endian key number. `transfer`
//! is a single function that reads and writes both keys: it moves `amount` from `a` to
//! `b` and aborts when `a` would go negative. The sum over all keys never changes.

pub use leasehold_plugin_api::ycsb_t::*;
use leasehold_sdk::prelude::*;

pub const KEYS: Table = Table(0);

fn check_range(first: u64, count: u64) -> Result<(), Abort> {
    if count == 0 || count > RANGE_MAX || first.checked_add(count).is_none() {
        return Err(Abort::new(format!("count must be in 1..={RANGE_MAX} and the range must not overflow")));
    }
    Ok(())
}

fn transfer(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Transfer = ctx.arguments()?;
    if args.amount < 0 {
        return Err(Abort::new("amount must not be negative"));
    }
    let (key_a, key_b) = (key_u64(args.a), key_u64(args.b));
    let a = ctx.read_i64(KEYS, &key_a)?.ok_or_else(|| Abort::new(format!("no key {}", args.a)))?;
    if a < args.amount {
        return Err(Abort::new(format!("key {} would go negative", args.a)));
    }
    ctx.write_i64(KEYS, &key_a, a - args.amount)?;
    let b = ctx.read_i64(KEYS, &key_b)?.ok_or_else(|| Abort::new(format!("no key {}", args.b)))?;
    let b = b.checked_add(args.amount).ok_or_else(|| Abort::new("value overflow"))?;
    ctx.write_i64(KEYS, &key_b, b)?;
    encode(&(ctx.read_i64(KEYS, &key_a)?.unwrap_or(0), b))
}

fn load(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Load = ctx.arguments()?;
    for key in args.first..args.first + args.count {
        ctx.write_i64(KEYS, &key_u64(key), args.value)?;
    }
    encode(&args.count)
}

fn read(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Key = ctx.arguments()?;
    encode(&ctx.read_i64(KEYS, &key_u64(args.key))?)
}

fn total(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Range = ctx.arguments()?;
    let mut sum: i64 = 0;
    for key in args.first..args.first + args.count {
        sum += ctx.read_i64(KEYS, &key_u64(key))?.unwrap_or(0);
    }
    encode(&sum)
}

export_plugin!(|| {
    Plugin::new("ycsb-t", env!("CARGO_PKG_VERSION"))
        .table(KEYS, "keys", 8)
        .function("transfer", transfer)
        .function("load", load)
        .function("read", read)
        .function("total", total)
        .workflow::<Transfer, (i64, i64)>("transfer", |args, plan| {
            plan.write(KEYS, &key_u64(args.a));
            plan.write(KEYS, &key_u64(args.b));
            Ok(())
        })
        .step("transfer", &[])
        .done()
        .workflow::<Load, u64>("load", |args, plan| {
            check_range(args.first, args.count)?;
            for key in args.first..args.first + args.count {
                plan.write(KEYS, &key_u64(key));
            }
            Ok(())
        })
        .step("load", &[])
        .done()
        .workflow::<Key, Option<i64>>("read", |args, plan| {
            plan.read(KEYS, &key_u64(args.key));
            Ok(())
        })
        .step("read", &[])
        .done()
        .workflow::<Range, i64>("total", |args, plan| {
            check_range(args.first, args.count)?;
            for key in args.first..args.first + args.count {
                plan.read(KEYS, &key_u64(key));
            }
            Ok(())
        })
        .step("total", &[])
        .done()
});
