<%inherit file="base.mako"/>
<div class="toolbar">
  <form method="get" action="/admin/keys" role="search" class="inline">
    <label for="q" class="visually-hidden">Search keys</label>
    <input id="q" name="q" value="${search}" placeholder="Search by name or id">
    % if revoked:
    <input type="hidden" name="show" value="revoked">
    % endif
    <button type="submit" class="secondary">Search</button>
  </form>
  % if revoked:
  <a href="/admin/keys">Live keys</a>
  % else:
  <a href="/admin/keys?show=revoked">Revoked keys</a>
  % endif
  % if admin.may_change:
  <form method="get" action="/admin/keys/new" class="inline push"><button type="submit">New key</button></form>
  % endif
</div>
<p class="count">${number(count)} ${"revoked " if revoked else ""}key${"" if count == 1 else "s"}${" matching " + repr(search) if search else ""}</p>
<table>
<thead><tr><th scope="col">Name</th><th scope="col">Id</th><th scope="col">Status</th><th scope="col">Models</th><th scope="col">Limits</th><th scope="col">Expires</th></tr></thead>
<tbody>
% for k in keys:
<%
    q = k["quotas"]
    limits = ", ".join(f"{v:,} {n}" for n, v in (("rpm", q["rpm"]), ("rpd", q["rpd"]), ("tpm", q["tpm"]), ("tpd", q["tpd"])) if v)
    if q["budget_usd"]:
        limits = (limits + ", " if limits else "") + money(q["budget_usd"]) + "/" + q["budget_period"]
%>
<tr><td><a href="/admin/keys/${k['id']}">${k["name"]}</a></td><td><code>${k["id"]}</code></td><td><span class="pill ${'good' if k['status'] == 'active' else 'muted'}">${k["status"]}</span></td><td>${", ".join(k["allowed_models"]) or "none"}</td><td>${limits or "unlimited"}</td><td>${when(k["expires_at"]) if k["expires_at"] else "never"}</td></tr>
% endfor
% if not keys:
<tr><td colspan="6" class="empty">No keys${" match" if search else " yet"}.</td></tr>
% endif
</tbody>
</table>
% if pages > 1:
<nav class="pages" aria-label="Pages">
  % if page_number > 1:
  <a href="/admin/keys?page=${page_number - 1}&q=${search}${'&show=revoked' if revoked else '' | n}">Previous page</a>
  % endif
  <span>Page ${page_number} of ${pages}</span>
  % if page_number < pages:
  <a href="/admin/keys?page=${page_number + 1}&q=${search}${'&show=revoked' if revoked else '' | n}">Next page</a>
  % endif
</nav>
% endif
