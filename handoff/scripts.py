"""The Lua scripts of the handoff: each change of who holds a conversation is one of them.

A conversation's state (``conversations.states``) and its handoff's record change together,
inside Redis, in one script: escalating (the bot's last word, the state ``bot -> queued``, the
handoff record and its stream entry), claiming (``queued -> assigned``, the agent's chat and
the "joined" notice), transferring, resolving, handing back and closing. No crash can leave
one changed without the other, so nothing needs repairing afterwards.

Every script is `conversations.scripts.PREAMBLE` (the store's own writes, as Lua functions:
``append_turn``, ``transition``...) + `LIB` + its body, and takes the same first arguments:
``ARGV[1]`` the key prefix, ``ARGV[2]`` the time as ISO text, ``ARGV[3]`` the cap of the
conversations' event streams, ``ARGV[4]`` the time as epoch seconds, ``ARGV[5]`` the audit
stream's cap, ``ARGV[6]`` and ``ARGV[7]`` the metrics hashes (all time, today) that counts go
to (`handoff.metrics`); its own arguments follow from ``ARGV[8]``. Key names are built from
the prefix as in `handoff.keys` (fine on one Redis, with or without Sentinel; Redis Cluster
would need hash tags first). Floats go back to Python as text: Redis would truncate a Lua
number to an integer.
"""

from __future__ import annotations

from conversations.scripts import PREAMBLE as CONVERSATIONS
from handoff.metrics import DAY_SECONDS_KEPT

