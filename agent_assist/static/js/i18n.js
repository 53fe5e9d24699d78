/**
 * The panel's two languages. The page follows the browser's preferred languages (the first of
 * them that is Chinese or English) until the agent picks one with the toggle, which is kept.
 */

const SUPPORTED = ['zh', 'en'];

/** The first of the browser's languages the panel speaks, else English. */
export function browserLanguage() {
  const preferred = navigator.languages?.length ? navigator.languages : [navigator.language];
  for (const tag of preferred) {
    const base = String(tag || '').toLowerCase().split('-')[0];
    if (SUPPORTED.includes(base)) return base;
  }
  return 'en';
}

export class I18n {
  /**
   * @param {{en: Record<string, string>, zh: Record<string, string>}} strings
   * @param {string} storageKey where the agent's own choice is kept
   */
  constructor(strings, storageKey) {
    this.strings = strings;
    this.storageKey = storageKey;
    const chosen = localStorage.getItem(storageKey);
    this.language = SUPPORTED.includes(chosen) ? chosen : browserLanguage();
    this.listeners = [];
  }

  /** The text of `key` in the current language, `{name}` placeholders filled from `vars`. */
  t(key, vars = {}) {
    const text = this.strings[this.language][key] ?? this.strings.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
  }

  /** `t(key)` if the strings have `key`, else `fallback` (for codes the server may add later). */
  label(key, fallback) {
    return key in this.strings.en ? this.t(key) : fallback;
  }

  /** Switch language, remember the choice, and redraw. */
  set(language) {
    if (!SUPPORTED.includes(language)) return;
    this.language = language;
    localStorage.setItem(this.storageKey, language);
    this.apply(document);
    for (const listener of this.listeners) listener(language);
  }

  /** Call `listener(language)` after every switch (to redraw what scripts wrote). */
  onChange(listener) {
    this.listeners.push(listener);
  }

  /** Fill the static text of `root`: data-i18n (text), -placeholder, -title, -aria-label. */
  apply(root) {
    document.documentElement.lang = this.language === 'zh' ? 'zh-CN' : 'en';
    for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = this.t(node.dataset.i18n);
    for (const node of root.querySelectorAll('[data-i18n-placeholder]')) {
      node.placeholder = this.t(node.dataset.i18nPlaceholder);
    }
    for (const node of root.querySelectorAll('[data-i18n-title]')) node.title = this.t(node.dataset.i18nTitle);
    for (const node of root.querySelectorAll('[data-i18n-aria-label]')) {
      node.setAttribute('aria-label', this.t(node.dataset.i18nAriaLabel));
    }
    for (const button of root.querySelectorAll('[data-lang]')) {
      button.setAttribute('aria-pressed', String(button.dataset.lang === this.language));
    }
  }

  /** Make the `[data-lang]` buttons inside `container` switch the language. */
  bindToggle(container) {
    container.addEventListener('click', (event) => {
      const button = event.target.closest('[data-lang]');
      if (button) this.set(button.dataset.lang);
    });
  }
}
