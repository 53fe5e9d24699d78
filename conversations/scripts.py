"""The Lua scripts behind every write of the conversation store.

Each write is one script, so Redis runs it whole with nothing in between: that is what
makes "create if missing", "refuse unless in state bot", "store unless this message id
was seen" and "change state if the table allows it" safe when API replicas race.

Every script starts with `PREAMBLE` and takes ``ARGV[1]`` the key prefix, ``ARGV[2]`` the
time as ISO text and ``ARGV[3]`` the cap of the event streams; its own arguments follow.
Keys that depend on data read inside the script (a customer's keys found through an
identity, a merged customer's successor) are built from the prefix as in
`conversations.keys`. That is fine on one Redis (with or without Sentinel); on Redis Cluster
the keys would need hash tags first.

Replies are arrays whose first element says what happened (``created``, ``duplicate``,
``refused``, ``missing``...); hashes come back as flat HGETALL arrays.
"""

from __future__ import annotations

PREAMBLE = """
local P, NOW, MAXLEN = ARGV[1], ARGV[2], ARGV[3]

local function customer_key(id) return P .. 'customer:' .. id end
local function conv_key(id) return P .. 'conv:' .. id end

-- Follow merged_into, so a customer id held from before a merge still finds the survivor.
local function canonical(id)
  for _ = 1, 32 do
    local next_id = redis.call('HGET', customer_key(id), 'merged_into')
    if not next_id then return id end
    id = next_id
  end
  return error('merge chain too long at customer ' .. id)
end

-- The customer's open conversation id, or false.
local function open_conversation(cid)
  local id = redis.call('GET', customer_key(cid) .. ':open')
  if not id then return false end
  local state = redis.call('HGET', conv_key(id), 'state')
  if state and state ~= 'resolved' then return id end
  return false
end

-- Append an event to the conversation's stream and publish it (with its stream id) on
-- the channel of the same name. fields: a flat {name, value, ...} array of strings.
local function emit(conv_id, fields)
  local stream = conv_key(conv_id) .. ':events'
  local event_id = redis.call('XADD', stream, 'MAXLEN', '~', MAXLEN, '*', unpack(fields))
  local payload = {stream_id = event_id}
  for i = 1, #fields, 2 do payload[fields[i]] = fields[i + 1] end
  redis.call('PUBLISH', stream, cjson.encode(payload))
  return event_id
end
"""

# KEYS[1] identity key. ARGV[4] new customer id, ARGV[5] tier or '', ARGV[6] display name or '',
# ARGV[7] identity member 'channel:external_id', ARGV[8] default tier.
RESOLVE_CUSTOMER = """
local id = redis.call('GET', KEYS[1])
local created = 0
if id then
  id = canonical(id)
  if ARGV[5] ~= '' then redis.call('HSET', customer_key(id), 'tier', ARGV[5]) end
  if ARGV[6] ~= '' then redis.call('HSET', customer_key(id), 'display_name', ARGV[6]) end
else
  id = ARGV[4]
  local tier = ARGV[5]
  if tier == '' then tier = ARGV[8] end
  redis.call('HSET', customer_key(id), 'id', id, 'tier', tier, 'created_at', NOW)
  if ARGV[6] ~= '' then redis.call('HSET', customer_key(id), 'display_name', ARGV[6]) end
  redis.call('SET', KEYS[1], id)
  redis.call('SADD', customer_key(id) .. ':identities', ARGV[7])
  created = 1
end
return {created, redis.call('HGETALL', customer_key(id))}
"""

# KEYS[1] link key. ARGV[4] customer id, ARGV[5] link member 'kind:value', ARGV[6] default tier.
LINK = """
local DEFAULT_TIER = ARGV[6]

-- Move everything of customer `gone` to customer `keep`; `gone` remains as a tombstone
-- pointing at `keep`.
local function merge(keep, gone)
  local kk, gk = customer_key(keep), customer_key(gone)
  for _, m in ipairs(redis.call('SMEMBERS', gk .. ':identities')) do
    redis.call('SET', P .. 'identity:' .. m, keep)
    redis.call('SADD', kk .. ':identities', m)
  end
  for _, m in ipairs(redis.call('SMEMBERS', gk .. ':links')) do
    redis.call('SET', P .. 'link:' .. m, keep)
    redis.call('SADD', kk .. ':links', m)
  end
  local convs = redis.call('ZRANGE', gk .. ':conversations', 0, -1, 'WITHSCORES')
  for i = 1, #convs, 2 do
    redis.call('ZADD', kk .. ':conversations', convs[i + 1], convs[i])
    redis.call('HSET', conv_key(convs[i]), 'customer_id', keep)
  end
  -- One open conversation per customer: a conversation a person is involved in (queued,
  -- assigned) wins over a bot one, else the more recently updated. The loser, if the bot
  -- holds it, is resolved; one with a person involved is left to its agent.
  local a, b = open_conversation(keep), open_conversation(gone)
  local current = a or b
  if a and b then
    local function rank(id)
      local state, updated = unpack(redis.call('HMGET', conv_key(id), 'state', 'updated_at'))
      return (state == 'bot' and '0' or '1') .. updated, state
    end
    local rank_a, state_a = rank(a)
    local rank_b, state_b = rank(b)
    local other, other_state = b, state_b
    if rank_b > rank_a then current, other, other_state = b, a, state_a end
    if other_state == 'bot' then
      redis.call('HSET', conv_key(other), 'state', 'resolved', 'updated_at', NOW)
      emit(other, {'type', 'transition', 'conversation_id', other, 'from', 'bot', 'to', 'resolved',
        'reason', 'merged', 'handoff_count', redis.call('HGET', conv_key(other), 'handoff_count'),
        'at', NOW})
    end
  end
  if current then redis.call('SET', kk .. ':open', current) end
  local keep_tier, gone_tier = redis.call('HGET', kk, 'tier'), redis.call('HGET', gk, 'tier')
  if (not keep_tier or keep_tier == DEFAULT_TIER) and gone_tier and gone_tier ~= DEFAULT_TIER then
    redis.call('HSET', kk, 'tier', gone_tier)
  end
  local gone_name = redis.call('HGET', gk, 'display_name')
  if gone_name and not redis.call('HGET', kk, 'display_name') then
    redis.call('HSET', kk, 'display_name', gone_name)
  end
  redis.call('DEL', gk .. ':identities', gk .. ':links', gk .. ':conversations', gk .. ':open')
  redis.call('HSET', gk, 'merged_into', keep)
end

local cid = canonical(ARGV[4])
if redis.call('EXISTS', customer_key(cid)) == 0 then return {'missing', cid} end
local holder = redis.call('GET', KEYS[1])
if holder then
  holder = canonical(holder)
  if redis.call('EXISTS', customer_key(holder)) == 0 then holder = false end
end
if not holder or holder == cid then
  redis.call('SET', KEYS[1], cid)
  redis.call('SADD', customer_key(cid) .. ':links', ARGV[5])
  return {'linked', cid}
end
merge(holder, cid)
return {'merged', holder}
"""

