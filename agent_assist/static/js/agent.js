/**
 * The agent desk: sign in, go online, the live queue and the agent's chats, and the open chat
 * with its context, suggested replies and actions.
 *
 * It speaks the agent API (api/agent.py): REST for what the agent does, the WebSocket for what
 * happens (hello, queue, assigned, turn, understood, state, note). A chat opens at
 * `/agent#/c/<conversation id>`; the server decides whether this agent may see it.
 * Text from the server only ever reaches the page as text.
 */

import { Alerts } from './alerts.js';
import { AGENT_STRINGS } from './agent_strings.js';
import {
  customerName,
  drawNotes,
  drawProfile,
  drawSuggestions,
  markMood,
  noteItem,
  noteKey,
  reasonBadges,
  turnItem,
} from './conversation.js';
import { byId, clear, duration, el } from './dom.js';
import { I18n } from './i18n.js';
import { KnowledgeSearch } from './knowledge_search.js';
import { AGENT_API, LiveSocket, Session } from './session.js';
import { bindSignIn, signInNotice } from './signin.js';
import { withCommon } from './strings.js';
import { TransferDialog } from './transfer.js';

const MAX_CHARS = 4000;
const TOAST_MS = 4000;
const RETRY_MS = 5000;
const NEAR_END_PX = 64; // an agent reading this close to the end is kept at the end as turns arrive
const OPEN_STATUSES = new Set(['new', 'waiting']);

const i18n = new I18n(withCommon(AGENT_STRINGS), 'baton.agent.lang');
const session = new Session();
const alerts = new Alerts();

const desk = {
  me: null,
  agentNames: new Map(), // agent id -> name, for agent turns and notes
  chats: new Map(), // conversation id -> handoff assigned to me
  queue: new Map(), // handoff id -> waiting handoff I may take
  unread: new Map(), // conversation id -> customer messages not yet seen
  queueUnseen: new Set(), // handoff ids that came in since the agent last looked at the queue
  active: null, // {id, pack, seqs: Set<number>, notes: Set<string>}
};

// -- sign in, sign out, connection ------------------------------------------------------------

const socket = new LiveSocket(session, onFrame, (status) => {
  document.body.dataset.connection = status;
  byId('connection').textContent = status === 'open' ? '' : i18n.t(status === 'lost' ? 'connectionLost' : 'connecting');
});

session.onExpired = () => showSignIn(i18n.t('sessionEnded'));

function showSignIn(notice = '') {
  socket.stop();
  resetDesk();
  document.body.dataset.view = 'signin';
  signInNotice(byId('signin-form'), notice);
  byId('signin-form').elements.agent_id.focus();
}

async function startDesk() {
  document.body.dataset.view = 'desk';
  try {
    desk.me = await session.call('GET', `${AGENT_API}/me`);
  } catch (failure) {
    if (failure.status === 401) return; // session.onExpired shows the sign-in form
    // The service is restarting or unreachable: say so and try again.
    document.body.dataset.connection = 'lost';
    byId('connection').textContent = i18n.t('connectionLost');
    setTimeout(() => session.signedIn && startDesk(), RETRY_MS);
    return;
  }
  drawMe();
  loadAgentNames();
  socket.start();
  openFromAddress();
}

function resetDesk() {
  desk.me = null;
  desk.chats.clear();
  desk.queue.clear();
  desk.unread.clear();
  desk.queueUnseen.clear();
  desk.active = null;
  drawLists();
  showPlaceholder();
}

async function loadAgentNames() {
  try {
    const { agents } = await session.call('GET', `${AGENT_API}/agents`);
    for (const agent of agents) desk.agentNames.set(agent.id, agent.name);
  } catch {
    // Names are a nicety; ids are shown instead.
  }
}

function drawMe() {
  const me = desk.me;
  byId('me').textContent = me.name;
  byId('online').checked = me.online;
  byId('online-label').textContent = i18n.t(me.online ? 'online' : 'offline');
  byId('supervisor-link').hidden = me.role !== 'supervisor';
}

// -- live frames ------------------------------------------------------------------------------

