/**
 * Drawing one handed-off conversation: its header, transcript, suggested replies and the
 * customer's profile. Pure rendering from the handoff package (api/agent.py); every text from
 * the server goes in through `el`'s text, never as markup.
 */

import { byId, clear, clock, el } from './dom.js';

const ANGRY_AT = 0.7; // the escalation's one-message anger threshold (handoff.yml's default)

/** The customer's name as the agent sees it: display name, else "Visitor" and a short id. */
export function customerName(i18n, customer, customerId) {
  const name = customer?.display_name;
  if (name) return name;
  const id = String(customer?.id ?? customerId ?? '');
  return i18n.t('anonymous', { id: id.slice(-6) });
}

/** Reason badges for a list of reason codes. */
export function reasonBadges(i18n, reasons) {
  return (reasons ?? []).map((code) =>
    el('span', { class: 'badge badge--reason', text: i18n.label(`reason_${code}`, code), data: { reason: code } }),
  );
}

/** The mood of a customer turn from its sentiment: angry, negative, positive or neutral. */
export function moodOf(sentiment) {
  if (!sentiment) return null;
  if (sentiment.label === 'angry' || (sentiment.anger ?? 0) >= ANGRY_AT) return 'angry';
  if (['negative', 'positive', 'neutral'].includes(sentiment.label)) return sentiment.label;
  return 'neutral';
}

/** One transcript entry. */
export function turnItem(i18n, turn, agentNames) {
  const who = el('div', { class: 'turn__who' });
  const sender = turn.sender;
  let label = i18n.label(`sender_${sender}`, sender);
  if (sender === 'agent' && turn.author) label = agentNames.get(turn.author) ?? turn.author;
  who.append(el('span', { text: label }), el('time', { text: clock(turn.created_at, i18n.language) }));
  const mood = sender === 'customer' ? moodOf(turn.nlu?.sentiment) : null;
  if (mood) who.append(moodMark(i18n, mood, turn.nlu.sentiment));
  const item = el('li', { class: `turn turn--${sender}`, data: { seq: String(turn.seq), sender } }, [
    who,
    el('div', { class: 'turn__text', text: turn.text }),
  ]);
  if (turn.buttons?.length) {
    item.append(
      el('div', { class: 'turn__who', text: turn.buttons.map((b) => b.title ?? b.payload).join(' · ') }),
    );
  }
  return item;
}

function moodMark(i18n, mood, sentiment) {
  return el('span', {
    class: 'mood',
    text: i18n.t(`mood_${mood}`),
    data: { mood },
    title: i18n.t('moodTitle', {
      negative: Number(sentiment.negative ?? 0).toFixed(2),
      anger: Number(sentiment.anger ?? 0).toFixed(2),
    }),
  });
}

/** Put the mood mark on an already drawn customer turn (the sentiment arrives after the turn). */
export function markMood(i18n, list, seq, sentiment) {
  const item = list.querySelector(`.turn--customer[data-seq="${Number(seq)}"]`);
  const mood = moodOf(sentiment);
  if (!item || !mood) return;
  item.querySelector('.mood')?.remove();
  item.querySelector('.turn__who').append(moodMark(i18n, mood, sentiment));
}

/**
 * The suggested replies as buttons; `onPick(text)` when one is clicked.
 * @param {{text: string, kind: string, source: string}[]} suggestions
 */
export function drawSuggestions(i18n, suggestions, onPick) {
  const list = byId('suggestion-list');
  clear(list);
  if (!suggestions?.length) {
    list.append(el('li', { class: 'list__empty', text: i18n.t('noSuggestions') }));
    return;
  }
  for (const suggestion of suggestions) {
    const button = el(
      'button',
      { class: 'suggestion', attrs: { type: 'button' }, title: suggestion.text, on: { click: () => onPick(suggestion.text) } },
      [
        el('span', { class: 'suggestion__text', text: suggestion.text }),
        el('span', { class: 'suggestion__source', text: sourceLabel(suggestion) }),
      ],
    );
    list.append(el('li', {}, [button]));
  }
}

/** Where a suggestion or search result comes from, for the agent to judge it. */
export function sourceLabel(item) {
  return [item.kind, item.source].filter(Boolean).join(' · ');
}

/** The profile sidebar: customer facts, identities, orders, earlier conversations, notes. */
export function drawProfile(i18n, pack) {
  const customer = pack.customer ?? {};
  const facts = byId('customer');
  clear(facts);
  const fact = (term, value) => facts.append(el('dt', { text: term }), el('dd', { text: value }));
  fact(i18n.t('customer'), customerName(i18n, customer, pack.conversation?.customer_id));
  fact(i18n.t('tier'), customer.tier ?? '—');
  fact(i18n.t('customerId'), customer.id ?? '—');
  if (customer.created_at) fact(i18n.t('since'), clock(customer.created_at, i18n.language));

  fill(i18n, byId('identities'), customer.identities, (identity) =>
    el('li', {}, [
      el('span', { text: i18n.label(`channel_${identity.channel}`, identity.channel) }),
      el('span', { class: 'sub', text: identity.external_id }),
    ]),
  );
  fill(i18n, byId('orders'), pack.orders, (order) => orderItem(i18n, order));
  fill(i18n, byId('history'), pack.history, (entry) => {
    const parts = [
      i18n.label(`channel_${entry.channel}`, entry.channel),
      clock(entry.created_at, i18n.language),
      i18n.label(`outcome_${entry.outcome}`, entry.outcome),
    ];
    if (entry.rating) parts.push(i18n.t('rating', { n: entry.rating }));
    const item = el('li', {}, [el('span', { text: parts.join(' · ') })]);
    if (entry.last_reason) item.append(el('span', { class: 'sub', text: i18n.label(`reason_${entry.last_reason}`, entry.last_reason) }));
    return item;
  });
  drawNotes(i18n, pack.notes ?? [], new Map());
}

function orderItem(i18n, order) {
  if (order.error) {
    return el('li', {}, [
      el('span', { text: `#${order.number}` }),
      el('span', { class: 'sub', text: i18n.t('orderError', { error: order.error }) }),
    ]);
  }
  const details = Object.entries(order)
    .filter(([key, value]) => key !== 'number' && value !== null && typeof value !== 'object')
    .map(([key, value]) => `${key}: ${value}`)
    .join(' · ');
  return el('li', {}, [el('span', { text: `#${order.number}` }), el('span', { class: 'sub', text: details })]);
}

function fill(i18n, list, items, make) {
  clear(list);
  if (!items?.length) {
    list.append(el('li', { class: 'empty', text: i18n.t('none') }));
    return;
  }
  for (const item of items) list.append(make(item));
}

/** The notes list (oldest first); `agentNames` maps agent ids to names. */
export function drawNotes(i18n, notes, agentNames) {
  fill(i18n, byId('notes'), notes, (note) => noteItem(i18n, note, agentNames));
}

/** One note. */
export function noteItem(i18n, note, agentNames) {
  return el('li', { data: { key: noteKey(note) } }, [
    el('span', { text: note.text }),
    el('span', {
      class: 'sub',
      text: `${agentNames.get(note.agent_id) ?? note.agent_id} · ${clock(note.at, i18n.language)}`,
    }),
  ]);
}

/** A note's identity (notes have no id: the author and the moment are unique enough). */
export function noteKey(note) {
  return `${note.agent_id}:${note.at}`;
}
