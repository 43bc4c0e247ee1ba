//! The SmallBank workload (FaSST/DrTM parameters, see shared WORKLOADS.md).
//!
//! Two tables, `savings` and `checking`, hold each customer's balances as little-endian
//! `i64`s under the big-endian customer id. The six transaction types follow H-Store's
//! SmallBank as OLTP-Bench, FaSST and DrTM run it:
//!
//! * `amalgamate(from, to)`: moves all of `from`'s savings and checking into `to`'s
//!   checking (drain => credit).
//! * `balance(customer)`: reads savings + checking (read-only).
//! * `deposit_checking(customer, amount)`: adds to checking.
//! * `send_payment(from, to, amount)`: checking to checking (debit => credit); aborts on
//!   insufficient funds in `from`'s checking.
//! * `transact_savings(customer, amount)`: withdraws from savings; aborts when savings
//!   would go negative.
//! * `write_check(customer, amount)`: takes `amount` from checking, plus a penalty of 1
//!   when savings + checking does not cover it (never aborts).
//!
//! Every transaction returns a [`Receipt`] whose `delta` is the change it made to the sum
//! of all balances, so the harness can check the invariant
//! `sum after == sum loaded + sum of the deltas of committed transactions`.
//! `load` and `total` fill and sum a range of customers for that check.

pub use leasehold_plugin_api::smallbank::*;
use leasehold_sdk::prelude::*;

pub const SAVINGS: Table = Table(0);
pub const CHECKING: Table = Table(1);

fn check_range(first: u64, count: u64) -> Result<(), Abort> {
    if count == 0 || count > RANGE_MAX || first.checked_add(count).is_none() {
        return Err(Abort::new(format!("count must be in 1..={RANGE_MAX} and the range must not overflow")));
    }
    Ok(())
}

fn check_amount(amount: i64) -> Result<(), Abort> {
    if amount < 0 {
        return Err(Abort::new("amount must not be negative"));
    }
    Ok(())
}

/// A customer's (savings, checking); a missing customer aborts, as SmallBank's account
/// lookup does.
fn balances(ctx: &Context, customer: u64) -> Result<(i64, i64), Abort> {
    let key = key_u64(customer);
    let missing = || Abort::new(format!("no customer {customer}"));
    let savings = ctx.read_i64(SAVINGS, &key)?.ok_or_else(missing)?;
    let checking = ctx.read_i64(CHECKING, &key)?.ok_or_else(missing)?;
    Ok((savings, checking))
}

fn add(balance: i64, amount: i64) -> Result<i64, Abort> {
    balance.checked_add(amount).ok_or_else(|| Abort::new("balance overflow"))
}

/// Adds `amount` to `customer`'s checking and returns the receipt for `delta`.
fn credit_checking(ctx: &mut Context, customer: u64, amount: i64, delta: i64) -> Result<Vec<u8>, Abort> {
    let (savings, checking) = balances(ctx, customer)?;
    let checking = add(checking, amount)?;
    ctx.write_i64(CHECKING, &key_u64(customer), checking)?;
    encode(&Receipt { delta, customer, savings, checking })
}

fn amalgamate_drain(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Amalgamate = ctx.arguments()?;
    let (savings, checking) = balances(ctx, args.from)?;
    let key = key_u64(args.from);
    ctx.write_i64(SAVINGS, &key, 0)?;
    ctx.write_i64(CHECKING, &key, 0)?;
    encode(&add(savings, checking)?)
}

fn amalgamate_credit(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Amalgamate = ctx.arguments()?;
    let moved: i64 = ctx.parent(0)?;
    credit_checking(ctx, args.to, moved, 0)
}

fn balance(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Customer = ctx.arguments()?;
    let (savings, checking) = balances(ctx, args.customer)?;
    encode(&Receipt { delta: 0, customer: args.customer, savings, checking })
}

fn deposit_checking(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: CustomerAmount = ctx.arguments()?;
    check_amount(args.amount)?;
    credit_checking(ctx, args.customer, args.amount, args.amount)
}

fn send_payment_debit(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: SendPayment = ctx.arguments()?;
    check_amount(args.amount)?;
    let (_, checking) = balances(ctx, args.from)?;
    if checking < args.amount {
        return Err(Abort::new(format!("insufficient funds in checking of customer {}", args.from)));
    }
    ctx.write_i64(CHECKING, &key_u64(args.from), checking - args.amount)?;
    encode(&())
}

fn send_payment_credit(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: SendPayment = ctx.arguments()?;
    credit_checking(ctx, args.to, args.amount, 0)
}

fn transact_savings(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: CustomerAmount = ctx.arguments()?;
    check_amount(args.amount)?;
    let (savings, checking) = balances(ctx, args.customer)?;
    if savings < args.amount {
        return Err(Abort::new(format!("insufficient funds in savings of customer {}", args.customer)));
    }
    let savings = savings - args.amount;
    ctx.write_i64(SAVINGS, &key_u64(args.customer), savings)?;
    encode(&Receipt { delta: -args.amount, customer: args.customer, savings, checking })
}