function onFrame(frame) {
  switch (frame.type) {
    case 'hello':
      desk.me = { ...desk.me, ...frame.agent };
      drawMe();
      desk.chats = new Map(frame.chats.map((h) => [h.conversation_id, h]));
      desk.queue = new Map(frame.queue.map((h) => [h.id, h]));
      drawLists();
      if (desk.active) openConversation(desk.active.id); // catch up on what a reconnect missed
      break;
    case 'queue':
      onQueueEvent(frame.event, frame.handoff);
      break;
    case 'assigned':
      onAssigned(frame.handoff, frame.package);
      break;
    case 'turn':
      onTurn(frame.conversation_id, frame.turn);
      break;
    case 'understood':
      if (desk.active?.id === frame.conversation_id) {
        const { pack } = desk.active;
        const turn = pack.transcript.find((t) => t.seq === frame.seq);
        if (turn) turn.nlu = frame.nlu;
        markMood(i18n, byId('transcript'), frame.seq, frame.nlu?.sentiment);
        pack.suggestions = frame.suggestions;
        drawSuggestions(i18n, frame.suggestions, pickReply);
      }
      break;
    case 'state':
      onState(frame.conversation_id, frame.state);
      break;
    case 'note':
      if (desk.active?.id === frame.conversation_id) addNote(frame.note);
      break;
    default:
      break; // pong, agents: nothing to draw
  }
}

function onQueueEvent(event, handoff) {
  const known = desk.queue.has(handoff.id);
  if (OPEN_STATUSES.has(handoff.status)) {
    desk.queue.set(handoff.id, handoff);
    if (!known && event !== 'breach') {
      desk.queueUnseen.add(handoff.id);
      alerts.notify(i18n.t('newInQueueNotice', { reason: reasonText(handoff) }), handoff.summary, handoff.id);
    }
  } else {
    desk.queue.delete(handoff.id);
    desk.queueUnseen.delete(handoff.id);
  }
  if (handoff.status === 'assigned' && handoff.agent_id === desk.me?.id) desk.chats.set(handoff.conversation_id, handoff);
  else if (desk.chats.get(handoff.conversation_id)?.id === handoff.id && handoff.status !== 'assigned') {
    desk.chats.delete(handoff.conversation_id);
  }
  if (event === 'breach' && desk.chats.has(handoff.conversation_id)) desk.chats.set(handoff.conversation_id, handoff);
  drawLists();
  const active = desk.active;
  if (active?.pack.handoff?.id === handoff.id) {
    active.pack.handoff = handoff;
    drawChatHead();
    if (handoff.status === 'assigned' && handoff.agent_id !== desk.me.id) {
      toast(i18n.t('takenBy', { agent: desk.agentNames.get(handoff.agent_id) ?? handoff.agent_id }));
    }
  }
}

function onAssigned(handoff, pack) {
  desk.chats.set(handoff.conversation_id, handoff);
  desk.queue.delete(handoff.id);
  desk.queueUnseen.delete(handoff.id);
  alerts.notify(i18n.t('newChat', { reason: reasonText(handoff) }), handoff.summary, handoff.id);
  if (mode() !== 'mine' || desk.active.id === handoff.conversation_id) {
    // The agent is not in a chat of their own (nothing open, one resolved or handed on, a
    // preview of the queue): show the new chat at once. Otherwise it waits in the list, unread.
    if (pack) showConversation(handoff.conversation_id, pack);
    else openConversation(handoff.conversation_id);
    history.replaceState(null, '', `#/c/${encodeURIComponent(handoff.conversation_id)}`);
  } else {
    desk.unread.set(handoff.conversation_id, (desk.unread.get(handoff.conversation_id) ?? 0) + 1);
  }
  drawLists();
}

function onTurn(conversationId, turn) {
  const active = desk.active;
  const looking = active?.id === conversationId && !document.hidden;
  if (active?.id === conversationId) appendTurn(turn);
  if (turn.sender === 'customer') {
    if (!looking) {
      desk.unread.set(conversationId, (desk.unread.get(conversationId) ?? 0) + 1);
      drawLists();
    }
    if (!looking || document.hidden) alerts.notify(i18n.t('newMessage'), turn.text, conversationId);
  }
}

