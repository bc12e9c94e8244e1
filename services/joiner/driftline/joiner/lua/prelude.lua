-- Shared by the join scripts (prepended to each one when it is loaded).
--
-- One msgpack map per request id (a plain string key: one allocation, its TTL
-- set with it) holds everything the join knows about the request:
--   t            the end of its join window (seconds since the epoch, a number)
--   p:<variant>  a prediction that arrived inside the window (raw JSON)
--   o            the outcome, if it arrived inside the window
--   lp:<variant>, lo   the same, arrived after the window (kept to spot replays)
--   s:<variant>  claim: this variant is scored against the outcome
--   e            claim: the labeled example is emitted (value: its variant)
--   a            claim: shadow agreement is counted
--   x            marker: expiry was accounted
-- A claim is set in the same atomic step that finds the work, together with an
-- outbox entry naming it; the outbox stays until the claim's effects (counters in
-- Redis, the example in Kafka) are durable. So a replayed batch or a second
-- replica never claims anything twice, and a crash never loses a claim.
--
-- Scripts run on Redis's only thread, so their cost per record is what bounds a
-- joiner: they keep to few `redis.call`s per request (each one converts its
-- arguments and reply) and few Lua tables and strings per record (each one is an
-- allocation, and garbage the collector walks later).
--
-- VARIANTS (defined above this file when a script is loaded) lists the variants
-- of the event contract.

-- The work a request's state holds that nobody claimed yet: scores of the
-- predictions that met the outcome, the example of the served one, the agreement
-- of stable and shadow (else candidate). Sets the claims in `h`; returns their
-- names joined by commas (nil when there are none), and whether the example is
-- among them.
local PREDICTION, SCORED = {}, {}  -- field names by variant, made once
for _, variant in ipairs(VARIANTS) do
  PREDICTION[variant] = 'p:' .. variant
  SCORED[variant] = 's:' .. variant
end

-- (The names are joined as they are found: most requests claim one or two.)
local function claim(h)
  local names, emitted = nil, false
  if h['o'] then
    for _, variant in ipairs(VARIANTS) do
      local mark = SCORED[variant]
      if h[PREDICTION[variant]] and not h[mark] then
        h[mark] = '1'
        names = names and names .. ',' .. mark or mark
      end
    end
    if not h['e'] then
      local served = (h['p:stable'] and 'stable') or (h['p:candidate'] and 'candidate')
      if served then
        h['e'] = served
        names = names and names .. ',e' or 'e'
        emitted = true
      end
    end
  end
  if h['p:stable'] and not h['a'] and (h['p:shadow'] or h['p:candidate']) then
    h['a'] = '1'
    names = names and names .. ',a' or 'a'
  end
  return names, emitted
end

-- Count what the window left unjoined, once: predictions that never met an
-- outcome, and an outcome whose served prediction never came (phase 1 claims the
-- example the moment both are in, so an outcome without `e` never met one).
local function account_expiry(h, id, pending, tally)
  if h['o'] then
    if not h['e'] then
      tally.outcomes = tally.outcomes + 1
    end
  else
    for _, variant in ipairs(VARIANTS) do
      if h[PREDICTION[variant]] then
        tally.predictions = tally.predictions + 1
      end
    end
  end
  h['x'] = '1'
  redis.call('ZREM', pending, id)
end

-- Many arguments per call: one round of argument handling instead of one per item
-- (and below Lua's limit on how many values `unpack` may push).
local function each_chunk(list, fn)
  for first = 1, #list, 1000 do
    fn(unpack(list, first, math.min(first + 999, #list)))
  end
end
