/**
 * The knowledge search (Ctrl+K or Cmd+K anywhere on the desk): FAQ answers and article
 * passages; picking one puts it in the composer.
 */

import { byId, clear, el } from './dom.js';
import { AGENT_API } from './session.js';
import { sourceLabel } from './conversation.js';

const DEBOUNCE_MS = 200;

export class KnowledgeSearch {
  /**
   * @param {import('./session.js').Session} session
   * @param {import('./i18n.js').I18n} i18n
   * @param {() => string} language the language to search in (the open chat's, else the page's)
   * @param {(text: string) => void} onPick
   */
  constructor(session, i18n, language, onPick) {
    this.session = session;
    this.i18n = i18n;
    this.language = language;
    this.onPick = onPick;
    this.dialog = byId('search-dialog');
    this.input = byId('search-input');
    this.results = byId('search-results');
    this.empty = byId('search-empty');
    this.timer = null;
    this.asked = 0; // answers to older queries arriving late are dropped
    this.input.addEventListener('input', () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.run(), DEBOUNCE_MS);
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'ArrowDown') {
        event.preventDefault();
        this.results.querySelector('button')?.focus();
      }
    });
    byId('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.results.querySelector('button')?.click(); // Enter picks the best result
    });
    this.dialog.querySelector('[data-close]').addEventListener('click', () => this.dialog.close());
    document.addEventListener('keydown', (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 'k') {
        event.preventDefault();
        this.open();
      }
    });
  }

  open() {
    if (document.body.dataset.view !== 'desk') return;
    if (!this.dialog.open) this.dialog.showModal();
    this.input.select();
  }

  async run() {
    const query = this.input.value.trim();
    const asked = ++this.asked;
    if (!query) {
      clear(this.results);
      this.empty.hidden = true;
      return;
    }
    const params = new URLSearchParams({ q: query, language: this.language() });
    let found;
    try {
      found = (await this.session.call('GET', `${AGENT_API}/search?${params}`)).results;
    } catch {
      found = [];
    }
    if (asked !== this.asked) return;
    clear(this.results);
    this.empty.hidden = found.length > 0;
    for (const result of found) {
      const button = el(
        'button',
        {
          class: 'result',
          attrs: { type: 'button' },
          on: {
            click: () => {
              this.dialog.close();
              this.onPick(result.text);
            },
          },
        },
        [el('span', { class: 'result__text', text: result.text }), el('span', { class: 'result__source', text: sourceLabel(result) })],
      );
      this.results.append(el('li', {}, [button]));
    }
  }
}
