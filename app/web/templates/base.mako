<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · poolgate</title>
<link rel="stylesheet" href="/admin/static/poolgate.css">
<link rel="icon" href="/admin/static/favicon.svg" type="image/svg+xml">
<script src="/admin/static/poolgate.js" defer></script>
</head>
<body>
<header class="top">
  <span class="brand">poolgate</span>
% if admin is not None:
  <nav aria-label="Dashboard">
  % for path, label, name in (("/admin/", "Overview", "overview"), ("/admin/keys", "Keys", "keys"), ("/admin/upstreams", "Upstreams", "upstreams"), ("/admin/usage", "Usage", "usage"), ("/admin/audit", "Audit", "audit")):
    <a href="${path}"${' aria-current="page"' if section == name else '' | n}>${label}</a>
  % endfor
  </nav>
  <form method="post" action="/admin/signout" class="who">
    <span>${admin.name} <small>(${admin.role})</small></span>
    <input type="hidden" name="csrf" value="${csrf}">
    <button type="submit" class="link">Sign out</button>
  </form>
% endif
</header>
<main>
<h1>${title}</h1>
% if flash:
<p class="flash" role="status">${{"saved": "Saved.", "revoked": "The key is revoked: it stops working on every replica within 2 seconds.", "added": "Upstream added.", "removed": "Upstream removed.", "enabled": "Upstream enabled.", "disabled": "Upstream disabled."}.get(flash, "")}</p>
% endif
% if error:
<p class="error" role="alert">${error}</p>
% endif
${next.body()}
</main>
</body>
</html>