function onState(conversationId, state) {
  if (state !== 'assigned') {
    desk.chats.delete(conversationId);
    desk.unread.delete(conversationId);
    drawLists();
  }
  if (desk.active?.id === conversationId) {
    desk.active.pack.conversation.state = state;
    if (state !== 'assigned' && desk.active.pack.handoff?.status === 'assigned') {
      desk.active.pack.handoff = { ...desk.active.pack.handoff, status: state === 'queued' ? 'waiting' : 'closed' };
    }
    drawChatHead();
  }
}

// -- the lists --------------------------------------------------------------------------------

function reasonText(handoff) {
  return (handoff.reasons ?? []).map((code) => i18n.label(`reason_${code}`, code)).join(', ');
}

function drawLists() {
  const mine = [...desk.chats.values()].sort((a, b) => (a.assigned_at ?? 0) - (b.assigned_at ?? 0));
  syncList(byId('chats'), mine, false);
  byId('chats-empty').hidden = mine.length > 0;

  const waiting = [...desk.queue.values()].sort((a, b) => a.priority - b.priority || a.created_at - b.created_at);
  syncList(byId('queue'), waiting, true);
  byId('queue-empty').hidden = waiting.length > 0;
  byId('queue-count').textContent = String(waiting.length);
  drawCounts();
  tickWaits();
}

/** The unread badges and the tab title's count. */
function drawCounts() {
  const unread = [...desk.unread.values()].reduce((sum, n) => sum + n, 0);
  setCount(byId('chats-unread'), unread);
  setCount(byId('queue-unread'), desk.queueUnseen.size);
  const total = unread + desk.queueUnseen.size;
  document.title = (total ? `(${total}) ` : '') + i18n.t('title');
}

/**
 * Make `list` show `handoffs` in order, keeping the element of every entry that has not changed:
 * an element replaced under the agent's pointer would swallow their click.
 */
function syncList(list, handoffs, inQueue) {
  const kept = new Map([...list.children].map((node) => [node.dataset.handoffId, node]));
  const nodes = handoffs.map((handoff) => {
    const version = [
      handoff.updated_at,
      handoff.breached,
      desk.unread.get(handoff.conversation_id) ?? 0,
      desk.active?.id === handoff.conversation_id,
      i18n.language,
    ].join('|');
    const node = kept.get(handoff.id);
    if (node?.dataset.version === version) return node;
    const fresh = listItem(handoff, inQueue);
    fresh.dataset.version = version;
    return fresh;
  });
  const same = nodes.length === list.children.length && nodes.every((node, i) => list.children[i] === node);
  if (!same) list.replaceChildren(...nodes);
}

function setCount(node, n) {
  node.textContent = String(n);
  node.hidden = n === 0;
}

function listItem(handoff, inQueue) {
  const conversationId = handoff.conversation_id;
  const badges = [...reasonBadges(i18n, handoff.reasons)];
  if (handoff.vip) badges.unshift(el('span', { class: 'badge badge--vip', text: i18n.t('vip') }));
  if (handoff.severity >= 2) {
    badges.push(el('span', { class: `badge badge--severity-${handoff.severity}`, text: i18n.t(`severity_${handoff.severity}`) }));
  }
  if (handoff.ticket) badges.push(el('span', { class: 'badge badge--ticket', text: i18n.t('leftMessage') }));
  if (handoff.breached) badges.push(el('span', { class: 'badge badge--breach', text: i18n.t('breached') }));
  const meta = [
    i18n.label(`channel_${handoff.channel}`, handoff.channel),
    i18n.label(`lang_${handoff.language}`, handoff.language),
    handoff.skill,
  ].join(' · ');
  // The queue shows how long the customer has waited; my chats how long I have had them.
  const since = inQueue ? handoff.created_at : (handoff.assigned_at ?? handoff.created_at);
  const wait = el('span', { class: 'item__wait', title: i18n.t('waitFor'), data: { since: String(since) } });
  const open = el(
    'button',
    { class: 'item__open', attrs: { type: 'button' }, on: { click: () => go(conversationId) } },
    [
      el('span', { class: 'item__top' }, [el('span', { class: 'item__name', text: i18n.t('anonymous', { id: handoff.customer_id.slice(-6) }) }), wait]),
      el('span', { class: 'badges' }, badges),
      el('span', { class: 'item__meta', text: meta }),
      el('span', { class: 'item__summary', text: handoff.summary, title: handoff.summary }),
    ],
  );
  const item = el('li', { class: 'item', data: { handoffId: handoff.id, conversationId } }, [open]);
  item.classList.toggle('is-breached', Boolean(handoff.breached));
  if (desk.active?.id === conversationId) item.setAttribute('aria-current', 'true');
  if (inQueue) {
    item.append(
      el('button', {
        class: 'item__accept primary',
        text: i18n.t('accept'),
        attrs: { type: 'button' },
        on: { click: () => accept(handoff) },
      }),
    );
  } else {
    const unread = desk.unread.get(conversationId) ?? 0;
    if (unread) item.append(el('span', { class: 'count item__unread', text: String(unread) }));
  }
  return item;
}

