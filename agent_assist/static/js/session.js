/**
 * The agent's sign-in, the agent API over fetch, and the live WebSocket.
 *
 * The bearer token lives in sessionStorage: it survives a reload, ends with the tab, and is
 * never sent by the browser on its own (no cookie), so other sites cannot make requests with it.
 */

export const AGENT_API = '/api/v1/agent';
const TOKEN_KEY = 'baton.agent.token';
const CLOSE_BAD_TOKEN = 4401;
const PING_EVERY_MS = 25_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5_000;

/** An error answer of the API: `status` (HTTP), `code` (e.g. "forbidden") and its message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Session {
  constructor() {
    this.token = sessionStorage.getItem(TOKEN_KEY);
    /** Called once the server no longer accepts the token (signed out elsewhere, expired). */
    this.onExpired = () => {};
  }

  get signedIn() {
    return Boolean(this.token);
  }

  /** Sign in; returns the agent. Throws ApiError (401 for a wrong id or password). */
  async signIn(agentId, password) {
    const answer = await this.call('POST', `${AGENT_API}/session`, { agent_id: agentId, password });
    this.token = answer.token;
    sessionStorage.setItem(TOKEN_KEY, answer.token);
    return answer.agent;
  }

  /** Sign out on the server (the token stops working, the agent goes offline), then locally. */
  async signOut() {
    try {
      await this.call('DELETE', `${AGENT_API}/session`);
    } catch {
      // Signed out already, or the server is away: forgetting the token is what matters here.
    }
    this.forget();
  }

  forget() {
    this.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
  }

  /**
   * One API request; answers the decoded JSON body.
   * @throws {ApiError} for any answer other than 2xx (status 0: the server could not be reached)
   */
  async call(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch (error) {
      throw new ApiError(0, 'unreachable', String(error));
    }
    const data = await response.json().catch(() => ({}));
    if (response.ok) return data;
    const error = data.error ?? {};
    if (response.status === 401 && this.token && !path.endsWith('/session')) {
      this.forget();
      this.onExpired();
    }
    throw new ApiError(response.status, error.code ?? 'error', error.message ?? response.statusText);
  }

  socketUrl() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    return `${scheme}://${location.host}${AGENT_API}/ws?token=${encodeURIComponent(this.token ?? '')}`;
  }
}

/**
 * The agent's live connection: reconnects with backoff, pings to keep proxies from closing it.
 * `onFrame(frame)` gets each JSON frame; `onStatus(status)` "connecting" | "open" | "lost".
 */
export class LiveSocket {
  constructor(session, onFrame, onStatus) {
    this.session = session;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.socket = null;
    this.stopped = true;
    this.backoff = BACKOFF_FIRST_MS;
    this.pinger = null;
    this.retry = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    clearInterval(this.pinger);
    this.socket?.close(1000);
    this.socket = null;
  }

  connect() {
    if (this.stopped || !this.session.signedIn) return;
    this.onStatus('connecting');
    const socket = new WebSocket(this.session.socketUrl());
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.backoff = BACKOFF_FIRST_MS;
      this.onStatus('open');
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: 'ping' }), PING_EVERY_MS);
    });
    socket.addEventListener('message', (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours to guess at
      }
      this.onFrame(frame);
    });
    socket.addEventListener('close', (event) => {
      clearInterval(this.pinger);
      if (this.socket !== socket || this.stopped) return;
      if (event.code === CLOSE_BAD_TOKEN) {
        this.stopped = true;
        this.session.forget();
        this.session.onExpired();
        return;
      }
      this.onStatus('lost');
      this.retry = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    });
  }

  send(frame) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }
}
