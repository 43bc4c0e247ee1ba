//! The banking workload (the RTSFaaS banking service, see shared WORKLOADS.md).
//!
//! One table, `accounts`, holds each account's balance as a little-endian `i64` under the
//! big-endian account number. `transfer` is the two-function workflow
//! withdraw(from) => deposit(to): withdraw aborts when the balance would go negative,
//! which aborts the whole transaction. The invariant the tests check: transfers never
//! change the sum of all balances.

pub use leasehold_plugin_api::banking::*;
use leasehold_sdk::prelude::*;

pub const ACCOUNTS: Table = Table(0);

fn check_range(first: u64, count: u64) -> Result<(), Abort> {
    if count == 0 || count > RANGE_MAX || first.checked_add(count).is_none() {
        return Err(Abort::new(format!("count must be in 1..={RANGE_MAX} and the range must not overflow")));
    }
    Ok(())
}

fn withdraw(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Transfer = ctx.arguments()?;
    let key = key_u64(args.from);
    let balance = ctx.read_i64(ACCOUNTS, &key)?.ok_or_else(|| Abort::new(format!("no account {}", args.from)))?;
    if args.amount < 0 {
        return Err(Abort::new("amount must not be negative"));
    }
    if balance < args.amount {
        return Err(Abort::new(format!("insufficient funds in account {}", args.from)));
    }
    ctx.write_i64(ACCOUNTS, &key, balance - args.amount)?;
    encode(&(balance - args.amount))
}

fn deposit_after_withdraw(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Transfer = ctx.arguments()?;
    let key = key_u64(args.to);
    let mut from_balance: i64 = ctx.parent(0)?;
    let balance = ctx.read_i64(ACCOUNTS, &key)?.ok_or_else(|| Abort::new(format!("no account {}", args.to)))?;
    let to_balance = balance.checked_add(args.amount).ok_or_else(|| Abort::new("balance overflow"))?;
    ctx.write_i64(ACCOUNTS, &key, to_balance)?;
    if args.from == args.to {
        from_balance = to_balance;
    }
    encode(&TransferResult { from_balance, to_balance })
}

fn deposit(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Deposit = ctx.arguments()?;
    let key = key_u64(args.account);
    let balance = ctx.read_i64(ACCOUNTS, &key)?.ok_or_else(|| Abort::new(format!("no account {}", args.account)))?;
    let balance = balance.checked_add(args.amount).ok_or_else(|| Abort::new("balance overflow"))?;
    if balance < 0 {
        return Err(Abort::new(format!("insufficient funds in account {}", args.account)));
    }
    ctx.write_i64(ACCOUNTS, &key, balance)?;
    encode(&balance)
}

fn balance(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Account = ctx.arguments()?;
    encode(&ctx.read_i64(ACCOUNTS, &key_u64(args.account))?)
}

fn open(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Open = ctx.arguments()?;
    for account in args.first..args.first + args.count {
        ctx.write_i64(ACCOUNTS, &key_u64(account), args.balance)?;
    }
    encode(&args.count)
}

fn total(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Range = ctx.arguments()?;
    let mut sum: i128 = 0;
    let mut present: u64 = 0;
    for account in args.first..args.first + args.count {
        if let Some(balance) = ctx.read_i64(ACCOUNTS, &key_u64(account))? {
            sum += balance as i128;
            present += 1;
        }
    }
    encode(&(sum as i64, present))
}

export_plugin!(|| {
    Plugin::new("banking", env!("CARGO_PKG_VERSION"))
        .table(ACCOUNTS, "accounts", 8)
        .function("withdraw", withdraw)
        .function("deposit_after_withdraw", deposit_after_withdraw)
        .function("deposit", deposit)
        .function("balance", balance)
        .function("open", open)
        .function("total", total)
        .workflow::<Transfer, TransferResult>("transfer", |args, plan| {
            plan.write(ACCOUNTS, &key_u64(args.from));
            plan.write(ACCOUNTS, &key_u64(args.to));
            Ok(())
        })
        .step("withdraw", &[])
        .step("deposit_after_withdraw", &["withdraw"])
        .done()
        .workflow::<Deposit, i64>("deposit", |args, plan| {
            plan.write(ACCOUNTS, &key_u64(args.account));
            Ok(())
        })
        .step("deposit", &[])
        .done()
        .workflow::<Account, Option<i64>>("balance", |args, plan| {
            plan.read(ACCOUNTS, &key_u64(args.account));
            Ok(())
        })
        .step("balance", &[])
        .done()
        .workflow::<Open, u64>("open", |args, plan| {
            check_range(args.first, args.count)?;
            for account in args.first..args.first + args.count {
                plan.write(ACCOUNTS, &key_u64(account));
            }
            Ok(())
        })
        .step("open", &[])
        .done()
        .workflow::<Range, (i64, u64)>("total", |args, plan| {
            check_range(args.first, args.count)?;
            for account in args.first..args.first + args.count {
                plan.read(ACCOUNTS, &key_u64(account));
            }
            Ok(())
        })
        .step("total", &[])
        .done()
});