/** Update every wait clock (queue entries and the open chat's header) to now. */
function tickWaits() {
  const now = Date.now() / 1000;
  for (const node of document.querySelectorAll('[data-since]')) {
    node.textContent = duration(now - Number(node.dataset.since));
  }
}

// -- one conversation -------------------------------------------------------------------------

function go(conversationId) {
  const hash = `#/c/${encodeURIComponent(conversationId)}`;
  if (location.hash === hash) openConversation(conversationId);
  else location.hash = hash; // hashchange opens it, and Back returns to the previous chat
}

function openFromAddress() {
  const match = /^#\/c\/(.+)$/.exec(location.hash);
  if (match) openConversation(decodeURIComponent(match[1]));
}

async function openConversation(conversationId) {
  let pack;
  try {
    pack = await session.call('GET', `${AGENT_API}/conversations/${encodeURIComponent(conversationId)}`);
  } catch (failure) {
    if (failure.status === 403 || failure.status === 404) showDenied(i18n.t(failure.status === 403 ? 'notYours' : 'notFound'));
    else if (failure.status !== 401) toast(i18n.t('error_unknown', { message: failure.message }), 'error');
    return;
  }
  showConversation(conversationId, pack);
}

function showPlaceholder() {
  desk.active = null;
  byId('chat-view').hidden = true;
  byId('chat-denied').hidden = true;
  byId('profile').hidden = true;
  byId('chat-placeholder').hidden = false;
}

function showDenied(message) {
  showPlaceholder();
  byId('chat-placeholder').hidden = true;
  const denied = byId('chat-denied');
  denied.textContent = message;
  denied.hidden = false;
  drawLists();
}

function showConversation(conversationId, pack) {
  const switching = desk.active?.id !== conversationId;
  desk.active = { id: conversationId, pack, seqs: new Set(), notes: new Set((pack.notes ?? []).map(noteKey)) };
  desk.unread.delete(conversationId);
  byId('chat-placeholder').hidden = true;
  byId('chat-denied').hidden = true;
  byId('chat-view').hidden = false;
  byId('profile').hidden = false;
  drawChatHead();
  const transcript = byId('transcript');
  clear(transcript);
  for (const turn of pack.transcript) appendTurn(turn, false);
  transcript.scrollTop = transcript.scrollHeight;
  drawSuggestions(i18n, pack.suggestions, pickReply);
  drawProfile(i18n, pack);
  drawNotes(i18n, pack.notes ?? [], desk.agentNames);
  if (switching) {
    byId('reply').value = '';
    byId('composer-error').hidden = true;
  }
  drawLists();
  if (mode() === 'mine') byId('reply').focus();
}

/** What the agent may do with the open chat: "mine" (reply), "waiting" (accept) or "readonly". */
function mode() {
  const handoff = desk.active?.pack.handoff;
  if (!handoff) return 'readonly';
  if (handoff.status === 'assigned' && handoff.agent_id === desk.me?.id) return 'mine';
  if (OPEN_STATUSES.has(handoff.status)) return 'waiting';
  return 'readonly';
}

