-- Phase 1 of a batch: store each arrival in its request's state, in order, then
-- claim the work the batch made possible and name it in the outboxes.
--
-- ARGV: now, deadline (now + window), grace, ttl, state prefix, pending zset,
--       outbox prefix, batch token, outbox `from`, the arrivals: msgpack
--       [request id, field ('p:<variant>' or 'o'), JSON, source, request id, ...]
--       (flat: one Lua table for the batch, not one per arrival)
-- Returns {msgpack [statuses, counts, expired predictions, expired outcomes],
--          msgpack array of the claimed requests' states,
--          then per source with claims: the source, its outbox entry}
--   statuses  one character per arrival: 0 new, 1 duplicate, 2 late (after the window)
--   counts    {'p0': n, 'p1': n, ..., 'o2': n}: arrivals by side and status
-- Outbox of a source: a list with one entry per batch, msgpack
-- [token, request id, claimed fields ('s:stable,e'), request id, ...] (the states
-- come in the same order); `<outbox>:from` (where in the labeled topic to look for
-- its examples) and `<outbox>:q:<token>` (set while the batch's counters are not
-- added yet).
local now = tonumber(ARGV[1])
local deadline = ARGV[2]  -- as given, for `pending` scores (a number prints rounded)
local ends = tonumber(deadline)
local grace = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local prefix = ARGV[5]
local pending = ARGV[6]
local outbox_prefix = ARGV[7]
local token = ARGV[8]
local outbox_from = ARGV[9]
local arrivals = cmsgpack.unpack(ARGV[10])
-- (Lists are appended to with their own counters: `#list` searches for the end.)

-- The requests of the batch, each once, read in one MGET: a request's arrivals
-- usually come in different batches, so most of them find their state in Redis.
local ids, keys, slot, requests = {}, {}, {}, 0
for i = 1, #arrivals, 4 do
  local id = arrivals[i]
  if not slot[id] then
    requests = requests + 1
    ids[requests] = id
    keys[requests] = prefix .. id
    slot[id] = requests
  end
end
local stored, read = {}, 0
each_chunk(keys, function(...)
  for _, blob in ipairs(redis.call('MGET', ...)) do
    read = read + 1
    stored[read] = blob  -- false when the request is new
  end
end)

-- What a batch did to a request's state, by slot (bits, one table for all).
local CHANGED = 1  -- the state must be written back
local GREW = 2     -- a record joined it: there may be work to claim
local STARTED = 4  -- this batch started the request's window (a new key, or a
                   -- forgotten one's id reused)
local COUNTED = { p = { ['0'] = 'p0', ['1'] = 'p1', ['2'] = 'p2' },
                  o = { ['0'] = 'o0', ['1'] = 'o1', ['2'] = 'o2' } }

local tally = { predictions = 0, outcomes = 0 }
local statuses = {}
local counts = {}
local states = {}    -- slot -> the request's state as this batch leaves it
local did = {}       -- slot -> bits above
local source_of = {} -- slot -> source of its last arrival in the batch

local n = 0
for i = 1, #arrivals, 4 do
  n = n + 1
  local field, payload = arrivals[i + 1], arrivals[i + 2]
  local k = slot[arrivals[i]]
  local h = states[k]
  if not h then
    h = stored[k] and cmsgpack.unpack(stored[k]) or {}
    states[k] = h
    did[k] = 0
  end
  source_of[k] = arrivals[i + 3]
  local t = tonumber(h['t'])
  if t and now > t then
    if not h['x'] then
      account_expiry(h, ids[k], pending, tally)
      did[k] = bit.bor(did[k], CHANGED)
    end
    -- Past the grace period the old request is forgotten and this arrival starts
    -- a new one. (Claims of a crashed batch are settled from its outbox by the
    -- next owner of its source, before that source is read again.)
    if now > t + grace then
      h = {}
      states[k] = h
      t = nil
    end
  end
  local code
  if not t then
    h['t'] = ends
    h[field] = payload
    did[k] = CHANGED + GREW + STARTED
    code = '0'
  elseif now > t then
    local late = 'l' .. field
    if h[field] or h[late] then
      code = '1'
    else
      h[late] = payload
      did[k] = bit.bor(did[k], CHANGED)
      code = '2'
    end
  elseif h[field] then
    code = '1'
  else
    h[field] = payload
    did[k] = bit.bor(did[k], CHANGED + GREW)
    code = '0'
  end
  statuses[n] = code
  local key = COUNTED[field == 'o' and 'o' or 'p'][code]
  counts[key] = (counts[key] or 0) + 1
end

local waiting, nwaiting = {}, 0  -- deadline, id pairs for `pending`
local emitted, nemitted = {}, 0  -- ids that no longer wait: the example is out
local entries = {}  -- source -> its outbox entry
local claimed = {}  -- source -> the states of its claimed requests
local sources = {}
for k = 1, requests do
  local flags = did[k]
  if bit.band(flags, CHANGED) ~= 0 then
    local id, h = ids[k], states[k]
    local names, example = nil, false
    if bit.band(flags, GREW) ~= 0 then
      names, example = claim(h)
    end
    local blob = cmsgpack.pack(h)
    local started = bit.band(flags, STARTED) ~= 0
    if started then
      redis.call('SET', keys[k], blob, 'EX', ttl)
    else
      redis.call('SET', keys[k], blob, 'KEEPTTL')
    end
    if started and not example then
      waiting[nwaiting + 1] = deadline
      waiting[nwaiting + 2] = id
      nwaiting = nwaiting + 2
    elseif example and not started then
      nemitted = nemitted + 1
      emitted[nemitted] = id
    end
    if names then
      local source = source_of[k]
      local entry = entries[source]
      if not entry then
        entry = { token }
        entries[source] = entry
        claimed[source] = {}
        sources[#sources + 1] = source
      end
      local size = #entry  -- the token, then two per claim
      entry[size + 1] = id
      entry[size + 2] = names
      claimed[source][(size + 1) / 2] = blob
    end
  end
end

each_chunk(waiting, function(...) redis.call('ZADD', pending, ...) end)
each_chunk(emitted, function(...) redis.call('ZREM', pending, ...) end)

-- The claimed states go back as one msgpack array: their blobs one after the
-- other behind an array header, so the client decodes them all in one call.
local reply = { '', '' }
local blobs = { '' }  -- the header goes first, once the count is known
for _, source in ipairs(sources) do
  local box = outbox_prefix .. source
  local entry = cmsgpack.pack(entries[source])
  redis.call('RPUSH', box, entry)
  redis.call('EXPIRE', box, ttl)
  redis.call('SET', box .. ':from', outbox_from, 'NX', 'EX', ttl)
  redis.call('SET', box .. ':q:' .. token, '1', 'EX', ttl)
  reply[#reply + 1] = source
  reply[#reply + 1] = entry
  for _, blob in ipairs(claimed[source]) do
    blobs[#blobs + 1] = blob
  end
end
blobs[1] = struct.pack('>BI4', 0xdd, #blobs - 1)
reply[1] = cmsgpack.pack({ table.concat(statuses), counts, tally.predictions, tally.outcomes })
reply[2] = table.concat(blobs)
return reply
