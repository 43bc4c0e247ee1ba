#!lua name=leasehold_bench
-- The Redis peer's transfer (loaded by benches/src/peers/redis.rs with FUNCTION LOAD):
-- the same logic as the `transfer` workflows of plugins/banking and plugins/ycsb-t.
--
--   FCALL transfer 2 <from key> <to key> <amount>
--
-- Returns 1 when the transfer committed and 0 when it aborted because <from> holds less
-- than <amount> (a logic abort, which writes nothing). A missing key or a bad amount is an
-- error reply. A function runs atomically, but Redis does not undo the writes of a
-- function that fails halfway, so every check happens before the first write.

local function transfer(keys, args)
  local amount = tonumber(args[1])
  if amount == nil or amount < 0 or amount ~= math.floor(amount) then
    return redis.error_reply('amount must be a non-negative integer')
  end
  -- GET answers false for a missing key, and tonumber(false) is nil.
  local from_balance = tonumber(redis.call('GET', keys[1]))
  if from_balance == nil then
    return redis.error_reply('no account ' .. keys[1])
  end
  if redis.call('EXISTS', keys[2]) == 0 then
    return redis.error_reply('no account ' .. keys[2])
  end
  if from_balance < amount then
    return 0
  end
  -- DECRBY/INCRBY compute in 64-bit integers on the server; Lua numbers are doubles.
  redis.call('DECRBY', keys[1], args[1])
  redis.call('INCRBY', keys[2], args[1])
  return 1
end

redis.register_function('transfer', transfer)
