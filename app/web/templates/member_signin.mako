<%inherit file="member_base.mako"/>
<form method="post" action="/me/signin" class="card narrow">
  <input type="hidden" name="csrf" value="${csrf}">
  <label for="key">API key</label>
  <input id="key" name="key" type="password" autocomplete="current-password" required autofocus placeholder="pg_...">
  <p class="hint">The poolgate key your admin gave you. You will see your models, your limits and your usage.</p>
  <button type="submit">Sign in</button>
</form>
