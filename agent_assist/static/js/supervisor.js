/**
 * Baton supervisor view (/agent/supervisor): agents and their load, the queue, first-response
 * breaches, handoffs by reason and the automation rate against its target band.
 *
 * Figures come from GET /api/v1/stats?day=today, the agent list and the queue. They are fetched
 * again shortly after any queue or agent event on the live socket (so changes show at once) and
 * every few seconds anyway (today's counters change without events). Waits tick every second
 * from the server's figure plus the time since it was fetched, so the browser's clock does not
 * need to agree with the server's. Every text from the server is inserted as text.
 */

import { byId, clear, duration, el } from './dom.js';
import { I18n } from './i18n.js';
import { AGENT_API, LiveSocket, Session } from './session.js';
import { bindSignIn, signInNotice } from './signin.js';
import { STRINGS } from './supervisor_strings.js';

const LANG_KEY = 'baton.agent.lang'; // the agent desk's key: one choice for both pages
const STATS_PATH = '/api/v1/stats?day=today';
const POLL_MS = 5_000;
const DEBOUNCE_MS = 250; // events come in bursts (queued, then assigned): fetch once for all
const TICK_MS = 1_000;
const RETRY_MS = 5_000;
const NONE = '—';
const TIME_FORMAT = { hour: '2-digit', minute: '2-digit', second: '2-digit' }; // with seconds: the figures change every few

const i18n = new I18n(STRINGS, LANG_KEY);
const session = new Session();
const socket = new LiveSocket(session, onFrame, onStatus);
const form = byId('signin-form');

/** The latest answers and when they came (`fetchedAt`, monotonic ms) to tick waits from. */
const state = {
  agent: null,
  stats: null,
  agents: [],
  queue: [],
  fetchedAt: 0,
  updatedAt: null,
  error: null,
  connection: 'idle',
  notice: '', // the key of the sign-in notice, redrawn in the new language on a switch
};
const timers = { poll: null, tick: null, debounce: null, boot: null };
let epoch = 0; // bumped on every sign-in and sign-out: answers from an earlier one are dropped
let inFlight = false;
let refreshAgain = false;

// -- views ------------------------------------------------------------------------------------

function view() {
  return document.body.dataset.view;
}

function show(name) {
  document.body.dataset.view = name;
}

/** Signed in: supervisors get the board, live; anyone else a notice and no figures. */
function enter(agent) {
  leave();
  state.agent = agent;
  byId('me').textContent = agent.name;
  if (agent.role !== 'supervisor') {
    show('denied');
    renderDenied();
    return;
  }
  show('desk');
  socket.start();
  timers.poll = setInterval(() => {
    if (!document.hidden) refresh();
  }, POLL_MS);
  timers.tick = setInterval(tick, TICK_MS);
  refresh();
}

/** Stop everything live and forget what was shown (the next person must not see it). */
function leave() {
  epoch += 1;
  socket.stop();
  for (const name of Object.keys(timers)) {
    clearTimeout(timers[name]); // intervals too: timeouts and intervals share one list of ids
    timers[name] = null;
  }
  Object.assign(state, { agent: null, stats: null, agents: [], queue: [], error: null });
  onStatus('idle');
  clearBoard();
}

function showSignIn(noticeKey = '') {
  leave();
  show('signin');
  state.notice = noticeKey;
  signInNotice(form, noticeKey ? i18n.t(noticeKey) : '');
  form.elements.agent_id.focus();
}

/** On load: a token from an earlier visit (or the agent desk, in this tab) is checked first. */
async function boot() {
  if (!session.signedIn) {
    showSignIn();
    return;
  }
  try {
    enter(await session.call('GET', `${AGENT_API}/me`));
  } catch (error) {
    if (error.status === 401) return; // session.onExpired shows the form
    onStatus('lost');
    timers.boot = setTimeout(boot, RETRY_MS);
  }
}

async function signOut() {
  await session.signOut();
  showSignIn();
}

// -- fetching ---------------------------------------------------------------------------------

/** Fetch again; while a fetch is under way, one more is made after it (not one per call). */
async function refresh() {
  if (inFlight) {
    refreshAgain = true;
    return;
  }
  inFlight = true;
  try {
    do {
      refreshAgain = false;
      await fetchFigures();
    } while (refreshAgain);
  } finally {
    inFlight = false;
  }
}

