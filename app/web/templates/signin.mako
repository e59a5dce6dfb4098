<%inherit file="base.mako"/>
<form method="post" action="/admin/signin" class="card narrow">
  <input type="hidden" name="csrf" value="${csrf}">
  <input type="hidden" name="next" value="${next}">
  <label for="token">Admin token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus
         placeholder="pga_...">
  <p class="hint">An operator makes one with <code>poolgate admins create NAME --role admin</code>.</p>
  <button type="submit">Sign in</button>
</form>
