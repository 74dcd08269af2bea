// Calls to the server's JSON APIs with the console session: the cookie goes by itself, the
// CSRF token is kept in memory and sent with every state-changing request.
let csrf = '';

export function setCsrf(token) { csrf = token || ''; }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, { method = 'GET', body, text = false } = {}) {
  const headers = { 'X-CommCare-Console': '1' };
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf;
  if (body !== undefined && !(body instanceof URLSearchParams)) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body, credentials: 'same-origin' });
  if (!r.ok) {
    let message = r.statusText;
    try { message = (await r.json()).error || message; } catch (e) { /* not JSON */ }
    if (r.status === 401 && !path.endsWith('/login')) location.hash = '#/login';
    throw new ApiError(r.status, message);
  }
  return text ? r.text() : r.json();
}

// The URL of a domain's API path.
export function dpath(domain, rest) { return `/a/${encodeURIComponent(domain)}/${rest}`; }

// A Form API v0.5 object (HQ's shape: id, form with @xmlns, metadata, archived) with the flat
// fields the pages show: form_id, xmlns, state, user_id, username.
export function formRow(f) {
  const meta = f.metadata || {};
  return { ...f, form_id: f.id, xmlns: (f.form || {})['@xmlns'] || '',
    state: f.archived ? 'archived' : 'normal', user_id: meta.userID || '',
    username: meta.username || '' };
}