function drawChatHead() {
  const { pack } = desk.active;
  const handoff = pack.handoff ?? {};
  const conversation = pack.conversation;
  byId('chat-title').textContent = customerName(i18n, pack.customer, conversation.customer_id);
  const meta = [
    i18n.label(`channel_${conversation.channel}`, conversation.channel),
    i18n.label(`lang_${conversation.language}`, conversation.language ?? ''),
    handoff.skill,
    pack.customer?.tier,
  ].filter(Boolean);
  byId('chat-meta').textContent = meta.join(' · ');
  byId('chat-state').textContent = i18n.label(`state_${conversation.state}`, conversation.state);
  const reasons = byId('chat-reasons');
  clear(reasons);
  reasons.append(...reasonBadges(i18n, pack.reasons));
  if (handoff.vip) reasons.prepend(el('span', { class: 'badge badge--vip', text: i18n.t('vip') }));
  if (handoff.breached) reasons.append(el('span', { class: 'badge badge--breach', text: i18n.t('breached') }));
  byId('chat-summary').textContent = pack.summary ?? '';
  const current = mode();
  byId('chat-view').dataset.mode = current;
  byId('accept').hidden = current !== 'waiting';
  for (const id of ['transfer', 'handback', 'resolve']) byId(id).hidden = current !== 'mine';
}

/** Draw a turn; `live` for one that just happened (kept in the package, followed by the scroll). */
function appendTurn(turn, live = true) {
  const active = desk.active;
  if (!active || active.seqs.has(turn.seq)) return; // a turn both sent back by the API and pushed
  active.seqs.add(turn.seq);
  if (live) active.pack.transcript.push(turn);
  const transcript = byId('transcript');
  const nearEnd = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < NEAR_END_PX;
  const item = turnItem(i18n, turn, desk.agentNames);
  // Turns normally arrive in order; one that comes late goes where its seq says.
  const later = [...transcript.children].find((node) => Number(node.dataset.seq) > turn.seq);
  transcript.insertBefore(item, later ?? null);
  if (live && (nearEnd || turn.sender === 'agent')) transcript.scrollTop = transcript.scrollHeight;
}

function addNote(note) {
  const active = desk.active;
  const key = noteKey(note);
  if (!active || active.notes.has(key)) return;
  active.notes.add(key);
  active.pack.notes = [...(active.pack.notes ?? []), note];
  const list = byId('notes');
  list.querySelector('.empty')?.remove();
  list.append(noteItem(i18n, note, desk.agentNames));
}

function pickReply(text) {
  const reply = byId('reply');
  reply.value = text;
  reply.focus();
  reply.setSelectionRange(text.length, text.length);
}

// -- actions ----------------------------------------------------------------------------------

function conversationPath(suffix = '') {
  return `${AGENT_API}/conversations/${encodeURIComponent(desk.active.id)}${suffix}`;
}

async function act(work, done) {
  try {
    await work();
    if (done) toast(i18n.t(done));
  } catch (failure) {
    if (failure.status !== 401) toast(failure.message || i18n.t('error_unknown', { message: failure.code }), 'error');
  }
}

async function accept(handoff) {
  await act(async () => {
    const { handoff: taken } = await session.call('POST', `${AGENT_API}/handoffs/${encodeURIComponent(handoff.id)}/accept`);
    desk.queue.delete(handoff.id);
    desk.queueUnseen.delete(handoff.id);
    desk.chats.set(taken.conversation_id, taken);
    go(taken.conversation_id);
  }, 'accepted');
}

async function sendReply(event) {
  event.preventDefault();
  const reply = byId('reply');
  const error = byId('composer-error');
  const text = reply.value.trim();
  error.hidden = true;
  if (!text || text.length > MAX_CHARS) {
    error.textContent = i18n.t(text ? 'tooLong' : 'empty');
    error.hidden = false;
    return;
  }
  const button = byId('send');
  button.disabled = true;
  // One id per message written: sending the same text again after a failure is a retry of it,
  // which the server stores once even if the first try got through.
  if (reply.dataset.sentText !== text) {
    reply.dataset.sentText = text;
    reply.dataset.messageId = crypto.randomUUID();
  }
  try {
    const { turn } = await session.call('POST', conversationPath('/messages'), {
      text,
      client_message_id: reply.dataset.messageId,
    });
    reply.value = '';
    delete reply.dataset.sentText;
    appendTurn(turn);
  } catch (failure) {
    error.textContent = failure.message; // the text stays in the composer, to retry
    error.hidden = false;
  } finally {
    button.disabled = false;
    reply.focus();
  }
}

