/**
 * Baton web chat: the customer's side of a support conversation.
 *
 * One ES module, no dependencies, no build step. The protocol (api/channels/web.py):
 * POST /api/v1/web/session gives a visitor token; one WebSocket at /ws/web carries turns both
 * ways and, after a reconnect, replays only the turns after the last seq this page has seen.
 * Turns are deduplicated by (conversation_id, seq) and the customer's messages by their
 * client_message_id, so a message retried after a drop is neither stored nor shown twice.
 *
 * Text from the server only ever reaches the page as text (textContent, text nodes), never as HTML.
 */

const MAX_CHARS = 4000; // the server refuses longer messages too
const COUNTER_FROM = 3600; // the counter appears in the last 10 % only, where it helps
const PING_EVERY_MS = 25_000;
// No frame at all for this long (pongs included): the socket is dead even if the browser thinks otherwise,
// as after a laptop sleeps or a phone changes network; such sockets can take minutes to report a close.
const SILENCE_LIMIT_MS = 2 * PING_EVERY_MS + 10_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5_000;
const TYPING_TIMEOUT_MS = 30_000; // an indicator the server never switched off must not stay forever
const ALERT_MS = 8_000;
const NEAR_END_PX = 48; // a reader this close to the end is following along and is kept at the end
const CLOSE_BAD_TOKEN = 4401;
const TOKEN_KEY = 'baton.token';
const LANG_KEY = 'baton.lang';
const SENDERS = new Set(['customer', 'bot', 'agent', 'system']);
const STATE_NOTES = new Set(['queued', 'assigned', 'resolved']);
// Errors after which sending the same message again can succeed (the others would be refused again).
const RETRYABLE = new Set(['rate_limited', 'unavailable', 'invalid_json', 'bad_frame']);

const STRINGS = {
  en: {
    title: 'Customer support',
    language: 'Language',
    transcript: 'Conversation',
    welcome: 'Hello! How can we help you today? You can ask for a person at any time.',
    inputLabel: 'Your message',
    placeholder: 'Type your message…',
    send: 'Send',
    hint: 'Enter to send, Shift+Enter for a new line',
    typing: 'Typing…',
    connecting: 'Connecting…',
    reconnecting: 'Connection lost. Reconnecting…',
    newConversation: 'New conversation',
    sender_customer: 'You',
    sender_bot: 'Bot',
    sender_agent: 'Agent',
    sender_system: 'System',
    sending: 'Sending…',
    notSent: 'Not sent',
    retry: 'Retry',
    state_queued: 'Connecting you to a person…',
    state_assigned: 'A member of our team has joined the conversation.',
    state_resolved: 'This conversation has been resolved.',
    counterLeft: '{n} characters left',
    counterFull: 'Character limit reached ({max})',
    counterOver: '{n} over the {max}-character limit',
    error_empty: 'Please type a message first.',
    error_too_long: 'This message is too long (at most {max} characters).',
    error_rate_limited: 'You are sending messages too quickly. Please try again in {n} s.',
    error_rate_limited_now: 'You are sending messages too quickly. Please wait a moment.',
    error_invalid_json: 'Your message could not be read. Please try again.',
    error_bad_frame: 'Your message could not be read. Please try again.',
    error_unavailable: 'The service is temporarily unavailable. Please try again shortly.',
    error_unknown: 'Something went wrong. Please try again.',
  },
  zh: {
    title: '在线客服',
    language: '语言',
    transcript: '会话记录',
    welcome: '您好！请问有什么可以帮您？如需人工客服，随时告诉我们。',
    inputLabel: '输入消息',
    placeholder: '请输入您的问题…',
    send: '发送',
    hint: 'Enter 发送，Shift+Enter 换行',
    typing: '正在输入…',
    connecting: '正在连接…',
    reconnecting: '连接已断开，正在重新连接…',
    newConversation: '新的会话',
    sender_customer: '我',
    sender_bot: '智能客服',
    sender_agent: '人工客服',
    sender_system: '系统',
    sending: '发送中…',
    notSent: '未发送',
    retry: '重试',
    state_queued: '正在为您转接人工客服…',
    state_assigned: '人工客服已接入会话。',
    state_resolved: '本次会话已结束。',
    counterLeft: '还可输入 {n} 字',
    counterFull: '已达到 {max} 字上限',
    counterOver: '已超出 {max} 字上限 {n} 字',
    error_empty: '请先输入消息内容。',
    error_too_long: '消息过长，最多 {max} 字。',
    error_rate_limited: '发送太频繁，请 {n} 秒后再试。',
    error_rate_limited_now: '发送太频繁，请稍后再试。',
    error_invalid_json: '消息无法识别，请重试。',
    error_bad_frame: '消息无法识别，请重试。',
    error_unavailable: '服务暂时不可用，请稍后再试。',
    error_unknown: '出错了，请重试。',
  },
};

