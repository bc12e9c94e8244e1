-- Phase 2 of a batch: set the markers of the joins phase 1 found, and add the
-- counters of exactly those markers that were not set before, in one step.
--
-- ARGV: state prefix, pending zset, counter retention, outbox ttl, outbox `from`,
--       F, F quality field names, Q, Q quality counter keys, A, A agreement keys,
--       then items:
--         'q', id, variant, quality key index, F values   score one prediction
--         'a', id, agreement key index, agreed (0|1)       count shadow agreement
--         'e', id, variant, outbox key                      emit the labeled example
-- Returns one flag per item: 1 when it took effect now, 0 when it had already.
local prefix = ARGV[1]
local pending = ARGV[2]
local retention = tonumber(ARGV[3])
local outbox_ttl = tonumber(ARGV[4])
local outbox_from = ARGV[5]

local i = 6
local nfields = tonumber(ARGV[i])
local fields = {}
for k = 1, nfields do fields[k] = ARGV[i + k] end
i = i + nfields + 1
local nquality = tonumber(ARGV[i])
local quality_keys = {}
for k = 1, nquality do quality_keys[k] = ARGV[i + k] end
i = i + nquality + 1
local nagreement = tonumber(ARGV[i])
local agreement_keys = {}
for k = 1, nagreement do agreement_keys[k] = ARGV[i + k] end
i = i + nagreement + 1

local quality_sums = {}    -- key index -> {field index -> sum}
local agreement_sums = {}  -- key index -> {compared, agreed}
local outboxes = {}        -- outbox key -> {request ids}
local outbox_order = {}
local flags = {}

while i <= #ARGV do
  local kind, id = ARGV[i], ARGV[i + 1]
  local key = prefix .. id
  if kind == 'q' then
    local group = tonumber(ARGV[i + 3])
    if redis.call('HSETNX', key, 's:' .. ARGV[i + 2], '1') == 1 then
      local sums = quality_sums[group]
      if not sums then
        sums = {}
        for k = 1, nfields do sums[k] = 0 end
        quality_sums[group] = sums
      end
      for k = 1, nfields do sums[k] = sums[k] + tonumber(ARGV[i + 3 + k]) end
      flags[#flags + 1] = 1
    else
      flags[#flags + 1] = 0
    end
    i = i + 4 + nfields
  elseif kind == 'a' then
    local group = tonumber(ARGV[i + 2])
    if redis.call('HSETNX', key, 'a', '1') == 1 then
      local sums = agreement_sums[group] or { 0, 0 }
      sums[1] = sums[1] + 1
      sums[2] = sums[2] + tonumber(ARGV[i + 3])
      agreement_sums[group] = sums
      flags[#flags + 1] = 1
    else
      flags[#flags + 1] = 0
    end
    i = i + 4
  elseif kind == 'e' then
    local box = ARGV[i + 3]
    if redis.call('HSETNX', key, 'e', ARGV[i + 2]) == 1 then
      -- The outcome is in and the example is out: nothing left to expire.
      redis.call('ZREM', pending, id)
      if not outboxes[box] then
        outboxes[box] = {}
        outbox_order[#outbox_order + 1] = box
      end
      table.insert(outboxes[box], id)
      flags[#flags + 1] = 1
    else
      flags[#flags + 1] = 0
    end
    i = i + 4
  else
    return redis.error_reply('unknown settle item ' .. tostring(kind))
  end
end

local function add(key, field, value)
  if value ~= 0 then
    redis.call('HINCRBYFLOAT', key, field, string.format('%.17g', value))
  end
end

for group, sums in pairs(quality_sums) do
  local key = quality_keys[group]
  for k = 1, nfields do add(key, fields[k], sums[k]) end
  redis.call('EXPIRE', key, retention)
end
for group, sums in pairs(agreement_sums) do
  local key = agreement_keys[group]
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

return flags
