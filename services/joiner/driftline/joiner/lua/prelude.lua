-- Shared by the join scripts (prepended to each one when it is loaded).
--
-- One msgpack map per request id (a plain string key: one allocation, its TTL
-- set with it) holds everything the join knows about the request:
--   t            the end of its join window (seconds since the epoch)
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
-- Batches travel as one msgpack argument and come back as one msgpack reply:
-- thousands of records cost the client one argument to write and one to read.

local function load(key)
  local blob = redis.call('GET', key)
  if blob then
    return cmsgpack.unpack(blob)
  end
  return {}
end

-- The work a request's hash holds that nobody claimed yet: scores of the
-- predictions that met the outcome, the example of the served one, the agreement
-- of stable and shadow (else candidate). Returns the claims as hash fields and
-- values, and the served variant when the example is among them.
local function unclaimed(h)
  local claims, served = {}, nil
  if h['o'] then
    for field, _ in pairs(h) do
      if string.sub(field, 1, 2) == 'p:' then
        local mark = 's:' .. string.sub(field, 3)
        if not h[mark] then
          claims[#claims + 1] = mark
          claims[#claims + 1] = '1'
        end
      end
    end
    if not h['e'] then
      served = (h['p:stable'] and 'stable') or (h['p:candidate'] and 'candidate')
      if served then
        claims[#claims + 1] = 'e'
        claims[#claims + 1] = served
      end
    end
  end
  if h['p:stable'] and not h['a'] and (h['p:shadow'] or h['p:candidate']) then
    claims[#claims + 1] = 'a'
    claims[#claims + 1] = '1'
  end
  return claims, served
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
    for field, _ in pairs(h) do
      if string.sub(field, 1, 2) == 'p:' then
        tally.predictions = tally.predictions + 1
      end
    end
  end
  h['x'] = '1'
  redis.call('ZREM', pending, id)
end
