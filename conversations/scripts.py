"""The Lua scripts behind every write of the conversation store.

Each write is one script, so Redis runs it whole with nothing in between: that is what
makes "create if missing", "refuse unless in state bot", "store unless this message id
was seen" and "change state if the table allows it" safe when API replicas race.

Every script starts with `PREAMBLE` and takes ``ARGV[1]`` the key prefix, ``ARGV[2]`` the
time as ISO text and ``ARGV[3]`` the cap of the event streams; its own arguments follow.
`PREAMBLE` also holds the store's writes as Lua functions (``append_turn``, ``transition``,
``mark_handled``), so that a script of a package above this one (the handoff's, which changes
a conversation's state and its handoff in one step) calls the same code instead of a copy.
Keys are built from the prefix as in `conversations.keys`. That is fine on one Redis (with or without Sentinel); on Redis Cluster
the keys would need hash tags first.

Replies are arrays whose first element says what happened (``created``, ``duplicate``,
``refused``, ``missing``...); hashes come back as flat HGETALL arrays.
"""

from __future__ import annotations

from conversations.model import PUSHED_CHANNELS

_PREAMBLE = """
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
local function conversation_event(conv_id, fields)
  local stream = conv_key(conv_id) .. ':events'
  local event_id = redis.call('XADD', stream, 'MAXLEN', '~', MAXLEN, '*', unpack(fields))
  local payload = {stream_id = event_id}
  for i = 1, #fields, 2 do payload[fields[i]] = fields[i + 1] end
  redis.call('PUBLISH', stream, cjson.encode(payload))
  return event_id
end

-- Every customer turn is also an entry of the inbox stream, delivered in the same step to the
-- consumer group's member that stored it: "stored" and "queued for handling" are one write, and
-- the entry stays pending until its handler acknowledges it (`conversations.streams`).
local INBOX, HANDLERS = P .. 'inbox', 'handlers'
-- Channels whose replies Baton pushes through the channel's own API (the others' clients fetch
-- them): every turn Baton writes to a conversation whose customer last wrote on one of these is
-- also an entry of P outbox:{channel}, in the same step, so no reply is lost if a sender dies.
local PUSHED = {@PUSHED@}

-- Store a turn. mode: customer (a message to handle: it becomes an inbox entry pending with
-- `consumer`), record (a customer's message that needs no handling, e.g. imported), bot, or other
-- (agent, system). key: an idempotency key ('' for none): a customer's client message id, or
-- the key of a notice Baton writes once (a hash of its own, so that a customer's id can never
-- silence a notice). The conversation's `received` is the seq of its latest customer turn and
-- `handled` that of the latest one handled: a message is pending while handled < its seq.
-- channel: the channel a customer's turn came on (replies follow the customer there).
-- Returns {outcome, record, inbox entry id, handled}.
local function append_turn(conv_id, mode, key, body, language, sender, consumer, channel)
  local ck = conv_key(conv_id)
  if redis.call('EXISTS', ck) == 0 then return {'missing', '', '', '0'} end
  if mode == 'bot' then
    -- Checked here, at write time: the state may have changed while the bot was thinking.
    local state = redis.call('HGET', ck, 'state')
    if state ~= 'bot' then return {'refused', state, '', '0'} end
  end
  local from_customer = mode == 'customer' or mode == 'record'
  local turns = ck .. ':turns'
  local keys = ck .. (from_customer and ':msgids' or ':effects')
  local handled = redis.call('HGET', ck, 'handled') or '0'
  if key ~= '' then
    local seen = redis.call('HGET', keys, key)
    if seen then return {'duplicate', redis.call('LINDEX', turns, tonumber(seen) - 1), '', handled} end
  end
  local seq = redis.call('LLEN', turns) + 1
  local record = '{"seq":' .. seq .. ',' .. body
  redis.call('RPUSH', turns, record)
  if key ~= '' then redis.call('HSET', keys, key, seq) end
  redis.call('HSET', ck, 'updated_at', NOW)
  local entry = ''
  if from_customer then
    if language ~= '' then redis.call('HSET', ck, 'language', language) end
    local received = redis.call('HGET', ck, 'received')
    if not received then  -- a conversation stored before the inbox existed: its past counts as handled
      received = tostring(seq - 1)
      handled = received
      redis.call('HSET', ck, 'handled', handled)
    end
    if mode == 'record' then
      if handled == received then
        handled = tostring(seq)
        redis.call('HSET', ck, 'handled', handled)
      end
    else
      entry = redis.call('XADD', INBOX, '*', 'conversation_id', conv_id, 'seq', tostring(seq))
      -- Nothing else adds to the inbox, so the new entry is the one to deliver: it joins the
      -- consumer's pending list in this same step. The group exists but on a fresh store.
      local read = {'XREADGROUP', 'GROUP', HANDLERS, consumer, 'COUNT', 100, 'STREAMS', INBOX, '>'}
      local delivered = redis.pcall(unpack(read))
      if type(delivered) == 'table' and delivered.err then  -- NOGROUP: make it, then deliver
        redis.call('XGROUP', 'CREATE', INBOX, HANDLERS, '0')
        redis.call(unpack(read))
      end
    end
    redis.call('HSET', ck, 'received', seq)
    if channel and channel ~= '' then redis.call('HSET', ck, 'reply_channel', channel) end
  else
    local reply = redis.call('HGET', ck, 'reply_channel') or redis.call('HGET', ck, 'channel')
    if PUSHED[reply] then
      redis.call('XADD', P .. 'outbox:' .. reply, '*', 'conversation_id', conv_id, 'seq', tostring(seq))
    end
  end
  conversation_event(conv_id, {'type', 'turn', 'conversation_id', conv_id, 'seq', tostring(seq),
    'sender', sender, 'turn', record, 'at', NOW})
  return {'stored', record, entry, handled}
end

-- Move a conversation to state `to` if the table (words 'from>to') allows it and, when
-- `expected` is not '', it is in that state now. Returns {outcome, state or HGETALL}.
local function transition(conv_id, to, expected, reason, allowed)
  local ck = conv_key(conv_id)
  if redis.call('EXISTS', ck) == 0 then return {'missing'} end
  local from = redis.call('HGET', ck, 'state')
  if expected ~= '' and from ~= expected then return {'unexpected', from} end
  if not string.find(' ' .. allowed .. ' ', ' ' .. from .. '>' .. to .. ' ', 1, true) then
    return {'forbidden', from}
  end
  redis.call('HSET', ck, 'state', to, 'updated_at', NOW)
  if to == 'queued' and from == 'bot' then  -- a transfer (assigned -> queued) is the same handoff
    redis.call('HINCRBY', ck, 'handoff_count', 1)
    redis.call('HSET', ck, 'last_reason', reason)
  elseif to == 'resolved' then
    local open_key = customer_key(canonical(redis.call('HGET', ck, 'customer_id'))) .. ':open'
    if redis.call('GET', open_key) == conv_id then redis.call('DEL', open_key) end
  end
  conversation_event(conv_id, {'type', 'transition', 'conversation_id', conv_id, 'from', from, 'to', to,
    'reason', reason, 'handoff_count', redis.call('HGET', ck, 'handoff_count'), 'at', NOW})
  return {'ok', redis.call('HGETALL', ck)}
end

-- Record that the customer turn `seq` is handled, if the mark still reads `expected` (the
-- handler read it before working: another handler may have finished first). {'ok'} or
-- {'stale', current mark}.
local function mark_handled(conv_id, expected, seq)
  local ck = conv_key(conv_id)
  local handled = redis.call('HGET', ck, 'handled') or '0'
  if handled ~= expected then return {'stale', handled} end
  redis.call('HSET', ck, 'handled', seq)
  return {'ok', seq}
end
"""
PREAMBLE = _PREAMBLE.replace("@PUSHED@", ", ".join(f"{channel} = true" for channel in PUSHED_CHANNELS))

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

