/**
 * DOM helpers for the agent panel. Text only ever goes in as text (textContent, text nodes):
 * customers write whatever they like, and none of it may become markup.
 */

/**
 * Make an element.
 * @param {string} tag
 * @param {{class?: string, text?: string, title?: string, attrs?: Record<string, string>,
 *          data?: Record<string, string>, on?: Record<string, EventListener>}} [options]
 * @param {(Node|string|null|undefined|false)[]} [children] strings become text nodes
 */
export function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.class) node.className = options.class;
  if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
  if (options.title) node.title = options.title;
  for (const [name, value] of Object.entries(options.attrs ?? {})) node.setAttribute(name, value);
  for (const [name, value] of Object.entries(options.data ?? {})) node.dataset[name] = value;
  for (const [type, listener] of Object.entries(options.on ?? {})) node.addEventListener(type, listener);
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Remove every child of `node`. */
export function clear(node) {
  node.replaceChildren();
}

/** `document.getElementById`, failing loudly when the page lacks the element. */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node;
}

/** Seconds as "m:ss" under an hour, "h:mm:ss" above. */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, '0');
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** An ISO time (or epoch seconds) as a short local time; the date too when it is not today. */
export function clock(value, language) {
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return '';
  const locale = language === 'zh' ? 'zh-CN' : 'en-GB';
  const sameDay = date.toDateString() === new Date().toDateString();
  const options = sameDay
    ? { hour: '2-digit', minute: '2-digit' }
    : { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' };
  return date.toLocaleString(locale, options);
}
