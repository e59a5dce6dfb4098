<%inherit file="member_base.mako"/>
<%def name="who()">
<form method="post" action="/me/signout" class="who">
  <span>${key["name"]} <small>(${key["id"]})</small></span>
  <input type="hidden" name="csrf" value="${csrf}">
  <button type="submit" class="link">Sign out</button>
</form>
</%def>
<p>Point your client at <code>${base_url}</code> with your key. <a href="#models">Your models</a> · <a href="#limits">Your limits</a> · <a href="#usage">Your usage</a></p>
<section id="limits">
<h2>Your limits</h2>
<div class="tiles">
% for w in windows:
  <div class="tile"><span class="label">${w["kind"].capitalize()} per ${w["per"]}</span><span class="value">${number(w["remaining"])} <small>of ${number(w["limit"])} left</small></span></div>
% endfor
% if usage["limits"]["max_concurrency"]:
  <div class="tile"><span class="label">Requests at once</span><span class="value">${usage["limits"]["in_flight"]} <small>of ${usage["limits"]["max_concurrency"]} in use</small></span></div>
% endif
% if usage["budget"]:
  <div class="tile"><span class="label">Budget this ${usage["budget"]["period"]}</span><span class="value">${money(usage["budget"]["remaining_usd"])} <small>of ${money(usage["budget"]["limit_usd"])} left</small></span></div>
% endif
% if not windows and not usage["budget"] and not usage["limits"]["max_concurrency"]:
  <div class="tile"><span class="label">Limits</span><span class="value">none</span></div>
% endif
% if key["expires_at"]:
  <div class="tile"><span class="label">Key expires</span><span class="value">${when(key["expires_at"])}</span></div>
% endif
</div>
</section>
<section id="usage">
<h2>Your usage</h2>
<div class="tiles">
% for label, part in (("Today", usage["today"]), ("Last 24 hours", usage["last_24h"]), ("This month", usage["this_month"])):
  <div class="tile"><span class="label">${label}</span><span class="value">${number(part["requests"])} <small>requests</small></span><span class="sub">${number(part["input_tokens"] + part["output_tokens"])} tokens · ${money(part["cost_usd"])}</span></div>
% endfor
</div>
<figure><figcaption>Requests per day</figcaption>${chart | n}</figure>
<figure><figcaption>Tokens per day</figcaption>${tokens_chart | n}</figure>
</section>
<section id="models">
<h2>Your models</h2>
<p class="hint">In the order your key prefers them, with what your key may use of each.</p>
<table>
<thead><tr><th scope="col">Model</th><th scope="col">Reasoning efforts</th><th scope="col">Verbosity</th><th scope="col">Input</th><th scope="col" class="num">Context</th><th scope="col" class="num">Price in / out per 1M</th></tr></thead>
<tbody>
% for m in models:
<%
    meta = m.get("metadata") or {}
    price = m.get("pricing") or {}
    efforts = meta.get("supported_reasoning_levels") or []
    efforts = ", ".join(e["effort"] if isinstance(e, dict) else str(e) for e in efforts) or "-"
    verbosity = ", ".join(meta.get("verbosity_levels") or []) or "-"
%>
<tr><td><strong>${m["id"]}</strong><br><small>${meta.get("display_name") or ""}</small></td><td>${efforts}</td><td>${verbosity}</td><td>${", ".join(meta.get("input_modalities") or []) or "-"}</td><td class="num">${number(meta.get("context_window"))}</td><td class="num">${"-" if price.get("input") is None else "$%g / $%g" % (price.get("input") or 0, price.get("output") or 0)}</td></tr>
% endfor
% if not models:
<tr><td colspan="6" class="empty">Your key may use no model that an upstream serves right now.</td></tr>
% endif
</tbody>
</table>
</section>
