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
<header class="top"><span class="brand">poolgate</span>${self.who() | n}</header>
<main>
<h1>${title}</h1>
% if error:
<p class="error" role="alert">${error}</p>
% endif
${next.body()}
</main>
</body>
</html>
<%def name="who()"></%def>
