-- Keep a segment's values apart up to its cap, first come first served, across
-- every joiner replica: a value is admitted if it is in the segment's set, or if
-- the set has room (then it joins it). Admission only grows while the set lives;
-- each call keeps the set for the counters' retention.
--
-- ARGV: retention, msgpack [[set key, cap, [value, ...]], ...]
-- Returns msgpack [[admitted value, ...], ...], one list per set.
local retention = tonumber(ARGV[1])
local asks = cmsgpack.unpack(ARGV[2])
local answers = {}
for n, ask in ipairs(asks) do
  local key, cap, admitted = ask[1], tonumber(ask[2]), {}
  local size = redis.call('SCARD', key)
  for _, value in ipairs(ask[3]) do
    if redis.call('SISMEMBER', key, value) == 1 then
      admitted[#admitted + 1] = value
    elseif size < cap then
      redis.call('SADD', key, value)
      size = size + 1
      admitted[#admitted + 1] = value
    end
  end
  if size > 0 then
    redis.call('EXPIRE', key, retention)
  end
  answers[n] = admitted
end
return cmsgpack.pack(answers)
