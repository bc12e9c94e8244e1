-- Phase 2 of a batch: add the counters of the scores and agreements phase 1
-- claimed, once: each source's share is added only if its batch flag is still
-- there, and the flag goes in the same step.
--
-- ARGV: counter retention, msgpack [[flag key, [[counter key, field, value], ...]], ...]
-- Returns one character per source: '1' added now, '0' added before.
local retention = tonumber(ARGV[1])
local shares = cmsgpack.unpack(ARGV[2])
local done = {}
local touched = {}
for n, share in ipairs(shares) do
  done[n] = '0'
  if redis.call('DEL', share[1]) == 1 then
    for _, add in ipairs(share[2]) do
      if add[3] ~= 0 then
        redis.call('HINCRBYFLOAT', add[1], add[2], string.format('%.17g', add[3]))
        touched[add[1]] = true
      end
    end
    done[n] = '1'
  end
end
for key, _ in pairs(touched) do
  redis.call('EXPIRE', key, retention)
end
return table.concat(done)
