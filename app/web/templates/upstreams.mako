<%inherit file="base.mako"/>
<div class="toolbar">
  % if admin.may_change:
  <form method="get" action="/admin/upstreams/new" class="inline push"><button type="submit">Add upstream</button></form>
  % endif
</div>
<table>
<thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Base URL</th><th scope="col">Models</th><th scope="col" class="num">Tier</th><th scope="col" class="num">Weight</th><th scope="col" class="num">In flight</th><th scope="col" class="num">Latency</th><th scope="col">Recent errors</th></tr></thead>
<tbody>
% for u, live in rows:
<%
    if not u["enabled"]:
        state, css = "disabled", "muted"
    elif live is None:
        state, css = "loading", "muted"
    elif not live["usable"]:
        state, css = "unusable", "bad"
    elif live["ejected_s"]:
        state, css = "ejected for " + ago(live["ejected_s"]), "bad"
    elif live["cooling_down_s"]:
        state, css = "cooling down for " + ago(live["cooling_down_s"]), "warn"
    else:
        state, css = "healthy", "good"
    errors = live["recent_errors"][-3:] if live else []
%>
<tr><td><a href="/admin/upstreams/${u['name']}">${u["name"]}</a></td><td><span class="pill ${css}">${state}</span></td><td><code>${u["base_url"]}</code></td><td>${", ".join(m["pattern"] for m in u["models"])}</td><td class="num">${u["tier"]}</td><td class="num">${u["weight"]}</td><td class="num">${live["inflight"] if live else "-"}</td><td class="num">${"%.0f ms" % live["latency_ewma_ms"] if live and live["latency_ewma_ms"] else "-"}</td><td>${"; ".join(e["what"] + " (" + ago(monotonic - e["at"]) + " ago)" for e in errors) or "-"}</td></tr>
% endfor
% if not rows:
<tr><td colspan="9" class="empty">No upstreams yet.</td></tr>
% endif
</tbody>
</table>
% if len(health["replicas"]) > 1:
<h2>Every replica's view</h2>
% for replica in health["replicas"]:
<h3>${replica["host"]} (process ${replica["pid"]}, at ${when(replica["at"])})</h3>
<%include file="_health.mako" args="upstreams=replica['upstreams']"/>
% endfor
% endif
