-- Remove from the outboxes the entries of a batch whose effects are durable: the
-- first `count` entries of each (a later batch may have appended its own since).
--
-- ARGV: outbox prefix, then source, count pairs.
for i = 2, #ARGV, 2 do
  local box = ARGV[1] .. ARGV[i]
  redis.call('LTRIM', box, tonumber(ARGV[i + 1]), -1)
  if redis.call('LLEN', box) == 0 then
    redis.call('DEL', box .. ':from')
  end
end
return 1