/** The stats, the agents and the queue, fetched together so the tiles and tables agree. */
async function fetchFigures() {
  const started = epoch;
  let answers;
  try {
    answers = await Promise.all([
      session.call('GET', STATS_PATH),
      session.call('GET', `${AGENT_API}/agents`),
      session.call('GET', `${AGENT_API}/queue`),
    ]);
  } catch (error) {
    if (started !== epoch || error.status === 401) return; // 401: session.onExpired took over
    state.error = error;
    render();
    return;
  }
  if (started !== epoch) return;
  const [stats, agents, queue] = answers;
  Object.assign(state, {
    stats,
    agents: agents.agents,
    queue: queue.waiting,
    fetchedAt: performance.now(),
    updatedAt: new Date(),
    error: null,
  });
  render();
}

function scheduleRefresh() {
  clearTimeout(timers.debounce);
  timers.debounce = setTimeout(refresh, DEBOUNCE_MS);
}

function onFrame(frame) {
  if (frame.type === 'queue' || frame.type === 'agents' || frame.type === 'hello') scheduleRefresh();
}

function onStatus(status) {
  state.connection = status;
  renderConnection();
}

// -- drawing ----------------------------------------------------------------------------------

function locale() {
  return i18n.language === 'zh' ? 'zh-CN' : 'en';
}

function percent(share) {
  return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 1 }).format(share);
}

/** Where a rate stands against the target band ("none" without conversations yet). */
function automationStatus(rate, target) {
  if (rate === null || rate === undefined) return 'none';
  if (rate < target.low) return 'below';
  if (rate > target.high) return 'above';
  return 'within';
}

function render() {
  document.title = i18n.t('pageTitle');
  if (view() === 'denied') renderDenied();
  renderConnection();
  renderError();
  if (view() !== 'desk' || !state.stats) return;
  renderTiles();
  renderAutomation();
  renderAgents();
  renderReasons();
  renderQueue();
  tick();
}

function renderDenied() {
  byId('supervisor-only-text').textContent = i18n.t('supervisorOnlyText', { name: state.agent?.name ?? '' });
}

function renderConnection() {
  document.body.dataset.connection = state.connection;
  const texts = { connecting: 'connecting', lost: 'connectionLost' };
  byId('connection').textContent = texts[state.connection] ? i18n.t(texts[state.connection]) : '';
}

function renderError() {
  const box = byId('board-error');
  const error = state.error;
  box.hidden = !error;
  if (!error) return;
  box.textContent =
    error.status === 0 ? i18n.t('refreshUnreachable') : i18n.t('refreshFailed', { message: error.message });
}

function setTile(id, value, note = '') {
  const tile = byId(id);
  tile.querySelector('.tile__value').textContent = value;
  tile.querySelector('.tile__note').textContent = note;
  return tile;
}

function renderTiles() {
  const { stats, agents } = state;
  const live = stats.live;
  setTile('tile-agents-online', String(live.agents_online), i18n.t('agentsTotal', { n: agents.length }));
  setTile(
    'tile-queue',
    String(live.queue_length),
    live.tickets_waiting ? i18n.t('leftMessages', { n: live.tickets_waiting }) : '',
  );
  // Room left among the agents online: what the queue can still be drained into right now.
  const room = agents
    .filter((agent) => agent.online)
    .reduce((sum, agent) => sum + Math.max(0, agent.max_chats - agent.load), 0);
  setTile('tile-in-progress', String(live.chats_in_progress), i18n.t('freeSeats', { n: room }));
  const firstResponse = stats.first_response_time?.average_seconds;
  const breaches = setTile(
    'tile-breaches',
    String(stats.first_response_breaches),
    firstResponse === null || firstResponse === undefined
      ? i18n.t('noFirstResponses')
      : i18n.t('averageFirstResponse', { time: duration(firstResponse) }),
  );
  breaches.dataset.alert = String(stats.first_response_breaches > 0);
  const handedOff = i18n.t('handedOff', { n: stats.conversations_handed_off });
  setTile('tile-conversations', String(stats.conversations), handedOff);
  const wait = stats.waiting_time?.average_seconds;
  setTile(
    'tile-handoffs',
    String(stats.handoffs),
    wait === null || wait === undefined ? '' : i18n.t('averageWait', { time: duration(wait) }),
  );
  const time = state.updatedAt.toLocaleTimeString(locale(), TIME_FORMAT);
  byId('updated').textContent = i18n.t('updated', { time });
}

