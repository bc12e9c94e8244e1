-- Account the requests whose window has ended (the clock passes `now` in).
--
-- ARGV: now, state prefix, pending zset, limit
-- Returns {expired predictions, expired outcomes, requests looked at, still pending}
local now = ARGV[1]
local prefix = ARGV[2]
local pending = ARGV[3]
local limit = tonumber(ARGV[4])

local tally = { predictions = 0, outcomes = 0 }
local ids = redis.call('ZRANGEBYSCORE', pending, '-inf', '(' .. now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  local key = prefix .. id
  local blob = redis.call('GET', key)
  local h = blob and cmsgpack.unpack(blob) or {}
  if h['t'] and not h['x'] then
    account_expiry(h, id, pending, tally)
    redis.call('SET', key, cmsgpack.pack(h), 'KEEPTTL')
  else
    -- Gone with its TTL, or already accounted by a later arrival.
    redis.call('ZREM', pending, id)
  end
end
return { tally.predictions, tally.outcomes, #ids, redis.call('ZCARD', pending) }