# ARGV[4] customer id, ARGV[5] new conversation id, ARGV[6] channel, ARGV[7] language or '',
# ARGV[8] creation time as a sort score.
CURRENT_CONVERSATION = """
local cid = canonical(ARGV[4])
local ck = customer_key(cid)
if redis.call('EXISTS', ck) == 0 then return {'missing'} end
local open = open_conversation(cid)
if open then return {'existing', redis.call('HGETALL', conv_key(open))} end
local id = ARGV[5]
redis.call('HSET', conv_key(id), 'id', id, 'customer_id', cid, 'channel', ARGV[6], 'state', 'bot',
  'language', ARGV[7], 'created_at', NOW, 'updated_at', NOW, 'handoff_count', 0)
redis.call('SET', ck .. ':open', id)
redis.call('ZADD', ck .. ':conversations', ARGV[8], id)
emit(id, {'type', 'created', 'conversation_id', id, 'customer_id', cid, 'channel', ARGV[6],
  'state', 'bot', 'at', NOW})
return {'created', redis.call('HGETALL', conv_key(id))}
"""

# KEYS[1] conversation hash, KEYS[2] turns list, KEYS[3] message ids hash.
# ARGV[4] mode: customer | bot | other; ARGV[5] client message id or ''; ARGV[6] the turn's
# JSON without its opening brace (the script puts "seq" first); ARGV[7] language or '';
# ARGV[8] sender; ARGV[9] conversation id.
APPEND_TURN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
if ARGV[4] == 'bot' then
  -- Checked here, at write time: the state may have changed while the bot was thinking.
  local state = redis.call('HGET', KEYS[1], 'state')
  if state ~= 'bot' then return {'refused', state} end
end
local message_id = ARGV[5]
if message_id ~= '' then
  local seen = redis.call('HGET', KEYS[3], message_id)
  if seen then return {'duplicate', redis.call('LINDEX', KEYS[2], tonumber(seen) - 1)} end
end
local seq = redis.call('LLEN', KEYS[2]) + 1
local record = '{"seq":' .. seq .. ',' .. ARGV[6]
redis.call('RPUSH', KEYS[2], record)
if message_id ~= '' then redis.call('HSET', KEYS[3], message_id, seq) end
redis.call('HSET', KEYS[1], 'updated_at', NOW)
if ARGV[4] == 'customer' and ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'language', ARGV[7]) end
emit(ARGV[9], {'type', 'turn', 'conversation_id', ARGV[9], 'seq', tostring(seq), 'sender', ARGV[8],
  'turn', record, 'at', NOW})
return {'stored', record}
"""

# KEYS[1] conversation hash. ARGV[4] target state, ARGV[5] expected state or '', ARGV[6] reason
# or '', ARGV[7] the allowed transitions as 'from>to' words separated by spaces, ARGV[8]
# conversation id.
TRANSITION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local from, to = redis.call('HGET', KEYS[1], 'state'), ARGV[4]
if ARGV[5] ~= '' and from ~= ARGV[5] then return {'unexpected', from} end
if not string.find(' ' .. ARGV[7] .. ' ', ' ' .. from .. '>' .. to .. ' ', 1, true) then
  return {'forbidden', from}
end
redis.call('HSET', KEYS[1], 'state', to, 'updated_at', NOW)
if to == 'queued' and from == 'bot' then  -- a transfer (assigned -> queued) is the same handoff
  redis.call('HINCRBY', KEYS[1], 'handoff_count', 1)
  redis.call('HSET', KEYS[1], 'last_reason', ARGV[6])
elseif to == 'resolved' then
  local open_key = customer_key(canonical(redis.call('HGET', KEYS[1], 'customer_id'))) .. ':open'
  if redis.call('GET', open_key) == ARGV[8] then redis.call('DEL', open_key) end
end
emit(ARGV[8], {'type', 'transition', 'conversation_id', ARGV[8], 'from', from, 'to', to,
  'reason', ARGV[6], 'handoff_count', redis.call('HGET', KEYS[1], 'handoff_count'), 'at', NOW})
return {'ok', redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] a list; ARGV[1] index, ARGV[2] the value expected there, ARGV[3] the new value.
# Stands alone (no preamble): it knows no key names and emits nothing.
SET_LIST_ITEM_IF_UNCHANGED = """
if redis.call('LINDEX', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('LSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