const $ = (id) => document.getElementById(id);
const dom = {
  transcript: $('transcript'),
  welcome: $('welcome'),
  typing: $('typing'),
  banner: $('banner'),
  alert: $('alert'),
  form: $('composer'),
  input: $('input'),
  send: $('send'),
  counter: $('counter'),
  langButtons: [...document.querySelectorAll('[data-lang]')],
};

const ui = { lang: 'en', alertTimer: 0, typingTimer: 0 };

const chat = {
  conversationId: null,
  state: null, // the conversation's state (bot, queued, assigned, resolved) as last reported
  lastSeq: 0, // of the current conversation: the `after` of the next connection
  section: null, // the transcript section of the current conversation
  seen: new Set(), // `${conversation_id}:${seq}` of every turn shown
  own: new Map(), // client_message_id -> {el, text} of each message this page sent
  outbox: new Set(), // client_message_ids not acknowledged yet: sent again after a reconnect
  titles: new Map(), // button payload -> title, so a pressed button reads as its title
};

const link = {
  socket: null,
  ready: false, // hello received on the current socket
  everReady: false,
  attempts: 0,
  retryTimer: 0,
  pingTimer: 0,
  lastFrameAt: 0,
};

// -- small helpers ---------------------------------------------------------------------------

/** An element with attributes and children; strings become text nodes, never markup. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') el.className = value;
    else el.setAttribute(name, value);
  }
  el.append(...children);
  return el;
}

// localStorage throws when storage is disabled; the chat then works for this page only.
const storage = {
  get(key) {
    try {
      return localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch {
      /* not remembered */
    }
  },
  remove(key) {
    try {
      localStorage.removeItem(key);
    } catch {
      /* nothing to forget */
    }
  },
};

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID exists only in secure contexts (https, localhost); getRandomValues everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const turnKey = (conversationId, seq) => `${conversationId}:${seq}`;

// -- language --------------------------------------------------------------------------------

function initialLanguage() {
  const chosen = storage.get(LANG_KEY);
  if (chosen in STRINGS) return chosen;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

function t(key, args = {}) {
  const text = STRINGS[ui.lang][key] ?? STRINGS.en[key] ?? key;
  const values = { max: MAX_CHARS, ...args };
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ''));
}

/** Set a UI string and remember its key, so switching the language rewrites it. */
function setLocalized(el, key, args) {
  el.dataset.i18n = key;
  if (args) el.dataset.i18nArgs = JSON.stringify(args);
  else delete el.dataset.i18nArgs;
  el.textContent = t(key, args);
}

function applyLanguage() {
  document.documentElement.lang = ui.lang === 'zh' ? 'zh-CN' : 'en';
  document.title = t('title');
  for (const el of document.querySelectorAll('[data-i18n]')) {
    el.textContent = t(el.dataset.i18n, el.dataset.i18nArgs ? JSON.parse(el.dataset.i18nArgs) : undefined);
  }
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of document.querySelectorAll('[data-i18n-aria-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nAriaLabel));
  }
  for (const time of dom.transcript.querySelectorAll('time[datetime]')) {
    time.textContent = formatTime(new Date(time.dateTime));
  }
  for (const button of dom.langButtons) {
    button.setAttribute('aria-pressed', String(button.dataset.lang === ui.lang));
  }
}

function setLanguage(lang) {
  ui.lang = lang;
  storage.set(LANG_KEY, lang);
  applyLanguage();
}

// -- transcript ------------------------------------------------------------------------------