LIB = """
-- The conversation store's NOW (ISO text) stays with its functions; here NOW is epoch seconds.
local NOW, AUDIT_MAX, METRICS_TOTAL, METRICS_DAY = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local EVENTS, AUDIT = P .. 'handoff:events', P .. 'handoffs:audit'
local METRICS_DAY_KEPT = @DAY_SECONDS_KEPT@

local function hkey(id) return P .. 'handoff:' .. id end
local function chats_key(agent) return P .. 'agent:' .. agent .. ':chats' end
local function waiting_key(skill)
  if skill then return P .. 'handoffs:waiting:' .. skill end
  return P .. 'handoffs:waiting'
end

-- The handoff hash as a Lua table, or nil.
local function load(id)
  local flat = redis.call('HGETALL', hkey(id))
  if #flat == 0 then return nil end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

-- HSET name, value, ... and keep the table in step.
local function set(h, ...)
  local args = {...}
  for i = 1, #args, 2 do h[args[i]] = args[i + 1] end
  redis.call('HSET', hkey(h.id), unpack(args))
end

local function opt_text(v) if v == nil or v == '' then return cjson.null end return v end
local function opt_number(v) if v == nil or v == '' then return cjson.null end return tonumber(v) end

-- The same shape as Handoff.to_dict.
local function as_table(h)
  return {
    id = h.id, conversation_id = h.conversation_id, handoff_number = tonumber(h.handoff_number),
    customer_id = h.customer_id, channel = h.channel, language = h.language or '', skill = h.skill,
    reasons = cjson.decode(h.reasons or '[]'), severity = tonumber(h.severity), vip = h.vip == '1',
    summary = h.summary or '', status = h.status, agent_id = opt_text(h.agent_id),
    ticket = h.ticket == '1', priority = tonumber(h.priority), created_at = tonumber(h.created_at),
    assigned_at = opt_number(h.assigned_at), first_response_at = opt_number(h.first_response_at),
    closed_at = opt_number(h.closed_at), outcome = opt_text(h.outcome), breached = h.breached == '1',
    transfers = tonumber(h.transfers or '0'), updated_at = tonumber(h.updated_at or h.created_at),
  }
end

local function unwait(h)
  redis.call('ZREM', waiting_key(nil), h.id)
  redis.call('ZREM', waiting_key(h.skill), h.id)
  redis.call('ZREM', P .. 'handoffs:tickets', h.id)
end

-- Append the event to the audit stream and publish it as JSON. extra: {name, value, ...} text.
local function emit(kind, h, extra)
  extra = extra or {}
  local fields = {'type', kind, 'handoff_id', h.id, 'conversation_id', h.conversation_id,
    'agent_id', h.agent_id or '', 'at', NOW}
  for i = 1, #extra do fields[#fields + 1] = extra[i] end
  redis.call('XADD', AUDIT, 'MAXLEN', '~', AUDIT_MAX, '*', unpack(fields))
  local payload = {type = kind, handoff_id = h.id, conversation_id = h.conversation_id,
    agent_id = opt_text(h.agent_id), at = tonumber(NOW), handoff = as_table(h)}
  for i = 1, #extra, 2 do payload[extra[i]] = opt_text(extra[i + 1]) end
  -- This cjson writes an empty table as {}; reasons is the one list. Inside a JSON string a
  -- quote is always escaped, so this text can only be the key itself.
  local text = string.gsub(cjson.encode(payload), '"reasons":{}', '"reasons":[]')
  redis.call('PUBLISH', EVENTS, text)
end

-- Add the counts (`handoff.metrics.counts_arg`: [[name, amount, is_float], ...]) to the metrics
-- hashes. The flag, not the value, picks the command: HINCRBY on a field holding a float fails.
local function count(counts)
  if counts == '' then return end
  for _, item in ipairs(cjson.decode(counts)) do
    for _, key in ipairs({METRICS_TOTAL, METRICS_DAY}) do
      if item[3] then redis.call('HINCRBYFLOAT', key, item[1], tostring(item[2]))
      else redis.call('HINCRBY', key, item[1], item[2]) end
    end
  end
  redis.call('EXPIRE', METRICS_DAY, METRICS_DAY_KEPT)
end

-- True if the agent has the skill and speaks the language (an empty language matches anyone).
local function serves(agent, skill, language)
  local skills, languages = unpack(redis.call('HMGET', P .. 'agent:' .. agent, 'skills', 'languages'))
  if not skills then return false end
  local has_skill, speaks = false, language == nil or language == ''
  for _, s in ipairs(cjson.decode(skills)) do if s == skill then has_skill = true end end
  for _, l in ipairs(cjson.decode(languages or '[]')) do if l == language then speaks = true end end
  return has_skill and speaks
end

-- nil if the agent may take one more chat now, else the reason why not.
local function refuse_agent(agent)
  local max_chats = redis.call('HGET', P .. 'agent:' .. agent, 'max_chats')
  if not max_chats then return 'unknown_agent' end
  if redis.call('SISMEMBER', P .. 'agents:online', agent) == 0 then return 'agent_offline' end
  if redis.call('SCARD', chats_key(agent)) >= tonumber(max_chats) then return 'at_capacity' end
  return nil
end

-- A new handoff (status new) from `record` (a JSON object of its text fields), announced on the
-- stream the assigners admit from.
local function create_handoff(conv_id, number, record)
  local id = conv_id .. ':' .. number
  local fields = cjson.decode(record)
  fields.id, fields.conversation_id, fields.handoff_number = id, conv_id, tostring(number)
  local flat = {}
  for name, value in pairs(fields) do flat[#flat + 1] = name; flat[#flat + 1] = value end
  redis.call('HSET', hkey(id), unpack(flat))
  redis.call('ZADD', P .. 'handoffs:conv:' .. conv_id, number, id)
  redis.call('ZADD', P .. 'handoffs:unanswered', fields.created_at, id)
  redis.call('XADD', P .. 'handoffs:stream', '*', 'handoff_id', id)
  emit('queued', load(id))
  return id
end

local function close_handoff(h, outcome)
  if h.agent_id and h.agent_id ~= '' then redis.call('SREM', chats_key(h.agent_id), h.id) end
  unwait(h)
  redis.call('ZREM', P .. 'handoffs:unanswered', h.id)
  set(h, 'status', 'closed', 'closed_at', NOW, 'outcome', outcome, 'updated_at', NOW)
  emit('closed', h)
end

-- A system notice to the customer, once per key. body: the turn's JSON without its opening brace.
local function notice(conv_id, key, body, language)
  if body == '' then return end
  append_turn(conv_id, 'other', key, body, language, 'system', '')
end
"""


