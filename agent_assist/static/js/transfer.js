/** The transfer dialog: to a colleague who is online with room, or back to a skill's queue. */

import { byId, clear, el } from './dom.js';
import { AGENT_API } from './session.js';

export class TransferDialog {
  /**
   * @param {import('./session.js').Session} session
   * @param {import('./i18n.js').I18n} i18n
   * @param {(target: {agent_id?: string, skill?: string}) => Promise<void>} onTransfer
   */
  constructor(session, i18n, onTransfer) {
    this.session = session;
    this.i18n = i18n;
    this.onTransfer = onTransfer;
    this.dialog = byId('transfer-dialog');
    this.agentSelect = byId('transfer-agent');
    this.skillSelect = byId('transfer-skill');
    this.error = byId('transfer-error');
    // One target at a time: choosing a colleague clears the queue choice and the other way round.
    this.agentSelect.addEventListener('change', () => this.agentSelect.value && (this.skillSelect.value = ''));
    this.skillSelect.addEventListener('change', () => this.skillSelect.value && (this.agentSelect.value = ''));
    this.dialog.querySelector('[data-close]').addEventListener('click', () => this.dialog.close());
    byId('transfer-form').addEventListener('submit', (event) => this.submit(event));
  }

  /** Open for a chat of skill `skill`, listing colleagues other than `meId`. */
  async open(meId, skill) {
    this.error.hidden = true;
    const { agents } = await this.session.call('GET', `${AGENT_API}/agents`);
    const t = (key, vars) => this.i18n.t(key, vars);
    clear(this.agentSelect);
    this.agentSelect.append(el('option', { text: t('nobody'), attrs: { value: '' } }));
    for (const agent of agents) {
      if (agent.id === meId || !agent.online) continue;
      const option = el('option', {
        text: t('agentOption', { name: agent.name, load: agent.load, max: agent.max_chats }),
        attrs: { value: agent.id },
      });
      option.disabled = agent.load >= agent.max_chats;
      this.agentSelect.append(option);
    }
    const skills = [...new Set(agents.flatMap((agent) => agent.skills))].sort();
    clear(this.skillSelect);
    this.skillSelect.append(el('option', { text: t('nobody'), attrs: { value: '' } }));
    for (const name of skills) {
      this.skillSelect.append(el('option', { text: name === skill ? `${name} ✓` : name, attrs: { value: name } }));
    }
    this.dialog.showModal();
  }

  async submit(event) {
    event.preventDefault();
    const target = this.agentSelect.value
      ? { agent_id: this.agentSelect.value }
      : this.skillSelect.value
        ? { skill: this.skillSelect.value }
        : null;
    if (!target) {
      this.error.textContent = this.i18n.t('transferNeedsTarget');
      this.error.hidden = false;
      return;
    }
    try {
      await this.onTransfer(target);
      this.dialog.close();
    } catch (failure) {
      this.error.textContent = failure.message;
      this.error.hidden = false;
    }
  }
}