async function addNoteFromForm(event) {
  event.preventDefault();
  const field = byId('note');
  const text = field.value.trim();
  if (!text || !desk.active) return;
  await act(async () => {
    const { note } = await session.call('POST', conversationPath('/notes'), { text });
    field.value = '';
    addNote(note);
  });
}

const transferDialog = new TransferDialog(session, i18n, async (target) => {
  const conversationId = desk.active.id;
  const { handoff } = await session.call('POST', conversationPath('/transfer'), target);
  desk.chats.delete(conversationId);
  desk.active.pack.handoff = handoff;
  drawChatHead();
  drawLists();
  toast(i18n.t('transferred'));
});

const search = new KnowledgeSearch(
  session,
  i18n,
  () => desk.active?.pack.conversation.language ?? i18n.language,
  (text) => {
    if (mode() === 'mine') pickReply(text);
    else navigator.clipboard?.writeText(text).catch(() => {});
  },
);

// -- the page ---------------------------------------------------------------------------------

let toastTimer = null;

function toast(message, kind = 'info') {
  const node = byId('toast');
  node.textContent = message;
  node.dataset.kind = kind;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (node.hidden = true), TOAST_MS);
}

function wire() {
  i18n.apply(document);
  i18n.bindToggle(document.querySelector('.lang-toggle'));
  i18n.onChange(() => {
    if (desk.me) drawMe();
    drawLists();
    if (desk.active) showConversation(desk.active.id, desk.active.pack);
    byId('alerts').setAttribute('aria-pressed', String(alerts.enabled));
  });
  bindSignIn(byId('signin-form'), session, i18n, () => startDesk());
  byId('sign-out').addEventListener('click', async () => {
    await session.signOut();
    showSignIn();
  });
  byId('online').addEventListener('change', async (event) => {
    const wanted = event.target.checked;
    await act(async () => {
      desk.me = { ...desk.me, ...(await session.call('PUT', `${AGENT_API}/status`, { online: wanted })) };
    });
    drawMe();
  });
  const alertsButton = byId('alerts');
  alertsButton.setAttribute('aria-pressed', String(alerts.enabled));
  alertsButton.addEventListener('click', async () => {
    alertsButton.setAttribute('aria-pressed', String(await alerts.toggle()));
  });
  // Looking at the queue is what makes its new entries seen. Only the counts are redrawn: a
  // list redrawn under the pointer would swallow the click that follows (on Accept, say).
  for (const type of ['pointerdown', 'focusin']) {
    byId('queue-section').addEventListener(type, () => {
      if (desk.queueUnseen.size) {
        desk.queueUnseen.clear();
        drawCounts();
      }
    });
  }
  byId('composer').addEventListener('submit', sendReply);
  byId('reply').addEventListener('keydown', (event) => {
    // Enter sends; Shift+Enter breaks the line; Enter that confirms an IME candidate does neither.
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      byId('composer').requestSubmit();
    }
  });
  byId('open-search').addEventListener('click', () => search.open());
  byId('note-form').addEventListener('submit', addNoteFromForm);
  byId('accept').addEventListener('click', () => desk.active && accept(desk.active.pack.handoff));
  byId('transfer').addEventListener('click', () =>
    act(() => transferDialog.open(desk.me.id, desk.active.pack.handoff?.skill)),
  );
  byId('resolve').addEventListener('click', () =>
    act(() => session.call('POST', conversationPath('/resolve')), 'resolved'),
  );
  byId('handback').addEventListener('click', () =>
    act(() => session.call('POST', conversationPath('/handback')), 'handedBack'),
  );
  window.addEventListener('hashchange', openFromAddress);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && desk.active && desk.unread.delete(desk.active.id)) drawLists();
  });
  setInterval(tickWaits, 1000);
}

wire();
if (session.signedIn) startDesk();
else showSignIn();
