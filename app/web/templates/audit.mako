<%inherit file="base.mako"/>
<form method="get" action="/admin/audit" class="card filters">
  <div class="field"><label for="action">Action</label><input id="action" name="action" value="${action}" placeholder="key., upstream.create, ..."></div>
  <div class="field"><label for="target">Target</label><input id="target" name="target" value="${target}" placeholder="a name or id"></div>
  <button type="submit">Filter</button>
</form>
<table class="audit">
<thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">From</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Change</th></tr></thead>
<tbody>
% for e in entries:
<%
    before, after = e["before"] or {}, e["after"] or {}
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and k not in ("updated_at", "revision"))
%>
<tr><td>${when(e["at"])}</td><td>${e["actor"]}</td><td>${e["source"]}</td><td><code>${e["action"]}</code></td><td>${e["target"]}</td>
<td>
% for k in changed[:8]:
<div><strong>${k}</strong>: ${"-" if k not in before else before[k]} → ${"-" if k not in after else after[k]}</div>
% endfor
</td></tr>
% endfor
% if not entries:
<tr><td colspan="6" class="empty">Nothing recorded yet.</td></tr>
% endif
</tbody>
</table>
% if older:
<nav class="pages" aria-label="Pages"><a href="/admin/audit?before=${older}&action=${action}&target=${target}">Older entries</a></nav>
% endif