def script(body: str) -> str:
    """The whole text of a handoff script with ``body``."""
    return CONVERSATIONS + LIB.replace("@DAY_SECONDS_KEPT@", str(DAY_SECONDS_KEPT)) + body


# ARGV[8] conversation id, ARGV[9] its handled mark as read before handling ('' when this is
# no customer turn's handling), ARGV[10] the customer turn's seq, ARGV[11] the bot's turn body or
# '', ARGV[12] its language, ARGV[13] the bot's dialogue context JSON or '', ARGV[14] the
# escalation signals' key or '', ARGV[15] their JSON, ARGV[16] their time to live, ARGV[17] the
# escalation's main reason or '' (no escalation), ARGV[18] the transition table, ARGV[19] the
# handoff record as a JSON object, ARGV[20] counts (the conversation's start, an escalation).
# Checks first, writes after, so that a refusal writes nothing. Replies {'stale'} (another
# handler finished this turn first), {'refused', state} (the bot may not speak or escalate: the
# conversation left the bot), {'missing'}, or {'ok', bot turn record or '', handoff id or ''}.
COMMIT_TURN = script("""
local conv_id = ARGV[8]
local ck = conv_key(conv_id)
if redis.call('EXISTS', ck) == 0 then return {'missing'} end
if ARGV[9] ~= '' and (redis.call('HGET', ck, 'handled') or '0') ~= ARGV[9] then return {'stale'} end
local state = redis.call('HGET', ck, 'state')
if (ARGV[11] ~= '' or ARGV[17] ~= '') and state ~= 'bot' then return {'refused', state} end
if ARGV[9] ~= '' then redis.call('HSET', ck, 'handled', ARGV[10]) end
local record = ''
if ARGV[11] ~= '' then record = append_turn(conv_id, 'bot', '', ARGV[11], ARGV[12], 'bot', '')[2] end
if ARGV[13] ~= '' then redis.call('SET', ck .. ':context', ARGV[13]) end
if ARGV[14] ~= '' then redis.call('SET', ARGV[14], ARGV[15], 'EX', ARGV[16]) end
local handoff_id = ''
if ARGV[17] ~= '' then
  transition(conv_id, 'queued', 'bot', ARGV[17], ARGV[18])
  handoff_id = create_handoff(conv_id, tonumber(redis.call('HGET', ck, 'handoff_count')), ARGV[19])
end
count(ARGV[20])
return {'ok', record, handoff_id}
""")

# ARGV[8] handoff id. new -> waiting (nothing if it is past new); ``ticket`` when nobody online
# could take it.
ADMIT = script("""
local h = load(ARGV[8])
if not h then return {'missing'} end
if h.status ~= 'new' then return {'unchanged', redis.call('HGETALL', hkey(h.id))} end
local ticket = '1'
for _, agent in ipairs(redis.call('SMEMBERS', P .. 'agents:online')) do
  if serves(agent, h.skill, h.language) then ticket = '0' break end
end
set(h, 'status', 'waiting', 'ticket', ticket, 'updated_at', NOW)
redis.call('ZADD', waiting_key(nil), h.priority, h.id)
redis.call('ZADD', waiting_key(h.skill), h.priority, h.id)
if ticket == '1' then redis.call('ZADD', P .. 'handoffs:tickets', h.created_at, h.id) end
emit('admitted', h)
return {'admitted', redis.call('HGETALL', hkey(h.id))}
""")

