/**
 * Optional alerts for the agent: a short tone and, when the tab is in the background, a desktop
 * notification. Off until the agent turns them on (browsers allow sound and notifications only
 * after a click), and the choice is kept.
 */

const KEY = 'baton.agent.alerts';

export class Alerts {
  constructor() {
    this.enabled = localStorage.getItem(KEY) === 'on';
    this.audio = null;
  }

  /** Turn alerts on or off; turning them on asks for notification permission once. */
  async toggle() {
    this.enabled = !this.enabled;
    localStorage.setItem(KEY, this.enabled ? 'on' : 'off');
    if (this.enabled) {
      this.audio ??= new AudioContext(); // created inside the click, so the browser lets it play
      if ('Notification' in window && Notification.permission === 'default') {
        await Notification.requestPermission().catch(() => 'denied');
      }
    }
    return this.enabled;
  }

  /** Tone, and a desktop notification (`title`, `body`) if the page is not being looked at. */
  notify(title, body, tag) {
    if (!this.enabled) return;
    this.tone();
    if (document.hidden && 'Notification' in window && Notification.permission === 'granted') {
      const note = new Notification(title, { body, tag });
      note.addEventListener('click', () => {
        window.focus();
        note.close();
      });
    }
  }

  tone() {
    try {
      this.audio ??= new AudioContext();
      const oscillator = this.audio.createOscillator();
      const gain = this.audio.createGain();
      oscillator.frequency.value = 880;
      gain.gain.setValueAtTime(0.12, this.audio.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.0001, this.audio.currentTime + 0.25);
      oscillator.connect(gain).connect(this.audio.destination);
      oscillator.start();
      oscillator.stop(this.audio.currentTime + 0.25);
    } catch {
      // No audio device (a kiosk, a headless browser): the notification and the counts remain.
    }
  }
}
