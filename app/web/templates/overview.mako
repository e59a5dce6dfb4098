<%inherit file="base.mako"/>
<nav class="ranges" aria-label="Time range">
% for name in ranges:
  <a href="/admin/?range=${name}"${' aria-current="true"' if name == range else '' | n}>${name}</a>
% endfor
</nav>
<section class="tiles" aria-label="Totals">
  <div class="tile"><span class="label">Requests</span><span class="value">${number(totals["requests"])}</span></div>
  <div class="tile"><span class="label">Errors</span><span class="value">${number(totals["errors"])}</span></div>
  <div class="tile"><span class="label">Tokens</span><span class="value">${number(totals["tokens"])}</span></div>
  <div class="tile"><span class="label">Cost</span><span class="value">${money(totals["cost"])}</span></div>
  <div class="tile"><span class="label">Live keys</span><span class="value">${number(live_keys)}</span></div>
</section>
<section class="charts">
  <figure><figcaption>Requests and errors</figcaption>${charts["requests"] | n}</figure>
  <figure><figcaption>Tokens</figcaption>${charts["tokens"] | n}</figure>
  <figure><figcaption>Cost</figcaption>${charts["cost"] | n}</figure>
</section>
<div class="columns">
<section>
<h2>Top keys</h2>
<table>
<thead><tr><th scope="col">Key</th><th scope="col" class="num">Requests</th><th scope="col" class="num">Tokens</th><th scope="col" class="num">Cost</th></tr></thead>
<tbody>
% for name, key_id, t in top_keys:
<tr><td><a href="/admin/keys/${key_id}">${name}</a></td><td class="num">${number(t.requests)}</td><td class="num">${number(t.input_tokens + t.output_tokens)}</td><td class="num">${money(t.cost_usd)}</td></tr>
% endfor
% if not top_keys:
<tr><td colspan="4" class="empty">No requests in this range.</td></tr>
% endif
</tbody>
</table>
</section>
<section>
<h2>Top models</h2>
<table>
<thead><tr><th scope="col">Model</th><th scope="col" class="num">Requests</th><th scope="col" class="num">Tokens</th><th scope="col" class="num">Cost</th></tr></thead>
<tbody>
% for model, t in top_models:
<tr><td>${model}</td><td class="num">${number(t.requests)}</td><td class="num">${number(t.input_tokens + t.output_tokens)}</td><td class="num">${money(t.cost_usd)}</td></tr>
% endfor
% if not top_models:
<tr><td colspan="4" class="empty">No requests in this range.</td></tr>
% endif
</tbody>
</table>
</section>
</div>
<section>
<h2>Upstream health</h2>
<%include file="_health.mako" args="upstreams=upstreams"/>
</section>
