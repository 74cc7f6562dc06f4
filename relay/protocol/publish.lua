-- Publishes the events of one workflow type, atomically.
--
-- Built by relay.protocol.entries.PublishPlan; every publisher (the gateway's
-- HTTP path and the Python reporters) runs this same script, so an entry has
-- the same shape whoever wrote it. A batch spanning several types makes one
-- call per type. Every key the script touches is declared, and every one
-- shares the stream's cluster slot (the stream key is their hash tag), so the
-- call runs on a Redis Cluster as on a single Redis. The type registry and the
-- announcements stream live elsewhere: the publisher updates them afterwards.
--
-- KEYS[1] the type stream
-- KEYS[2...] the distinct pending-cancel flags of the events' sessions, then
--            the idempotency records of the publications with a key
-- ARGV[1] MAXLEN of the stream (approximate trimming)
-- ARGV[2] seconds a pending-cancel flag lives
-- ARGV[3] seconds an idempotency record lives
-- ARGV[4] "1" to look the records up only: no event is written
-- ARGV[5] JSON: [[index of its cancel flag in KEYS, cancel action, [field, value, ...]], ...]
--         where the action is "set" (cancel_requested), "del" (terminal) or ""
-- ARGV[6] JSON: the publications the events make up, in order, as
--         [[event count, index of its record in KEYS or 0, fingerprint or ""], ...];
--         "" when the events are one publication without a key (no lookup at all)
--
-- Publications are handled one after the other, so a key used twice in one
-- call writes once. A publication whose record holds the same fingerprint is
-- not written again: it answers the recorded ids.
--
-- Returns every event's stream id, then for every event 1 or 0: whether its
-- session's cancellation was pending before its publication, then for every
-- publication its outcome: 0 written, 1 answered from its record, 2 key used
-- for other events (its ids are ""), 3 no record (lookup only).
local unpack = table.unpack or unpack
local events = cjson.decode(ARGV[5])
local count = #events
local publications = {{count, 0, ''}}
if ARGV[6] ~= '' then
  publications = cjson.decode(ARGV[6])
end
local lookup_only = ARGV[4] == '1'

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
local first = 1
for p = 1, #publications do
  local n, record_index, fingerprint = publications[p][1], publications[p][2], publications[p][3]
  local key = record_index > 0 and KEYS[record_index] or nil
  local last = first + n - 1
  local outcome = lookup_only and 3 or 0
  for i = first, last do
    answer[i] = ''
  end
  if key then
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
      answer[i] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(events[i][3]))
    end
    if key then
      redis.call('SET', key, fingerprint .. ' ' .. table.concat(answer, ' ', first, last),
        'EX', ARGV[3])
    end
  end
  for i = first, last do
    answer[count + i] = redis.call('EXISTS', KEYS[events[i][1]])
  end
  if outcome == 0 then
    for i = first, last do
      local event = events[i]
      if event[2] == 'set' then
        redis.call('SET', KEYS[event[1]], '1', 'EX', ARGV[2])
      elseif event[2] == 'del' then
        redis.call('DEL', KEYS[event[1]])
      end
    end
  end
  outcomes[p] = outcome
  first = last + 1
end
for p = 1, #publications do
  answer[2 * count + p] = outcomes[p]
end
return answer