fn write_check(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: CustomerAmount = ctx.arguments()?;
    check_amount(args.amount)?;
    let (savings, checking) = balances(ctx, args.customer)?;
    // An overdraft is allowed but costs a penalty, so checking may go negative.
    let charge = if add(savings, checking)? < args.amount { add(args.amount, OVERDRAFT_PENALTY)? } else { args.amount };
    let checking = add(checking, -charge)?;
    ctx.write_i64(CHECKING, &key_u64(args.customer), checking)?;
    encode(&Receipt { delta: -charge, customer: args.customer, savings, checking })
}

fn load(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Load = ctx.arguments()?;
    for customer in args.first..args.first + args.count {
        ctx.write_i64(SAVINGS, &key_u64(customer), args.balance)?;
        ctx.write_i64(CHECKING, &key_u64(customer), args.balance)?;
    }
    encode(&args.count)
}

fn total(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Range = ctx.arguments()?;
    // i128 so that a range of large balances cannot overflow before the final check.
    let mut sum: i128 = 0;
    let mut customers = 0u64;
    for customer in args.first..args.first + args.count {
        let key = key_u64(customer);
        let savings = ctx.read_i64(SAVINGS, &key)?;
        let checking = ctx.read_i64(CHECKING, &key)?;
        if savings.is_some() || checking.is_some() {
            customers += 1;
        }
        sum += i128::from(savings.unwrap_or(0)) + i128::from(checking.unwrap_or(0));
    }
    let sum = i64::try_from(sum).map_err(|_| Abort::new("total does not fit in an i64"))?;
    encode(&Total { sum, customers })
}

/// Declares reads (or writes) of both balances of `customer`.
fn plan_customer(plan: &mut Plan, customer: u64, write_savings: bool, write_checking: bool) {
    let key = key_u64(customer);
    if write_savings {
        plan.write(SAVINGS, &key);
    } else {
        plan.read(SAVINGS, &key);
    }
    if write_checking {
        plan.write(CHECKING, &key);
    } else {
        plan.read(CHECKING, &key);
    }
}

export_plugin!(|| {
    Plugin::new("smallbank", env!("CARGO_PKG_VERSION"))
        .table(SAVINGS, "savings", 8)
        .table(CHECKING, "checking", 8)
        .function("amalgamate_drain", amalgamate_drain)
        .function("amalgamate_credit", amalgamate_credit)
        .function("balance", balance)
        .function("deposit_checking", deposit_checking)
        .function("send_payment_debit", send_payment_debit)
        .function("send_payment_credit", send_payment_credit)
        .function("transact_savings", transact_savings)
        .function("write_check", write_check)
        .function("load", load)
        .function("total", total)
        .workflow::<Amalgamate, Receipt>("amalgamate", |args, plan| {
            plan_customer(plan, args.from, true, true);
            plan_customer(plan, args.to, args.from == args.to, true);
            Ok(())
        })
        .step("amalgamate_drain", &[])
        .step("amalgamate_credit", &["amalgamate_drain"])
        .done()
        .workflow::<Customer, Receipt>("balance", |args, plan| {
            plan_customer(plan, args.customer, false, false);
            Ok(())
        })
        .step("balance", &[])
        .done()
        .workflow::<CustomerAmount, Receipt>("deposit_checking", |args, plan| {
            plan_customer(plan, args.customer, false, true);
            Ok(())
        })
        .step("deposit_checking", &[])
        .done()
        .workflow::<SendPayment, Receipt>("send_payment", |args, plan| {
            // The debit step reads `from`'s savings only to check the customer exists.
            plan_customer(plan, args.from, false, true);
            plan_customer(plan, args.to, false, true);
            Ok(())
        })
        .step("send_payment_debit", &[])
        .step("send_payment_credit", &["send_payment_debit"])
        .done()
        .workflow::<CustomerAmount, Receipt>("transact_savings", |args, plan| {
            plan_customer(plan, args.customer, true, false);
            Ok(())
        })
        .step("transact_savings", &[])
        .done()
        .workflow::<CustomerAmount, Receipt>("write_check", |args, plan| {
            plan_customer(plan, args.customer, false, true);
            Ok(())
        })
        .step("write_check", &[])
        .done()
        .workflow::<Load, u64>("load", |args, plan| {
            check_range(args.first, args.count)?;
            for customer in args.first..args.first + args.count {
                plan_customer(plan, customer, true, true);
            }
            Ok(())
        })
        .step("load", &[])
        .done()
        .workflow::<Range, Total>("total", |args, plan| {
            check_range(args.first, args.count)?;
            for customer in args.first..args.first + args.count {
                plan_customer(plan, customer, false, false);
            }
            Ok(())
        })
        .step("total", &[])
        .done()
});