# KEYS[1] link key. ARGV[4] customer id, ARGV[5] link member 'kind:value', ARGV[6] default tier,
# ARGV[7] the transition table.
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
      transition(other, 'resolved', 'bot', 'merged', ARGV[7])  -- through the table, as every change
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
  'language', ARGV[7], 'created_at', NOW, 'updated_at', NOW, 'handoff_count', 0, 'received', 0,
  'handled', 0)
redis.call('SET', ck .. ':open', id)
redis.call('ZADD', ck .. ':conversations', ARGV[8], id)
conversation_event(id, {'type', 'created', 'conversation_id', id, 'customer_id', cid, 'channel', ARGV[6],
  'state', 'bot', 'at', NOW})
return {'created', redis.call('HGETALL', conv_key(id))}
"""

# ARGV[4] conversation id, ARGV[5] mode: customer | record | bot | other, ARGV[6] the idempotency
# key or '' (a customer's client message id; a notice's key), ARGV[7] the turn's JSON without its
# opening brace, ARGV[8] language or '', ARGV[9] sender, ARGV[10] the inbox consumer (customer
# turns), ARGV[11] the turn's channel.
APPEND_TURN = """
return append_turn(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
"""

# ARGV[4] conversation id, ARGV[5] target state, ARGV[6] expected state or '', ARGV[7] reason or
# '', ARGV[8] the allowed transitions as 'from>to' words separated by spaces.
TRANSITION = """
return transition(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
"""

# ARGV[4] conversation id, ARGV[5] the handled mark read before handling, ARGV[6] the customer
# turn's seq now handled.
MARK_HANDLED = """
return mark_handled(ARGV[4], ARGV[5], ARGV[6])
"""

# KEYS[1] a list; ARGV[1] index, ARGV[2] the value expected there, ARGV[3] the new value.
# Stands alone (no preamble): it knows no key names and emits nothing.
SET_LIST_ITEM_IF_UNCHANGED = """
if redis.call('LINDEX', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('LSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
