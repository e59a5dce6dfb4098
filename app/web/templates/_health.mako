<%page args="upstreams"/>
<table>
<thead><tr><th scope="col">Upstream</th><th scope="col">State</th><th scope="col" class="num">Tier</th><th scope="col" class="num">In flight</th><th scope="col" class="num">Latency</th><th scope="col" class="num">Failures</th></tr></thead>
<tbody>
% for u in upstreams:
<%
    if not u["enabled"]:
        state, css = "disabled", "muted"
    elif not u["usable"]:
        state, css = "unusable: " + (u["unusable_reason"] or ""), "bad"
    elif u["ejected_s"]:
        state, css = "ejected for " + ago(u["ejected_s"]), "bad"
    elif u["cooling_down_s"]:
        state, css = "cooling down for " + ago(u["cooling_down_s"]), "warn"
    else:
        state, css = "healthy", "good"
%>
<tr><td><a href="/admin/upstreams/${u['name']}">${u["name"]}</a></td><td><span class="pill ${css}">${state}</span></td><td class="num">${u["tier"]}</td><td class="num">${u["inflight"]}</td><td class="num">${"%.0f ms" % u["latency_ewma_ms"] if u["latency_ewma_ms"] else "-"}</td><td class="num">${u["consecutive_failures"]}</td></tr>
% endfor
% if not upstreams:
<tr><td colspan="6" class="empty">No upstreams yet. <a href="/admin/upstreams/new">Add one</a>.</td></tr>
% endif
</tbody>
</table>