function renderAutomation() {
  const { automation_rate: rate, automation_target: target } = state.stats;
  const status = automationStatus(rate, target);
  byId('tile-automation').dataset.status = status;
  byId('automation-rate').textContent = rate === null || rate === undefined ? NONE : percent(rate);
  const label = byId('automation-status');
  label.dataset.status = status;
  label.textContent = i18n.t(`status_${status}`);
  byId('automation-hint').textContent = status === 'below' || status === 'above' ? i18n.t(`hint_${status}`) : '';
  byId('automation-target').textContent = i18n.t('automationTarget', {
    low: Math.round(target.low * 100),
    high: percent(target.high),
  });
  // Positions set through the CSSOM, which the page's CSP allows (style attributes it would not).
  const band = byId('automation-band');
  band.style.left = `${target.low * 100}%`;
  band.style.width = `${(target.high - target.low) * 100}%`;
  const marker = byId('automation-marker');
  marker.hidden = status === 'none';
  if (status !== 'none') marker.style.left = `${Math.min(1, Math.max(0, rate)) * 100}%`;
}

/** A horizontal bar filled to `share` (0..1); the figure beside it carries the meaning. */
function bar(share, extraClass = '') {
  const fill = el('span', { class: 'bar__fill' });
  fill.style.width = `${Math.min(1, Math.max(0, share)) * 100}%`;
  return el('span', { class: `bar ${extraClass}`.trim(), attrs: { 'aria-hidden': 'true' } }, [fill]);
}

function badge(text, kind, data = {}) {
  return el('span', { class: `badge${kind ? ` badge--${kind}` : ''}`, text, data });
}

function renderAgents() {
  const body = byId('agents');
  const agents = [...state.agents].sort(
    (a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name, locale()),
  );
  clear(body);
  for (const agent of agents) {
    const full = agent.load >= agent.max_chats;
    const skills = agent.skills.map((skill) => badge(i18n.label(`skill_${skill}`, skill)));
    const languages = agent.languages.map((language) => i18n.label(`speaks_${language}`, language));
    body.append(
      el('tr', { data: { agentId: agent.id, online: String(agent.online) } }, [
        el('td', {}, [
          el('span', { class: 'agent' }, [
            el('span', { class: 'agent__name', text: agent.name }),
            el('span', { class: 'agent__id', text: agent.id }),
            agent.role === 'supervisor' && badge(i18n.t('role_supervisor'), 'role'),
          ]),
        ]),
        el('td', {}, [
          el('span', {
            class: 'presence',
            text: i18n.t(agent.online ? 'online' : 'offline'),
            data: { online: String(agent.online) },
          }),
        ]),
        el('td', { class: 'load', data: { full: String(full) } }, [
          el('span', { class: 'load__text', text: `${agent.load} / ${agent.max_chats}` }),
          bar(agent.max_chats ? agent.load / agent.max_chats : 0, 'bar--load'),
        ]),
        el('td', {}, [el('span', { class: 'badges' }, skills)]),
        el('td', { class: 'languages', text: languages.join(' · ') }),
      ]),
    );
  }
  byId('agents-empty').hidden = agents.length > 0;
}

function renderReasons() {
  const list = byId('reasons');
  const { handoffs_by_reason: byReason, handoffs } = state.stats;
  const entries = Object.entries(byReason ?? {})
    .filter(([, count]) => count > 0)
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)); // ties: by code, the same in every language
  // Each handoff is counted under its main reason, so the counts add up to the handoffs.
  const total = Math.max(handoffs, entries.reduce((sum, [, count]) => sum + count, 0));
  clear(list);
  for (const [reason, count] of entries) {
    list.append(
      el('li', { class: 'reason', data: { reason }, title: i18n.t('reasonShare', { count, total }) }, [
        el('span', { class: 'reason__label', text: i18n.label(`reason_${reason}`, reason) }),
        bar(count / total, 'bar--reason'),
        el('span', { class: 'reason__count', text: String(count) }),
        el('span', { class: 'reason__share', text: percent(count / total) }),
      ]),
    );
  }
  byId('reasons-empty').hidden = entries.length > 0;
}

