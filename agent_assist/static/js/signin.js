/** The sign-in form both panel pages show to an agent who is not signed in. */

/**
 * Make `form` (fields `agent_id`, `password`, an element with data-role="error") sign in.
 * @param {HTMLFormElement} form
 * @param {import('./session.js').Session} session
 * @param {import('./i18n.js').I18n} i18n
 * @param {(agent: object) => void} onSignedIn
 */
export function bindSignIn(form, session, i18n, onSignedIn) {
  const error = form.querySelector('[data-role="error"]');
  const button = form.querySelector('button[type="submit"]');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    button.disabled = true;
    button.textContent = i18n.t('signingIn');
    try {
      const agent = await session.signIn(form.elements.agent_id.value.trim(), form.elements.password.value);
      form.reset();
      onSignedIn(agent);
    } catch (failure) {
      if (failure.status === 401) error.textContent = i18n.t('signInFailed');
      else if (failure.status === 0) error.textContent = i18n.t('signInUnreachable');
      else error.textContent = i18n.t('error_unknown', { message: failure.message });
      error.hidden = false;
      form.elements.password.select();
    } finally {
      button.disabled = false;
      button.textContent = i18n.t('signIn');
    }
  });
}

/** Show `message` above the sign-in form (e.g. after the session ended). */
export function signInNotice(form, message) {
  const error = form.querySelector('[data-role="error"]');
  error.textContent = message;
  error.hidden = !message;
}
