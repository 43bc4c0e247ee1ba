-- The PostgreSQL peer's schema and transfer (run by benches/src/peers/postgres.rs on a
-- fresh cluster): the same logic as the `transfer` workflows of plugins/banking and
-- plugins/ycsb-t, as one function call per transaction.
--
--   SELECT transfer(from_id, to_id, amount)
--
-- Returns true when the transfer committed and false when it aborted because from_id
-- holds less than amount (a logic abort, which writes nothing). A missing account or a
-- negative amount raises an error. The server runs every transaction at SERIALIZABLE
-- (default_transaction_isolation); the client retries serialization failures.

CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    balance bigint NOT NULL
);

CREATE FUNCTION transfer(from_id bigint, to_id bigint, amount bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    locked bigint;
    from_balance bigint;
BEGIN
    IF amount < 0 THEN
        RAISE EXCEPTION 'amount must not be negative';
    END IF;
    -- Lock both rows in id order: two opposite transfers then queue on the first row
    -- instead of deadlocking, which PostgreSQL would notice only after deadlock_timeout
    -- (1 s) and which would make the peer look slower than a careful user makes it.
    PERFORM 1 FROM accounts WHERE id IN (from_id, to_id) ORDER BY id FOR UPDATE;
    GET DIAGNOSTICS locked = ROW_COUNT;
    -- Parenthesized: PL/pgSQL ends an IF condition at the first THEN.
    IF locked <> (CASE WHEN from_id = to_id THEN 1 ELSE 2 END) THEN
        RAISE EXCEPTION 'no account % or no account %', from_id, to_id;
    END IF;
    SELECT balance INTO from_balance FROM accounts WHERE id = from_id;
    IF from_balance < amount THEN
        RETURN false;
    END IF;
    UPDATE accounts SET balance = balance - amount WHERE id = from_id;
    UPDATE accounts SET balance = balance + amount WHERE id = to_id;
    RETURN true;
END
$$;
