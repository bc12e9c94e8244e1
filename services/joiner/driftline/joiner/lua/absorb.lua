-- Phase 1 of a batch: store each arrival in its request's state, in order, then
-- claim the work the batch made possible and note it in the outboxes.
--
-- ARGV: now, deadline (now + window), grace, ttl, state prefix, pending zset,
--       outbox prefix, batch token, outbox `from`,
--       msgpack [[request id, field ('p:<variant>' or 'o'), JSON, source], ...]
-- Returns [msgpack [statuses, counts, [expired predictions, expired outcomes], claims],
--          states]:
--   statuses  one character per arrival: 0 new, 1 duplicate, 2 late (after the window)
--   counts    {'p0': n, 'p1': n, ..., 'o2': n}: arrivals by side and status
--   claims    [[request id, [claimed fields], source, length of its state], ...]
--   states    the claimed requests' states (msgpack maps), one after the other
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
local counts = {}
local states = {}    -- request id -> its state as this batch leaves it
local changed = {}   -- request id -> true when its state must be written back
local source_of = {} -- request id -> source of its last arrival in the batch
local order = {}
local created = {}   -- request id -> true when this batch started its window

local function status(n, field, code)
  statuses[n] = code
  local key = string.sub(field, 1, 1) .. code
  counts[key] = (counts[key] or 0) + 1
end

for n, arrival in ipairs(arrivals) do
  local id, field, payload = arrival[1], arrival[2], arrival[3]
  local key = prefix .. id
  local h = states[id]
  local started = false
  source_of[id] = arrival[4]
  if not h then
    -- A served prediction usually starts its request: try that first, in one
    -- command. (Other arrivals usually find their request started.)
    if field == 'p:stable' or field == 'p:candidate' then
      local fresh = { t = deadline }
      fresh[field] = payload
      started = redis.call('SET', key, cmsgpack.pack(fresh), 'NX', 'EX', ttl)
    end
    if started then
      h = { t = deadline }
      h[field] = payload
      created[id] = true
      status(n, field, '0')
    else
      h = load(key)
    end
    states[id] = h
    order[#order + 1] = id
  end
  if not started then
    local t = tonumber(h['t'])
    if t and now > t then
      if not h['x'] then
        account_expiry(h, id, pending, tally)
        changed[id] = true
      end
      -- Past the grace period the old request is forgotten and this arrival starts
      -- a new one. (Claims of a crashed batch are settled from its outbox by the
      -- next owner of its source, before that source is read again.)
      if now > t + grace then
        h = {}
        states[id] = h
        t = nil
      end
    end
    if not t then
      created[id] = true
      h['t'] = deadline
      h[field] = payload
      changed[id] = true
      status(n, field, '0')
    elseif now > t then
      local late = 'l' .. field
      if h[field] or h[late] then
        status(n, field, '1')
      else
        h[late] = payload
        changed[id] = true
        status(n, field, '2')
      end
    elseif h[field] then
      status(n, field, '1')
    else
      h[field] = payload
      changed[id] = true
      status(n, field, '0')
    end
  end
end

-- Many members per call: one round of argument handling instead of one per id.
local function each_chunk(list, size, fn)
  for first = 1, #list, size do
    fn(unpack(list, first, math.min(first + size - 1, #list)))
  end
end

local claims = {}
local blobs = {}
local entries = {}  -- source -> outbox entries
local sources = {}
local emitted = {}
local waiting = {}  -- deadline, id pairs for `pending`
for _, id in ipairs(order) do
  local h = states[id]
  local fields, served = unclaimed(h)
  local names = {}
  for k = 1, #fields, 2 do
    h[fields[k]] = fields[k + 1]
    names[#names + 1] = fields[k]
  end
  if created[id] then
    waiting[#waiting + 1] = deadline
    waiting[#waiting + 1] = id
  end
  if changed[id] or #names > 0 then
    local blob = cmsgpack.pack(h)
    if created[id] then
      redis.call('SET', prefix .. id, blob, 'EX', ttl)
    else
      redis.call('SET', prefix .. id, blob, 'KEEPTTL')
    end
    if #names > 0 then
      if served then
        emitted[#emitted + 1] = id  -- the outcome is in and the example out: no expiry
      end
      local source = source_of[id]
      if not entries[source] then
        entries[source] = {}
        sources[#sources + 1] = source
      end
      table.insert(entries[source], token .. '\t' .. id .. '\t' .. table.concat(names, ','))
      claims[#claims + 1] = { id, names, source, #blob }
      blobs[#blobs + 1] = blob
    end
  end
end

each_chunk(waiting, 1000, function(...) redis.call('ZADD', pending, ...) end)
each_chunk(emitted, 1000, function(...) redis.call('ZREM', pending, ...) end)
for _, source in ipairs(sources) do
  local box = outbox_prefix .. source
  each_chunk(entries[source], 1000, function(...) redis.call('RPUSH', box, ...) end)
  redis.call('EXPIRE', box, ttl)
  redis.call('SET', box .. ':from', outbox_from, 'NX', 'EX', ttl)
  redis.call('SET', box .. ':q:' .. token, '1', 'EX', ttl)
end

return { cmsgpack.pack({ table.concat(statuses), counts, { tally.predictions, tally.outcomes },
                        claims }),
         table.concat(blobs) }
