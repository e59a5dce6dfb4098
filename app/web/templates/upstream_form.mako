<%inherit file="base.mako"/>
<%
    def value(field, default=""):
        if field in values:
            v = values[field]
            return v[0] if isinstance(v, list) and v else v
        if upstream is None:
            return default
        if field == "models":
            return ", ".join(m["pattern"] + (":" + m["upstream_model"] if m.get("upstream_model") else "") for m in upstream["models"])
        v = upstream.get(field)
        return "" if v is None else v
    editable = admin.may_change
%>
% if upstream is not None:
<section class="card">
  <dl class="facts">
    <dt>Id</dt><dd><code>${upstream["id"]}</code></dd>
    <dt>Enabled</dt><dd>${"yes" if upstream["enabled"] else "no"}</dd>
    <dt>Credential</dt><dd>${"stored (encrypted; never shown)" if upstream["has_credential"] else "none"}</dd>
    % if live:
    <dt>In flight</dt><dd>${live["inflight"]}</dd>
    <dt>Cooling down</dt><dd>${ago(live["cooling_down_s"]) if live["cooling_down_s"] else "no"}</dd>
    <dt>Ejected</dt><dd>${ago(live["ejected_s"]) if live["ejected_s"] else "no"}</dd>
    <dt>Latency</dt><dd>${"%.0f ms" % live["latency_ewma_ms"] if live["latency_ewma_ms"] else "-"}</dd>
    <dt>Recent errors</dt><dd>${"; ".join(e["what"] + " (" + ago(monotonic - e["at"]) + " ago)" for e in live["recent_errors"][-5:]) or "none"}</dd>
    % endif
  </dl>
  % if editable:
  <div class="actions">
    <form method="post" action="/admin/upstreams/${upstream['name']}/test" class="inline">
      <input type="hidden" name="csrf" value="${csrf}"><button type="submit" class="secondary">Test</button>
    </form>
    <form method="post" action="/admin/upstreams/${upstream['name']}/enabled" class="inline">
      <input type="hidden" name="csrf" value="${csrf}">
      <input type="hidden" name="enabled" value="${'false' if upstream['enabled'] else 'true'}">
      <button type="submit" class="secondary">${"Disable" if upstream["enabled"] else "Enable"}</button>
    </form>
    <form method="post" action="/admin/upstreams/${upstream['name']}/remove" class="inline">
      <input type="hidden" name="csrf" value="${csrf}"><button type="submit" class="danger">Remove</button>
    </form>
  </div>
  % endif
  % if test is not None:
  <div class="${'flash' if test['ok'] else 'error'}" role="status">
    % if test["ok"]:
    Answered in ${"%.0f" % test["latency_ms"]} ms with ${len(test["models"])} models: ${", ".join(test["models"][:20])}${"..." if len(test["models"]) > 20 else ""}
    % else:
    Test failed: ${test["error"]}
    % endif
  </div>
  % endif
</section>
<h2>Settings</h2>
% endif
<form method="post" action="${'/admin/upstreams' if upstream is None else '/admin/upstreams/' + upstream['name']}" class="card form" autocomplete="off">
  <input type="hidden" name="csrf" value="${csrf}">
  <fieldset ${'' if editable else 'disabled' | n}>
  <div class="field"><label for="name">Name</label><input id="name" name="name" value="${value('name')}" ${'required' if upstream is None else '' | n} placeholder="acct-1"></div>
  <div class="field wide"><label for="base_url">Base URL</label><input id="base_url" name="base_url" value="${value('base_url')}" ${'required' if upstream is None else '' | n} placeholder="https://api.openai.com/v1"></div>
  <div class="field wide"><label for="models">Models</label><input id="models" name="models" value="${value('models')}" ${'required' if upstream is None else '' | n} placeholder="gpt-5*, o3"></div>
  <div class="field wide"><label for="api_key">API key</label><input id="api_key" name="api_key" type="password" autocomplete="new-password" placeholder="${'sk-...' if upstream is None else 'unchanged (write a new one to replace it)'}"></div>
  <div class="field"><label for="weight">Weight</label><input id="weight" name="weight" inputmode="decimal" value="${value('weight', 1)}"></div>
  <div class="field"><label for="tier">Tier</label><input id="tier" name="tier" inputmode="numeric" value="${value('tier', 0)}"></div>
  <div class="field"><label for="max_concurrency">Requests at once</label><input id="max_concurrency" name="max_concurrency" inputmode="numeric" value="${value('max_concurrency')}" placeholder="unlimited"></div>
  </fieldset>
  % if editable:
  <button type="submit">${"Add upstream" if upstream is None else "Save changes"}</button>
  % endif
</form>
