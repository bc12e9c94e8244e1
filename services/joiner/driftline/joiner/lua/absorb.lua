-- Phase 1 of a batch: store each arrival in its request's hash, in order.
--
-- ARGV: now, deadline (now + window), grace, ttl, state prefix, pending zset,
--       msgpack [[request id, field ('p:<variant>' or 'o'), JSON], ...]
-- Returns msgpack [statuses, [expired predictions, expired outcomes], states]:
--   statuses  one per arrival: 0 new, 1 duplicate, 2 late (after the window)
--   states    {request id: hash} for each touched request that has work to settle
local now = tonumber(ARGV[1])
local deadline = ARGV[2]
local grace = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local prefix = ARGV[5]
local pending = ARGV[6]
local arrivals = cmsgpack.unpack(ARGV[7])

local tally = { predictions = 0, outcomes = 0 }
local statuses = {}
local hashes = {}   -- request id -> its hash as this script has left it
local order = {}

for n, arrival in ipairs(arrivals) do
  local id, field, payload = arrival[1], arrival[2], arrival[3]
  local key = prefix .. id
  local h = hashes[id]
  if not h then
    h = to_map(redis.call('HGETALL', key))
    hashes[id] = h
    order[#order + 1] = id
  end
  local t = tonumber(h['t'])
  if t and now > t then
    if not h['x'] then
      account_expiry(h, key, id, pending, tally)
    end
    -- Past the grace period the old request is forgotten and this arrival starts
    -- a new one; unless it still holds a join that a crashed batch did not settle
    -- (its replay, maybe this very arrival, settles it first).
    if now > t + grace and not has_work(h) then
      redis.call('DEL', key)
      h = {}
      hashes[id] = h
      t = nil
    end
  end
  if not t then
    redis.call('HSET', key, 't', deadline, field, payload)
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', pending, deadline, id)
    h['t'] = deadline
    h[field] = payload
    statuses[n] = 0
  elseif now > t then
    local late = 'l' .. field
    if h[field] or h[late] then
      statuses[n] = 1
    else
      redis.call('HSET', key, late, payload)
      h[late] = payload
      statuses[n] = 2
    end
  elseif h[field] then
    statuses[n] = 1
  else
    redis.call('HSET', key, field, payload)
    h[field] = payload
    statuses[n] = 0
  end
end

local states = {}
for _, id in ipairs(order) do
  if has_work(hashes[id]) then
    states[id] = hashes[id]
  end
end

return cmsgpack.pack({ statuses, { tally.predictions, tally.outcomes }, states })
