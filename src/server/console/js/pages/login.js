// Sign-in: the same accounts and passwords as the API.
import { api, setCsrf } from '../api.js';
import { h, field } from '../ui.js';

export async function render(main, ctx) {
  document.getElementById('top').hidden = true;
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const form = h('form', { class: 'login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Sign in to the CommCare console'),
    field('Username', { name: 'username', autocomplete: 'username', required: true }),
    field('Password', { name: 'password', type: 'password', autocomplete: 'current-password',
      required: true }),
    error,
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    error.hidden = true;
    try {
      const s = await api('/console/api/login', { method: 'POST',
        body: new URLSearchParams(new FormData(form)) });
      setCsrf(s.csrf_token);
      await ctx.onSignIn();
    } catch (e) {
      error.textContent = e.status === 429 ? `Too many failed sign-ins: ${e.message}`
        : 'Wrong username or password, or the account is inactive.';
      error.hidden = false;
      form.querySelector('#f-password').focus();
    }
  });
  main.append(form);
  setTimeout(() => form.querySelector('#f-username').focus(), 0);
}
