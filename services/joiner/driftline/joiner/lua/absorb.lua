-- Phase 1 of a batch: store each arrival in its request's hash, in order, then
-- claim the work the batch made possible and note it in the outboxes.
--
-- ARGV: now, deadline (now + window), grace, ttl, state prefix, pending zset,
--       outbox prefix, batch token, outbox `from`,
--       msgpack [[request id, field ('p:<variant>' or 'o'), JSON, source], ...]
-- Returns msgpack [statuses, [expired predictions, expired outcomes], claims]:
--   statuses  one per arrival: 0 new, 1 duplicate, 2 late (after the window)
--   claims    {request id: [hash, [claimed fields], source]}
-- Outbox of a source: a list of "token<TAB>request id<TAB>field,field..." entries,
-- `<outbox>:from` (where in the labeled topic to look for its examples) and
-- `<outbox>:q:<token>` (set while the batch's counters are not added yet).
local now = tonumber(ARGV[1])
local deadline = ARGV[2]
local grace = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local prefix = ARGV[5]
local pending = ARGV[6]
local outbox_prefix = ARGV[7]
local token = ARGV[8]
local outbox_from = ARGV[9]
local arrivals = cmsgpack.unpack(ARGV[10])

local tally = { predictions = 0, outcomes = 0 }
local statuses = {}
local hashes = {}   -- request id -> its hash as this script has left it
local source_of = {} -- request id -> source of its last arrival in the batch
local order = {}
local created = {}  -- ids whose hash this batch created: they wait in `pending`

for n, arrival in ipairs(arrivals) do
  local id, field, payload = arrival[1], arrival[2], arrival[3]
  local key = prefix .. id
  local h = hashes[id]
  if not h then
    h = to_map(redis.call('HGETALL', key))
    hashes[id] = h
    order[#order + 1] = id
  end
  source_of[id] = arrival[4]
  local t = tonumber(h['t'])
  if t and now > t then
    if not h['x'] then
      account_expiry(h, key, id, pending, tally)
    end
    -- Past the grace period the old request is forgotten and this arrival starts
    -- a new one. (Claims of a crashed batch are settled from its outbox by the
    -- next owner of its source, before that source is read again.)
    if now > t + grace then
      redis.call('DEL', key)
      h = {}
      hashes[id] = h
      t = nil
    end
  end
  if not t then
    redis.call('HSET', key, 't', deadline, field, payload)
    redis.call('EXPIRE', key, ttl)
    created[#created + 1] = id
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

-- Many members per call: one round of argument handling instead of one per id.
local function each_chunk(list, size, fn)
  for first = 1, #list, size do
    fn(unpack(list, first, math.min(first + size - 1, #list)))
  end
end

local scored = {}
for _, id in ipairs(created) do
  scored[#scored + 1] = deadline
  scored[#scored + 1] = id
end
each_chunk(scored, 1000, function(...) redis.call('ZADD', pending, ...) end)

local claims = {}
local entries = {}  -- source -> outbox entries
local sources = {}
local emitted = {}
for _, id in ipairs(order) do
  local h = hashes[id]
  local fields, served = unclaimed(h)
  if #fields > 0 then
    redis.call('HSET', prefix .. id, unpack(fields))
    local names = {}
    for k = 1, #fields, 2 do
      h[fields[k]] = fields[k + 1]
      names[#names + 1] = fields[k]
    end
    if served then
      emitted[#emitted + 1] = id  -- the outcome is in and the example out: no expiry
    end
    local source = source_of[id]
    if not entries[source] then
      entries[source] = {}
      sources[#sources + 1] = source
    end
    table.insert(entries[source], token .. '\t' .. id .. '\t' .. table.concat(names, ','))
    claims[id] = { h, names, source }
  end
end
each_chunk(emitted, 1000, function(...) redis.call('ZREM', pending, ...) end)
for _, source in ipairs(sources) do
  local box = outbox_prefix .. source
  each_chunk(entries[source], 1000, function(...) redis.call('RPUSH', box, ...) end)
  redis.call('EXPIRE', box, ttl)
  redis.call('SET', box .. ':from', outbox_from, 'NX', 'EX', ttl)
  redis.call('SET', box .. ':q:' .. token, '1', 'EX', ttl)
end

return cmsgpack.pack({ statuses, { tally.predictions, tally.outcomes }, claims })