/** created_at may be ISO 8601 or epoch seconds or milliseconds; a bad value shows no time. */
function toDate(value) {
  if (value == null) return new Date();
  const date = typeof value === 'number' ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function formatTime(date) {
  const locale = ui.lang === 'zh' ? 'zh-CN' : 'en';
  return new Intl.DateTimeFormat(locale, { hour: '2-digit', minute: '2-digit' }).format(date);
}

function timeElement(date) {
  if (!date) return h('time');
  return h('time', { datetime: date.toISOString() }, formatTime(date));
}

function messageElement(sender, text, date) {
  // The customer's own messages sit on the right; their "You" label is for screen readers only.
  const label = h('span', { class: sender === 'customer' ? 'message__sender visually-hidden' : 'message__sender' });
  setLocalized(label, `sender_${sender}`);
  const meta = h('div', { class: 'message__meta' }, label, ' ', timeElement(date));
  return h(
    'div',
    { class: `message message--${sender}`, 'data-sender': sender },
    meta,
    h('div', { class: 'message__text' }, text),
  );
}

function repliesElement(buttons) {
  const group = h('div', { class: 'quick-replies', role: 'group' });
  for (const button of buttons) {
    const payload = typeof button?.payload === 'string' ? button.payload : '';
    if (!payload) continue;
    const title = String(button.title || payload);
    chat.titles.set(payload, title);
    const el = h('button', { type: 'button', class: 'quick-reply' }, title);
    el.addEventListener('click', () => pressReply(group, payload, title));
    group.append(el);
  }
  return group;
}

function turnElement(turn) {
  const sender = SENDERS.has(turn.sender) ? turn.sender : 'system';
  const text = String(turn.text ?? '');
  // A pressed button comes back as its payload: show what the customer saw on the button.
  const shown = sender === 'customer' ? (chat.titles.get(text) ?? text) : text;
  const el = messageElement(sender, shown, toDate(turn.created_at));
  if (turn.language) el.querySelector('.message__text').lang = turn.language === 'zh' ? 'zh-CN' : turn.language;
  if (Array.isArray(turn.buttons) && turn.buttons.length) el.append(repliesElement(turn.buttons));
  return el;
}

function newSection(conversationId, withDivider) {
  const section = h('section', { class: 'conversation' });
  if (conversationId) section.dataset.conversationId = conversationId;
  if (withDivider) {
    const label = h('span');
    setLocalized(label, 'newConversation');
    section.append(h('div', { class: 'divider', role: 'separator' }, label));
  }
  dom.transcript.append(section);
  return section;
}

/** Messages this page sent that the server has not placed in the conversation yet. */
const localMessages = () => [...dom.transcript.querySelectorAll('.message.is-local')];

/** Start the conversation `id` if it is not the current one (a new one follows a resolved one). */
function enterConversation(id) {
  if (id === chat.conversationId) return;
  if (chat.section.dataset.conversationId) {
    const hadMessages = Boolean(chat.section.querySelector('.message[data-seq]'));
    const pending = localMessages();
    chat.section = newSection(id, hadMessages);
    chat.section.append(...pending);
  } else {
    chat.section.dataset.conversationId = id;
  }
  chat.conversationId = id;
  chat.state = null;
  chat.lastSeq = 0;
}

/** Forget what is shown: the server's open conversation is not the one this page knew. */
function resetTranscript(conversationId) {
  const pending = localMessages();
  for (const section of dom.transcript.querySelectorAll('section.conversation')) section.remove();
  chat.seen.clear();
  chat.conversationId = conversationId;
  chat.lastSeq = 0;
  chat.section = newSection(conversationId, false);
  chat.section.append(...pending);
  updateWelcome();
}

/** Put a turn's element at its seq in the current section, above messages still being sent. */
function placeBySeq(el) {
  const seq = Number(el.dataset.seq);
  const children = [...chat.section.children];
  const next =
    children.find((c) => c !== el && c.dataset.seq !== undefined && Number(c.dataset.seq) > seq) ??
    children.find((c) => c.classList.contains('is-local'));
  chat.section.insertBefore(el, next ?? null);
}

/** Record a turn of the current conversation as shown and put it in place. */
function confirmTurn(el, conversationId, seq) {
  chat.seen.add(turnKey(conversationId, seq));
  el.dataset.seq = String(seq);
  el.classList.remove('is-local');
  placeBySeq(el);
  refreshReplies();
  updateWelcome();
}

// Only the newest turn's buttons can be pressed, and only once: older questions have moved on.
function refreshReplies() {
  const confirmed = chat.section.querySelectorAll('.message[data-seq]');
  const latest = confirmed[confirmed.length - 1];
  for (const group of dom.transcript.querySelectorAll('.quick-replies')) {
    const live = group.parentElement === latest && !group.dataset.used;
    for (const button of group.querySelectorAll('button')) button.disabled = !live;
  }
}

function updateWelcome() {
  dom.welcome.hidden = Boolean(dom.transcript.querySelector('.message'));
}

function addNote(key) {
  const note = h('p', { class: 'note' });
  setLocalized(note, key);
  const firstLocal = chat.section.querySelector('.is-local');
  chat.section.insertBefore(note, firstLocal);
}

/** Run a change to the transcript, keeping a reader who was at the end at the end. */
function keepAtEnd(change, force = false) {
  const t = dom.transcript;
  const atEnd = force || t.scrollHeight - t.scrollTop - t.clientHeight < NEAR_END_PX;
  change();
  if (atEnd) t.scrollTop = t.scrollHeight;
}

// -- the customer's messages -----------------------------------------------------------------

/** Show whether a message of the customer is being sent, delivered, or failed (with why). */
function setDeliveryState(el, state, error) {
  el.dataset.state = state;
  el.querySelector('.message__status')?.remove();
  const status = h('div', { class: 'message__status' });
  if (state === 'delivered') {
    status.append('✓');
  } else {
    const label = h('span');
    setLocalized(label, state === 'sending' ? 'sending' : 'notSent');
    status.append(label);
  }
  // Only a failure is announced: "sending" and "delivered" on every message would drown the conversation.
  if (state !== 'failed') status.setAttribute('aria-hidden', 'true');
  if (error) {
    const reason = h('span', { class: 'message__error' });
    setLocalized(reason, error.key, error.args);
    status.append(' ', reason);
  }
  el.append(status);
  return status;
}

// A typed payload reads like the button it stands for, as it will when the server replays it.
function sendMessage(text, shown = chat.titles.get(text) ?? text) {
  const id = newId();
  const el = messageElement('customer', shown, new Date());
  el.classList.add('is-local');
  el.dataset.clientMessageId = id;
  const entry = { el, text };
  chat.own.set(id, entry);
  setDeliveryState(el, 'sending');
  keepAtEnd(() => {
    chat.section.append(el);
    updateWelcome();
  }, true);
  chat.outbox.add(id);
  transmit(id);
}

/** Send a queued message now if connected; otherwise it waits in the outbox for the next hello. */
function transmit(id) {
  const socket = link.socket;
  if (!link.ready || socket?.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ type: 'message', text: chat.own.get(id).text, client_message_id: id }));
}

