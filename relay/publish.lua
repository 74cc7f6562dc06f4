-- Publishes a batch of progress events in one call, atomically.
--
-- Built by relay.streams.publish_args; every publisher (the gateway's HTTP
-- path and the Python reporters) runs this same script, so an entry has the
-- same shape whoever wrote it. The events travel as one JSON argument: the
-- client packs three arguments per batch instead of a dozen per event.
--
-- ARGV[1] MAXLEN of each stream (approximate trimming)
-- ARGV[2] seconds a pending-cancel flag lives
-- ARGV[3] the workflow type registry (a set)
-- ARGV[4] the announcements stream, ARGV[5] its MAXLEN
-- ARGV[6] JSON: [[stream key, cancel key, cancel action, [field, value, ...]], ...]
--         where the action is "set" (cancel_requested), "del" (terminal) or ""
-- ARGV[7] JSON: the batch's distinct workflow types
--
-- Returns every event's stream id, then for every event 1 or 0: whether its
-- session's cancellation was pending before this batch.
local unpack = table.unpack or unpack
local events = cjson.decode(ARGV[6])
local count = #events
local answer = {}
for i = 1, count do
  local event = events[i]
  answer[i] = redis.call('XADD', event[1], 'MAXLEN', '~', ARGV[1], '*', unpack(event[4]))
end
for i = 1, count do
  answer[count + i] = redis.call('EXISTS', events[i][2])
end
for i = 1, count do
  local event = events[i]
  if event[3] == 'set' then
    redis.call('SET', event[2], '1', 'EX', ARGV[2])
  elseif event[3] == 'del' then
    redis.call('DEL', event[2])
  end
end
-- A type new to the registry is announced, so every gateway's reader (which
-- blocks on the announcements stream too) follows its stream at once.
local types = cjson.decode(ARGV[7])
if redis.call('SADD', ARGV[3], unpack(types)) > 0 then
  redis.call('XADD', ARGV[4], 'MAXLEN', '~', ARGV[5], '*', 'types', table.concat(types, ','))
end
return answer
