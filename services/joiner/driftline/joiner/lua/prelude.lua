-- Shared by the join scripts (prepended to each one when it is loaded).
--
-- One hash per request id holds everything the join knows about it:
--   t            the end of its join window (seconds since the epoch)
--   p:<variant>  a prediction that arrived inside the window (raw JSON)
--   o            the outcome, if it arrived inside the window
--   lp:<variant>, lo   the same, arrived after the window (kept to spot replays)
--   s:<variant>  marker: this variant was scored against the outcome
--   e            marker: the labeled example was emitted (value: its variant)
--   a            marker: shadow agreement was counted
--   x            marker: expiry was accounted
-- Every marker is set with HSETNX in the same script that adds the counters it
-- guards, so a replayed batch or a second replica never counts anything twice.
--
-- Batches travel as one msgpack argument and come back as one msgpack reply:
-- thousands of records cost the client one argument to write and one to read.

local function to_map(flat)
  local map = {}
  for i = 1, #flat, 2 do
    map[flat[i]] = flat[i + 1]
  end
  return map
end

-- Whether a request's hash holds work not settled yet: a prediction to score,
-- the example to emit, an agreement to count.
local function has_work(h)
  if h['o'] then
    if not h['e'] and (h['p:stable'] or h['p:candidate']) then
      return true
    end
    for field, _ in pairs(h) do
      if string.sub(field, 1, 2) == 'p:' and not h['s:' .. string.sub(field, 3)] then
        return true
      end
    end
  end
  return h['p:stable'] ~= nil and not h['a'] and (h['p:shadow'] or h['p:candidate']) ~= nil
end

-- Count what the window left unjoined, once: predictions that never met an
-- outcome, and an outcome whose served prediction never came. A pair that is
-- present but not settled yet (a crash between the two phases) is not expired:
-- it is still joined when its batch is replayed.
local function account_expiry(h, key, id, pending, tally)
  if h['o'] then
    if not h['e'] and not h['p:stable'] and not h['p:candidate'] then
      tally.outcomes = tally.outcomes + 1
    end
  else
    for field, _ in pairs(h) do
      if string.sub(field, 1, 2) == 'p:' then
        tally.predictions = tally.predictions + 1
      end
    end
  end
  h['x'] = '1'
  redis.call('HSET', key, 'x', '1')
  redis.call('ZREM', pending, id)
end
