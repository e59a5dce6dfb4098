<%inherit file="base.mako"/>
<form method="get" action="/admin/usage" class="card filters">
  <div class="field"><label for="since">Since</label><input id="since" name="since" value="${query['since']}" placeholder="7d, 24h or 2026-11-01"></div>
  <div class="field"><label for="until">Until</label><input id="until" name="until" value="${query['until']}" placeholder="now"></div>
  <div class="field"><label for="key">Key</label><input id="key" name="key" value="${query['key']}" placeholder="any (name or id)"></div>
  <div class="field"><label for="model">Model</label><input id="model" name="model" value="${query['model']}" placeholder="any"></div>
  <div class="field"><label for="upstream">Upstream</label><input id="upstream" name="upstream" value="${query['upstream']}" placeholder="any"></div>
  <div class="field"><label for="group_by">Group by</label>
    <select id="group_by" name="group_by">
    % for choice in ("key", "key,model", "model", "upstream", "model,upstream", "day", "hour", "key,day"):
      <option${' selected' if query["group_by"] == choice else '' | n}>${choice}</option>
    % endfor
    </select></div>
  <button type="submit">Show</button>
  <a class="button secondary" href="/admin/usage.csv?${csv_query}" download>Download CSV</a>
</form>
% if report is not None:
<p class="count">From ${when(report["since"])} to ${when(report["until"])}</p>
<figure>${chart | n}</figure>
<table>
<thead><tr>
% for group in report["group_by"]:
<th scope="col">${group}</th>
% endfor
<th scope="col" class="num">Requests</th><th scope="col" class="num">Errors</th><th scope="col" class="num">Input tokens</th><th scope="col" class="num">Output tokens</th><th scope="col" class="num">Cost</th><th scope="col" class="num">p50</th><th scope="col" class="num">p95</th><th scope="col" class="num">p99</th></tr></thead>
<tbody>
% for row in report["rows"]:
<tr>
% for group in report["group_by"]:
<td>${row.get("key_name") or row["key"] if group == "key" else row[group]}</td>
% endfor
<td class="num">${number(row["requests"])}</td><td class="num">${number(row["errors"])}</td><td class="num">${number(row["input_tokens"])}</td><td class="num">${number(row["output_tokens"])}</td><td class="num">${money(row["cost_usd"])}</td><td class="num">${number(row["latency_ms"]["p50"])}</td><td class="num">${number(row["latency_ms"]["p95"])}</td><td class="num">${number(row["latency_ms"]["p99"])}</td></tr>
% endfor
% if not report["rows"]:
<tr><td colspan="${len(report['group_by']) + 8}" class="empty">No requests in this range.</td></tr>
% endif
</tbody>
<tfoot><tr><th scope="row" colspan="${len(report['group_by'])}">Total</th><td class="num">${number(report["totals"]["requests"])}</td><td class="num">${number(report["totals"]["errors"])}</td><td class="num">${number(report["totals"]["input_tokens"])}</td><td class="num">${number(report["totals"]["output_tokens"])}</td><td class="num">${money(report["totals"]["cost_usd"])}</td><td class="num">${number(report["totals"]["latency_ms"]["p50"])}</td><td class="num">${number(report["totals"]["latency_ms"]["p95"])}</td><td class="num">${number(report["totals"]["latency_ms"]["p99"])}</td></tr></tfoot>
</table>
% if report["has_more"]:
<p class="hint">The ${number(len(report["rows"]))} costliest rows; the totals and the CSV count them all.</p>
% endif
% endif