function markDelivered(id) {
  const entry = chat.own.get(id);
  chat.outbox.delete(id);
  if (entry && entry.el.dataset.state !== 'delivered') setDeliveryState(entry.el, 'delivered');
}

function markFailed(id, frame) {
  const entry = chat.own.get(id);
  chat.outbox.delete(id);
  // It stays where it was sent instead of following later turns down as a pending message would.
  entry.el.classList.remove('is-local');
  const status = setDeliveryState(entry.el, 'failed', errorMessage(frame));
  if (!RETRYABLE.has(frame.code)) return;
  const retry = h('button', { type: 'button', class: 'message__retry' });
  setLocalized(retry, 'retry');
  retry.addEventListener('click', () => {
    // Same client_message_id: if the first attempt was stored after all, the server dedupes it.
    setDeliveryState(entry.el, 'sending');
    entry.el.classList.add('is-local');
    keepAtEnd(() => chat.section.append(entry.el), true);
    chat.outbox.add(id);
    transmit(id);
    dom.input.focus();
  });
  status.append(' ', retry);
}

function pressReply(group, payload, title) {
  group.dataset.used = 'true';
  refreshReplies();
  sendMessage(payload, title);
  dom.input.focus();
}

// -- composer --------------------------------------------------------------------------------

function submitComposer() {
  const text = dom.input.value.trim();
  if (!text) return; // nothing to send; the server would only answer `empty`
  if (text.length > MAX_CHARS) {
    showAlert('error_too_long');
    return;
  }
  sendMessage(text);
  dom.input.value = '';
  onComposerInput();
  dom.input.focus();
}