function renderQueue() {
  const body = byId('queue');
  const total = state.stats.live.queue_length;
  clear(body);
  for (const handoff of state.queue) {
    const flags = [
      ...handoff.reasons.map((r) => badge(i18n.label(`reason_${r}`, r), 'reason', { reason: r })),
      handoff.severity > 1 && badge(i18n.t(`severity_${handoff.severity}`), `severity-${handoff.severity}`),
      handoff.vip && badge(i18n.t('vip'), 'vip'),
      handoff.ticket && badge(i18n.t('ticket'), 'ticket'),
    ];
    const wait = el('span', { class: 'wait', data: { seconds: String(handoff.wait_seconds) } });
    const summary = handoff.summary ?? '';
    if (handoff.breached) wait.title = i18n.t('breachedHelp');
    body.append(
      el(
        'tr',
        {
          class: handoff.breached ? 'is-breached' : '',
          data: { handoffId: handoff.id, conversationId: handoff.conversation_id },
        },
        [
          el('td', { class: 'queue__wait' }, [wait, handoff.breached && badge(i18n.t('breached'), 'breach')]),
          el('td', {}, [el('span', { class: 'badges' }, flags)]),
          el('td', { text: i18n.label(`channel_${handoff.channel}`, handoff.channel) }),
          el('td', { text: handoff.language ? i18n.label(`speaks_${handoff.language}`, handoff.language) : NONE }),
          el('td', { text: i18n.label(`skill_${handoff.skill}`, handoff.skill) }),
          el('td', { class: 'col-summary queue__summary', text: summary, title: summary }),
        ],
      ),
    );
  }
  // The server may leave summaries empty (the handoff package has one): hide a column of blanks.
  byId('queue-table').dataset.summaries = String(state.queue.some((handoff) => handoff.summary));
  byId('queue-count').textContent = String(total);
  byId('queue-empty').hidden = state.queue.length > 0;
  const more = byId('queue-more');
  more.hidden = state.queue.length >= total;
  more.textContent = more.hidden ? '' : i18n.t('queueMore', { shown: state.queue.length, total });
}

/** Advance the waits by the time since the figures were fetched. */
function tick() {
  if (!state.stats) return;
  const since = (performance.now() - state.fetchedAt) / 1000;
  const live = state.stats.live;
  const waiting = live.queue_length > 0;
  const tile = setTile(
    'tile-longest-wait',
    waiting ? duration(live.longest_wait_seconds + since) : NONE,
    waiting ? '' : i18n.t('nobodyWaiting'),
  );
  tile.dataset.alert = String(state.queue.some((handoff) => handoff.breached));
  for (const wait of byId('queue').querySelectorAll('.wait')) {
    wait.textContent = duration(Number(wait.dataset.seconds) + since);
  }
}

/** Put the board back to its empty look (after sign-out, before the next person's figures). */
function clearBoard() {
  for (const node of document.querySelectorAll('.tile__value')) node.textContent = NONE;
  for (const node of document.querySelectorAll('.tile__note')) node.textContent = '';
  for (const tile of document.querySelectorAll('.tile')) {
    delete tile.dataset.alert;
    delete tile.dataset.status;
  }
  for (const id of ['agents', 'reasons', 'queue']) clear(byId(id));
  for (const id of ['updated', 'queue-count', 'automation-status', 'automation-target', 'automation-hint']) {
    byId(id).textContent = '';
  }
  byId('automation-status').dataset.status = 'none';
  byId('automation-marker').hidden = true;
  byId('me').textContent = '';
}

// -- wiring -----------------------------------------------------------------------------------

session.onExpired = () => showSignIn('sessionEnded');
bindSignIn(form, session, i18n, enter);
form.addEventListener('submit', () => {
  state.notice = ''; // the form shows its own outcome from here on
});
byId('sign-out').addEventListener('click', signOut);
byId('denied-sign-out').addEventListener('click', signOut);
i18n.bindToggle(document.querySelector('.lang-toggle'));
i18n.onChange(() => {
  render();
  if (view() === 'signin' && state.notice) signInNotice(form, i18n.t(state.notice));
});
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && view() === 'desk') refresh();
});

i18n.apply(document);
document.title = i18n.t('pageTitle');
boot();
