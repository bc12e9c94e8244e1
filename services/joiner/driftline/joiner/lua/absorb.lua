-- Phase 1 of a batch: store each arrival in its request's hash, in order.
--
-- ARGV: now, deadline (now + window), grace, ttl, state prefix, pending zset,
--       then one triple per arrival: request id, field ('p:<variant>' or 'o'), JSON.
-- Returns {statuses, {expired predictions, expired outcomes}, states}:
--   statuses  one per arrival: 0 new, 1 duplicate, 2 late (after the window)
--   states    request id, HGETALL ... for each touched request that may have work
--             (a pair to score, an example to emit, an agreement to count)
local now = tonumber(ARGV[1])
local deadline = ARGV[2]
local grace = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local prefix = ARGV[5]
local pending = ARGV[6]

local tally = { predictions = 0, outcomes = 0 }
local statuses = {}
local fresh = {}    -- request id -> true while its only arrival created its hash
local order = {}

for i = 7, #ARGV, 3 do
  local id, field, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = prefix .. id
  local head = redis.call('HMGET', key, 't', 'x')
  local t = tonumber(head[1])
  if t and now > t then
    if not head[2] then
      account_expiry(key, id, pending, tally)
    end
    -- Past the grace period the old request is forgotten and this arrival starts
    -- a new one; unless it still holds a join that a crashed batch did not settle
    -- (its replay, maybe this very arrival, settles it first).
    if now > t + grace and not has_work(to_map(redis.call('HGETALL', key))) then
      redis.call('DEL', key)
      t = nil
    end
  end
  local status
  if not t then
    redis.call('HSET', key, 't', deadline, field, payload)
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', pending, deadline, id)
    status = 0
  elseif now > t then
    if redis.call('HEXISTS', key, field) == 1
      or redis.call('HSETNX', key, 'l' .. field, payload) == 0 then
      status = 1
    else
      status = 2
    end
  elseif redis.call('HSETNX', key, field, payload) == 1 then
    status = 0
  else
    status = 1
  end
  statuses[#statuses + 1] = status
  if fresh[id] == nil then
    order[#order + 1] = id
    fresh[id] = (t == nil)
  else
    fresh[id] = false
  end
end

local states = {}
for _, id in ipairs(order) do
  -- A hash created by this batch's only arrival for it holds one side: no work.
  if not fresh[id] then
    local flat = redis.call('HGETALL', prefix .. id)
    if has_work(to_map(flat)) then
      states[#states + 1] = id
      states[#states + 1] = flat
    end
  end
end

return { statuses, { tally.predictions, tally.outcomes }, states }