function updateCounter() {
  const length = dom.input.value.length;
  const over = length > MAX_CHARS;
  dom.counter.hidden = length < COUNTER_FROM;
  dom.counter.classList.toggle('is-full', length >= MAX_CHARS);
  if (over) setLocalized(dom.counter, 'counterOver', { n: length - MAX_CHARS });
  else if (length === MAX_CHARS) setLocalized(dom.counter, 'counterFull');
  else setLocalized(dom.counter, 'counterLeft', { n: MAX_CHARS - length });
  dom.input.setAttribute('aria-invalid', String(over));
  dom.send.disabled = over;
}

// The textarea grows with its text up to the CSS max-height, then scrolls. The transcript
// shrinks as it grows, so a reader at the end is kept there.
function autosize() {
  const input = dom.input;
  keepAtEnd(() => {
    input.style.height = 'auto';
    input.style.height = `${input.scrollHeight + input.offsetHeight - input.clientHeight}px`;
  });
}

function onComposerInput() {
  updateCounter();
  autosize();
}

function onComposerKey(event) {
  // Enter sends and Shift+Enter starts a new line; an Enter that picks an IME candidate (pinyin) does neither.
  if (event.key !== 'Enter' || event.shiftKey || event.isComposing || event.keyCode === 229) return;
  event.preventDefault();
  submitComposer();
}

// -- banners ---------------------------------------------------------------------------------

function showBanner(key) {
  setLocalized(dom.banner, key);
  dom.banner.hidden = false;
}

function hideBanner() {
  dom.banner.hidden = true;
}

function showAlert(key, args) {
  setLocalized(dom.alert, key, args);
  dom.alert.hidden = false;
  clearTimeout(ui.alertTimer);
  ui.alertTimer = setTimeout(() => (dom.alert.hidden = true), ALERT_MS);
}

function errorMessage({ code, retry_after: wait }) {
  if (code === 'rate_limited') {
    return wait > 0
      ? { key: 'error_rate_limited', args: { n: Math.ceil(wait) } }
      : { key: 'error_rate_limited_now' };
  }
  const key = `error_${code}`;
  return { key: key in STRINGS.en ? key : 'error_unknown' };
}

function setTyping(on) {
  clearTimeout(ui.typingTimer);
  dom.typing.hidden = !on;
  if (on) ui.typingTimer = setTimeout(() => setTyping(false), TYPING_TIMEOUT_MS);
}

// -- server frames ---------------------------------------------------------------------------

function onHello(frame) {
  const conversationId = frame.conversation_id ?? null;
  if (conversationId !== chat.conversationId) resetTranscript(conversationId);
  chat.state = frame.state ?? null;
  link.ready = true;
  link.everReady = true;
  link.attempts = 0;
  setStatus('open');
  hideBanner();
  for (const id of chat.outbox) transmit(id);
}

function onTurn(turn) {
  if (!turn?.conversation_id || turn.seq == null) return;
  if (chat.seen.has(turnKey(turn.conversation_id, turn.seq))) return; // replayed, already shown
  enterConversation(turn.conversation_id);
  chat.lastSeq = Math.max(chat.lastSeq, turn.seq);
  const mine = turn.client_message_id ? chat.own.get(turn.client_message_id) : undefined;
  if (mine) markDelivered(turn.client_message_id); // stored, whether or not its ack arrives
  confirmTurn(mine ? mine.el : turnElement(turn), turn.conversation_id, turn.seq);
  if (turn.sender !== 'customer') setTyping(false);
}

function onAck(frame) {
  const entry = chat.own.get(frame.client_message_id);
  if (!entry) return;
  markDelivered(frame.client_message_id);
  // Place the message at its seq now rather than waiting for its echo. An ack for another
  // conversation than the current one waits for the echo, which starts that conversation.
  const { conversation_id: conversationId, seq } = frame;
  const current = chat.conversationId === null || conversationId === chat.conversationId;
  if (conversationId && seq != null && current && !entry.el.dataset.seq) {
    enterConversation(conversationId);
    confirmTurn(entry.el, conversationId, seq);
  }
}

function onState({ conversation_id: conversationId, state }) {
  if (conversationId && chat.conversationId && conversationId !== chat.conversationId) return;
  if (state === chat.state) return;
  chat.state = state;
  if (STATE_NOTES.has(state)) addNote(`state_${state}`);
}

function onServerError(frame) {
  const id = frame.client_message_id;
  if (id && chat.own.has(id)) {
    markFailed(id, frame);
  } else {
    const { key, args } = errorMessage(frame);
    showAlert(key, args);
  }
}