# ARGV[8] handoff id, ARGV[9] agent id, ARGV[10] the transition table, ARGV[11] the "joined"
# notice's body, ARGV[12] its language, ARGV[13] counts. The handoff waiting -> assigned, the
# conversation queued -> assigned and the notice, in one step; a handoff whose conversation is
# no longer queued is closed instead ({'not_waiting'}).
CLAIM = script("""
local h, agent = load(ARGV[8]), ARGV[9]
if not h then return {'unknown'} end
if h.status ~= 'waiting' then return {'not_waiting'} end
local refused = refuse_agent(agent)
if refused then return {refused} end
if redis.call('HGET', conv_key(h.conversation_id), 'state') ~= 'queued' then
  close_handoff(h, 'closed')  -- nobody is waiting any more: never hand an agent a dead chat
  return {'not_waiting'}
end
unwait(h)
set(h, 'status', 'assigned', 'agent_id', agent, 'assigned_at', NOW, 'updated_at', NOW)
redis.call('SADD', chats_key(agent), h.id)
redis.call('ZADD', P .. 'agents:last_assigned', NOW, agent)
emit('assigned', h)
transition(h.conversation_id, 'assigned', 'queued', 'assigned:' .. agent, ARGV[10])
notice(h.conversation_id, 'joined:' .. h.id .. ':' .. h.transfers, ARGV[11], ARGV[12])
count(ARGV[13])
return {'ok', redis.call('HGETALL', hkey(h.id))}
""")

# ARGV[8] handoff id, ARGV[9] the agent who acts ('' for a supervisor: anyone's chat), ARGV[10]
# the conversation's state expected now (assigned, or queued for a waiting chat), ARGV[11] the
# state it goes to, ARGV[12] the handoff's outcome, ARGV[13] the transition table, ARGV[14] the
# notice's body or '', ARGV[15] its language, ARGV[16] a key to delete or '' (the escalation
# signals, on a handback), ARGV[17] counts. Replies {'ok', conversation} or {reason, state}.
FINISH = script("""
local h, agent = load(ARGV[8]), ARGV[9]
if not h then return {'not_found', ''} end
local conv_id = h.conversation_id
local state = redis.call('HGET', conv_key(conv_id), 'state') or ''
local wanted = ARGV[10] == 'assigned' and 'assigned' or 'waiting'
if h.status ~= wanted or state ~= ARGV[10] then return {'not_' .. wanted, state} end
if agent ~= '' and ARGV[10] == 'assigned' and h.agent_id ~= agent then return {'not_yours', state} end
transition(conv_id, ARGV[11], ARGV[10], '', ARGV[13])
close_handoff(h, ARGV[12])
notice(conv_id, 'finish:' .. h.id, ARGV[14], ARGV[15])
if ARGV[16] ~= '' then redis.call('DEL', ARGV[16]) end
count(ARGV[17])
return {'ok', redis.call('HGETALL', conv_key(conv_id))}
""")

# ARGV[8] handoff id, ARGV[9] the agent acting ('' for a supervisor), ARGV[10] the agent it goes
# to, ARGV[11] the notice's body, ARGV[12] its language. The conversation stays assigned.
TRANSFER_AGENT = script("""
local h, actor, agent = load(ARGV[8]), ARGV[9], ARGV[10]
if not h then return {'unknown'} end
if h.status ~= 'assigned' then return {'not_assigned'} end
if actor ~= '' and h.agent_id ~= actor then return {'not_yours'} end
if h.agent_id == agent then return {'same_agent'} end
local refused = refuse_agent(agent)
if refused then return {refused} end
local from = h.agent_id
redis.call('SREM', chats_key(from), h.id)
redis.call('SADD', chats_key(agent), h.id)
redis.call('ZADD', P .. 'agents:last_assigned', NOW, agent)
set(h, 'agent_id', agent, 'assigned_at', NOW, 'transfers', tostring(tonumber(h.transfers or '0') + 1),
  'updated_at', NOW)
emit('transferred', h, {'from_agent_id', from, 'from_skill', h.skill})
notice(h.conversation_id, 'transfer:' .. h.id .. ':' .. h.transfers, ARGV[11], ARGV[12])
return {'ok', redis.call('HGETALL', hkey(h.id))}
""")

