-- Publishes a batch of progress events in one call, atomically.
--
-- Built by relay.protocol.entries.publish_args; every publisher (the gateway's HTTP
-- path and the Python reporters) runs this same script, so an entry has the
-- same shape whoever wrote it. The events travel as one JSON argument: the
-- client packs a few arguments per batch instead of a dozen per event.
--
-- ARGV[1] MAXLEN of each stream (approximate trimming)
-- ARGV[2] seconds a pending-cancel flag lives
-- ARGV[3] the workflow type registry (a set)
-- ARGV[4] the announcements stream, ARGV[5] its MAXLEN
-- ARGV[6] JSON: [[stream key, cancel key, cancel action, [field, value, ...]], ...]
--         where the action is "set" (cancel_requested), "del" (terminal) or ""
-- ARGV[7] JSON: the batch's distinct workflow types
-- ARGV[8] seconds an idempotency record lives
-- ARGV[9] JSON: the publications the events make up, in order, as
--         [[event count, idempotency record key or "", fingerprint or ""], ...];
--         "" when the batch is one publication without a key (no lookup at all)
-- ARGV[10] "1" to look the keys up only: no event is written
--
-- Publications are handled one after the other, so a key used twice in one
-- batch writes once. A publication whose key has a record of the same
-- fingerprint is not written again: it answers the recorded ids.
--
-- Returns every event's stream id, then for every event 1 or 0: whether its
-- session's cancellation was pending before its publication, then for every
-- publication its outcome: 0 written, 1 answered from its record, 2 key used
-- for other events (its ids are ""), 3 no record (lookup only).
local unpack = table.unpack or unpack
local events = cjson.decode(ARGV[6])
local count = #events
local publications = {{count, '', ''}}
if ARGV[9] ~= '' then
  publications = cjson.decode(ARGV[9])
end
local lookup_only = ARGV[10] == '1'

-- The ids a record holds, if it is the record of this fingerprint and count.
-- Anyone may have written the key, so its value is checked, never trusted.
local function recorded_ids(record, fingerprint, n)
  local head = fingerprint .. ' '
  if type(record) ~= 'string' or string.sub(record, 1, #head) ~= head then
    return nil
  end
  local ids = {}
  for id in string.gmatch(string.sub(record, #head + 1), '%S+') do
    if not string.match(id, '^%d+%-%d+$') then
      return nil
    end
    ids[#ids + 1] = id
  end
  if #ids ~= n then
    return nil
  end
  return ids
end

local answer = {}
local outcomes = {}
local wrote = false
local first = 1
for p = 1, #publications do
  local n, key, fingerprint = publications[p][1], publications[p][2], publications[p][3]
  local last = first + n - 1
  local outcome = lookup_only and 3 or 0
  for i = first, last do
    answer[i] = ''
  end
  if key ~= '' then
    local record = redis.pcall('GET', key)
    if record then
      local ids = recorded_ids(record, fingerprint, n)
      outcome = ids and 1 or 2
      if ids then
        -- A write that changes nothing, so that a WAIT after this call covers
        -- the write replayed here too: Redis counts WAIT from the caller's last write.
        redis.call('SET', key, record, 'KEEPTTL')
      end
      for i = first, last do
        answer[i] = ids and ids[i - first + 1] or ''
      end
    end
  end
  if outcome == 0 then
    for i = first, last do
      local event = events[i]
      answer[i] = redis.call('XADD', event[1], 'MAXLEN', '~', ARGV[1], '*', unpack(event[4]))
    end
    if key ~= '' then
      redis.call('SET', key, fingerprint .. ' ' .. table.concat(answer, ' ', first, last),
        'EX', ARGV[8])
    end
    wrote = true
  end
  for i = first, last do
    answer[count + i] = redis.call('EXISTS', events[i][2])
  end
  if outcome == 0 then
    for i = first, last do
      local event = events[i]
      if event[3] == 'set' then
        redis.call('SET', event[2], '1', 'EX', ARGV[2])
      elseif event[3] == 'del' then
        redis.call('DEL', event[2])
      end
    end
  end
  outcomes[p] = outcome
  first = last + 1
end
-- A type new to the registry is announced, so every gateway's reader (which
-- blocks on the announcements stream too) follows its stream at once.
if wrote then
  local types = cjson.decode(ARGV[7])
  if redis.call('SADD', ARGV[3], unpack(types)) > 0 then
    redis.call('XADD', ARGV[4], 'MAXLEN', '~', ARGV[5], '*', 'types', table.concat(types, ','))
  end
end
for p = 1, #publications do
  answer[2 * count + p] = outcomes[p]
end
return answer