const HANDLERS = {
  hello: onHello,
  turn: (frame) => onTurn(frame.turn),
  ack: onAck,
  typing: (frame) => setTyping(Boolean(frame.on)),
  state: onState,
  error: onServerError,
  pong: () => {},
};

function onFrame(data) {
  link.lastFrameAt = Date.now();
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    return; // not a frame of this protocol
  }
  if (typeof frame?.type === 'string' && Object.hasOwn(HANDLERS, frame.type)) {
    keepAtEnd(() => HANDLERS[frame.type](frame));
  }
}

// -- connection ------------------------------------------------------------------------------

function setStatus(status) {
  document.body.dataset.status = status;
}

async function visitorToken() {
  const previous = storage.get(TOKEN_KEY);
  const response = await fetch('/api/v1/web/session', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(previous ? { token: previous } : {}),
  });
  if (!response.ok) {
    // A refused token (4xx) is forgotten, so the next attempt asks for a new visitor.
    if (response.status >= 400 && response.status < 500 && response.status !== 429) storage.remove(TOKEN_KEY);
    throw new Error(`visitor session: HTTP ${response.status}`);
  }
  const { token } = await response.json();
  if (typeof token !== 'string' || !token) throw new Error('visitor session: no token');
  storage.set(TOKEN_KEY, token);
  return token;
}

function socketUrl(token) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = new URLSearchParams({
    token,
    conversation: chat.conversationId ?? '',
    after: String(chat.lastSeq),
  });
  return `${scheme}//${location.host}/ws/web?${query}`;
}

async function connect() {
  link.retryTimer = 0;
  setStatus('connecting');
  let token;
  try {
    token = await visitorToken();
  } catch (error) {
    console.warn(error);
    scheduleReconnect();
    return;
  }
  const socket = new WebSocket(socketUrl(token));
  link.socket = socket;
  link.lastFrameAt = Date.now();
  // Events of a socket this page gave up on are ignored: a newer one may already be connected.
  socket.addEventListener('open', () => socket === link.socket && startPing(socket));
  socket.addEventListener('message', (event) => socket === link.socket && onFrame(event.data));
  socket.addEventListener('close', (event) => socket === link.socket && disconnected(event.code));
}

function disconnected(code) {
  link.socket = null;
  link.ready = false;
  clearInterval(link.pingTimer);
  setTyping(false);
  if (code === CLOSE_BAD_TOKEN) storage.remove(TOKEN_KEY); // expired or revoked: ask for a new one
  scheduleReconnect();
}

function scheduleReconnect() {
  setStatus('closed');
  showBanner(link.everReady ? 'reconnecting' : 'connecting');
  const base = Math.min(BACKOFF_FIRST_MS * 2 ** link.attempts, BACKOFF_MAX_MS);
  link.attempts += 1;
  // ±10 %: pages dropped by the same server restart do not all come back in the same instant.
  const delay = base * (0.9 + Math.random() * 0.2);
  link.retryTimer = setTimeout(connect, delay);
}

function startPing(socket) {
  clearInterval(link.pingTimer);
  link.pingTimer = setInterval(() => {
    if (Date.now() - link.lastFrameAt > SILENCE_LIMIT_MS) {
      link.socket = null; // its close event, whenever it comes, is ignored
      socket.close();
      disconnected(1006);
      return;
    }
    socket.send(JSON.stringify({ type: 'ping' }));
  }, PING_EVERY_MS);
}

// Back online: try now instead of waiting out the backoff.
function onOnline() {
  if (!link.retryTimer) return;
  clearTimeout(link.retryTimer);
  link.attempts = 0;
  connect();
}

// -- start -----------------------------------------------------------------------------------

function start() {
  ui.lang = initialLanguage();
  chat.section = newSection(null, false);
  dom.form.addEventListener('submit', (event) => {
    event.preventDefault();
    submitComposer();
  });
  dom.input.addEventListener('keydown', onComposerKey);
  dom.input.addEventListener('input', onComposerInput);
  for (const button of dom.langButtons) {
    button.addEventListener('click', () => setLanguage(button.dataset.lang));
  }
  window.addEventListener('online', onOnline);
  applyLanguage();
  updateCounter();
  updateWelcome();
  connect();
}

start();