# ARGV[8] handoff id, ARGV[9] the agent acting ('' for a supervisor or no agent), ARGV[10] the
# skill whose queue it goes to, ARGV[11] the transition table, ARGV[12] the notice's body, ARGV[13]
# its language. A new handoff stays new (admission puts it under the new skill); a waiting or
# assigned one waits under the new skill with its old priority (the customer has waited
# already), and an assigned one's conversation moves assigned -> queued in the same step.
TRANSFER_SKILL = script("""
local h, actor, skill = load(ARGV[8]), ARGV[9], ARGV[10]
if not h then return {'unknown'} end
if h.status == 'closed' then return {'closed'} end
if actor ~= '' and h.status == 'assigned' and h.agent_id ~= actor then return {'not_yours'} end
local before, from_agent, from_skill = h.status, h.agent_id or '', h.skill
if from_agent ~= '' then redis.call('SREM', chats_key(from_agent), h.id) end
unwait(h)
local status = before == 'new' and 'new' or 'waiting'
set(h, 'status', status, 'skill', skill, 'agent_id', '', 'transfers',
  tostring(tonumber(h.transfers or '0') + 1), 'updated_at', NOW)
if status == 'waiting' then
  redis.call('ZADD', waiting_key(nil), h.priority, h.id)
  redis.call('ZADD', waiting_key(skill), h.priority, h.id)
end
emit('transferred', h, {'from_agent_id', from_agent, 'from_skill', from_skill})
if before == 'assigned' then
  transition(h.conversation_id, 'queued', 'assigned', 'transfer:' .. skill, ARGV[11])
end
notice(h.conversation_id, 'transfer:' .. h.id .. ':' .. h.transfers, ARGV[12], ARGV[13])
return {'ok', before, redis.call('HGETALL', hkey(h.id))}
""")

# ARGV[8] handoff id, ARGV[9] the agent ('' for a supervisor), ARGV[10] the agent's turn body,
# ARGV[11] its language, ARGV[12] the counts of a first response (made with the same clock),
# ARGV[13] the client's message id or '' (a retry of the same id is stored once). The agent's
# message and the first-response clock in one step: {'ok', turn record, seconds or ''}.
SEND = script("""
local h, agent = load(ARGV[8]), ARGV[9]
if not h then return {'not_found'} end
local state = redis.call('HGET', conv_key(h.conversation_id), 'state')
if h.status ~= 'assigned' or state ~= 'assigned' then return {'not_assigned', state or ''} end
if agent ~= '' and h.agent_id ~= agent then return {'not_yours', state} end
local key = ARGV[13] ~= '' and ('agent:' .. ARGV[13]) or ''
local stored = append_turn(h.conversation_id, 'other', key, ARGV[10], ARGV[11], 'agent', '')
if stored[1] == 'duplicate' then return {'ok', stored[2], ''} end
local record = stored[2]
local seconds = ''
if (h.first_response_at or '') == '' then
  set(h, 'first_response_at', NOW, 'updated_at', NOW)
  redis.call('ZREM', P .. 'handoffs:unanswered', h.id)
  emit('first_response', h)
  seconds = tostring(tonumber(NOW) - tonumber(h.created_at))
  count(ARGV[12])
end
return {'ok', record, seconds}
""")

# ARGV[8] cutoff (created before it and unanswered = breached), ARGV[9] at most this many. Each
# breach is counted and returned once, whoever calls.
BREACHES = script("""
local out = {}
local ids = redis.call('ZRANGEBYSCORE', P .. 'handoffs:unanswered', '-inf', ARGV[8], 'LIMIT', 0, ARGV[9])
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'handoffs:unanswered', id)
  local h = load(id)
  if h and h.status ~= 'closed' and (h.first_response_at or '') == '' and h.breached ~= '1' then
    set(h, 'breached', '1', 'updated_at', NOW)
    emit('breach', h)
    count('[["first_response_breaches", 1, false]]')
    out[#out + 1] = redis.call('HGETALL', hkey(id))
  end
end
return out
""")
