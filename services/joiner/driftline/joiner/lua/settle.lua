-- Phase 2 of a batch: set the markers of the joins phase 1 found, and add the
-- counters of exactly those markers that were not set before, in one step.
--
-- ARGV: state prefix, pending zset, counter retention, outbox ttl, outbox `from`,
--       msgpack [quality fields, quality counter keys, agreement keys, items]
--       items:
--         ['q', id, variant, quality key index, [values]]   score one prediction
--         ['a', id, agreement key index, agreed (0|1)]      count shadow agreement
--         ['e', id, variant, outbox key]                    emit the labeled example
-- Returns one character per item: '1' when it took effect now, '0' when it had
-- already (a replay, or another replica).
local prefix = ARGV[1]
local pending = ARGV[2]
local retention = tonumber(ARGV[3])
local outbox_ttl = tonumber(ARGV[4])
local outbox_from = ARGV[5]
local batch = cmsgpack.unpack(ARGV[6])
local fields, quality_keys, agreement_keys, items = batch[1], batch[2], batch[3], batch[4]

local quality_sums = {}    -- key index -> {sum per field}
local agreement_sums = {}  -- key index -> {compared, agreed}
local outboxes = {}        -- outbox key -> {request ids}
local outbox_order = {}
local flags = {}

for n, item in ipairs(items) do
  local kind, id = item[1], item[2]
  local key = prefix .. id
  flags[n] = '0'
  if kind == 'q' then
    if redis.call('HSETNX', key, 's:' .. item[3], '1') == 1 then
      local sums = quality_sums[item[4]]
      if not sums then
        sums = {}
        for k = 1, #fields do sums[k] = 0 end
        quality_sums[item[4]] = sums
      end
      local values = item[5]
      for k = 1, #fields do sums[k] = sums[k] + values[k] end
      flags[n] = '1'
    end
  elseif kind == 'a' then
    if redis.call('HSETNX', key, 'a', '1') == 1 then
      local sums = agreement_sums[item[3]] or { 0, 0 }
      sums[1] = sums[1] + 1
      sums[2] = sums[2] + item[4]
      agreement_sums[item[3]] = sums
      flags[n] = '1'
    end
  elseif kind == 'e' then
    if redis.call('HSETNX', key, 'e', item[3]) == 1 then
      -- The outcome is in and the example is out: nothing left to expire.
      redis.call('ZREM', pending, id)
      local box = item[4]
      if not outboxes[box] then
        outboxes[box] = {}
        outbox_order[#outbox_order + 1] = box
      end
      table.insert(outboxes[box], id)
      flags[n] = '1'
    end
  else
    return redis.error_reply('unknown settle item ' .. tostring(kind))
  end
end

local function add(key, field, value)
  if value ~= 0 then
    redis.call('HINCRBYFLOAT', key, field, string.format('%.17g', value))
  end
end

for index, sums in pairs(quality_sums) do
  local key = quality_keys[index]
  for k = 1, #fields do add(key, fields[k], sums[k]) end
  redis.call('EXPIRE', key, retention)
end
for index, sums in pairs(agreement_sums) do
  local key = agreement_keys[index]
  add(key, 'compared', sums[1])
  add(key, 'agreed', sums[2])
  redis.call('EXPIRE', key, retention)
end

-- The outbox remembers the examples this batch owes the labeled topic until the
-- caller has them durably there; `from` says where in that topic to look for them.
for _, box in ipairs(outbox_order) do
  local ids = outboxes[box]
  for first = 1, #ids, 1000 do
    redis.call('RPUSH', box, unpack(ids, first, math.min(first + 999, #ids)))
  end
  redis.call('EXPIRE', box, outbox_ttl)
  redis.call('SET', box .. ':from', outbox_from, 'NX', 'EX', outbox_ttl)
end

return table.concat(flags)
