<%inherit file="base.mako"/>
<%
    def value(field, default=""):
        if field in values:
            v = values[field]
            return v[0] if isinstance(v, list) and v else v
        if key is None:
            return default
        if field in key.get("quotas", {}):
            v = key["quotas"][field]
            return "" if v is None else v
        v = key.get(field)
        if isinstance(v, list):
            return ", ".join(v)
        if v is None:
            return ""
        if field == "expires_at":
            return str(v)[:10]
        return v
    editable = admin.may_change and (key is None or key["status"] != "revoked")
%>
% if key is not None:
<section class="card">
  <dl class="facts">
    <dt>Id</dt><dd><code>${key["id"]}</code></dd>
    <dt>Status</dt><dd><span class="pill ${'good' if key['status'] == 'active' else 'muted'}">${key["status"]}</span></dd>
    <dt>Created</dt><dd>${when(key["created_at"])}</dd>
    <dt>Expires</dt><dd>${when(key["expires_at"]) if key["expires_at"] else "never"}</dd>
    % if key["revoked_at"]:
    <dt>Revoked</dt><dd>${when(key["revoked_at"])}</dd>
    % endif
  </dl>
  % if editable:
  <div class="actions">
    <form method="post" action="/admin/keys/${key['id']}/rotate" class="inline">
      <input type="hidden" name="csrf" value="${csrf}">
      <button type="submit" class="secondary">Rotate</button>
    </form>
    <form method="post" action="/admin/keys/${key['id']}/revoke" class="inline">
      <input type="hidden" name="csrf" value="${csrf}">
      <button type="submit" class="danger">Revoke</button>
    </form>
  </div>
  % endif
</section>
<section>
  <h2>Last 30 days</h2>
  <figure>${chart | n}</figure>
  <table>
  <thead><tr><th scope="col">Model</th><th scope="col" class="num">Requests</th><th scope="col" class="num">Errors</th><th scope="col" class="num">Tokens</th><th scope="col" class="num">Cost</th></tr></thead>
  <tbody>
  % for row in usage:
  <tr><td>${row.group["model"]}</td><td class="num">${number(row.totals.requests)}</td><td class="num">${number(row.totals.errors)}</td><td class="num">${number(row.totals.input_tokens + row.totals.output_tokens)}</td><td class="num">${money(row.totals.cost_usd)}</td></tr>
  % endfor
  % if not usage:
  <tr><td colspan="5" class="empty">No requests in the last 30 days.</td></tr>
  % endif
  </tbody>
  </table>
</section>
<h2>Policy</h2>
% endif
<form method="post" action="${'/admin/keys' if key is None else '/admin/keys/' + key['id']}" class="card form">
  <input type="hidden" name="csrf" value="${csrf}">
  <fieldset ${'' if editable else 'disabled' | n}>
  <div class="field"><label for="name">Name</label>
    <input id="name" name="name" value="${value('name')}" ${'required' if key is None else '' | n} maxlength="64" placeholder="alice"></div>
  <div class="field wide"><label for="allowed_models">Models</label>
    <input id="allowed_models" name="allowed_models" value="${value('allowed_models')}" ${'required' if key is None else '' | n} placeholder="gpt-5*, o3 (or * for every model)">
    <p class="hint">Ids, aliases or patterns such as <code>gpt-5*</code>, separated by commas.</p></div>
  <div class="field wide"><label for="priority_rules">Priority</label>
    <input id="priority_rules" name="priority_rules" value="${value('priority_rules')}" placeholder="gpt-5.1-codex, gpt-5* (empty: catalog order)"></div>
  <div class="field"><label for="allowed_reasoning_efforts">Reasoning efforts</label>
    <input id="allowed_reasoning_efforts" name="allowed_reasoning_efforts" value="${value('allowed_reasoning_efforts')}" placeholder="any"></div>
  <div class="field"><label for="allowed_verbosities">Verbosity</label>
    <input id="allowed_verbosities" name="allowed_verbosities" value="${value('allowed_verbosities')}" placeholder="any"></div>
  <div class="field"><label for="allowed_modalities">Modalities</label>
    <input id="allowed_modalities" name="allowed_modalities" value="${value('allowed_modalities')}" placeholder="any"></div>
  <div class="field"><label for="allowed_service_tiers">Service tiers</label>
    <input id="allowed_service_tiers" name="allowed_service_tiers" value="${value('allowed_service_tiers')}" placeholder="any"></div>
  <div class="field"><label for="rpm">Requests per minute</label><input id="rpm" name="rpm" inputmode="numeric" value="${value('rpm')}" placeholder="unlimited"></div>
  <div class="field"><label for="rpd">Requests per day</label><input id="rpd" name="rpd" inputmode="numeric" value="${value('rpd')}" placeholder="unlimited"></div>
  <div class="field"><label for="tpm">Tokens per minute</label><input id="tpm" name="tpm" inputmode="numeric" value="${value('tpm')}" placeholder="unlimited"></div>
  <div class="field"><label for="tpd">Tokens per day</label><input id="tpd" name="tpd" inputmode="numeric" value="${value('tpd')}" placeholder="unlimited"></div>
  <div class="field"><label for="max_concurrency">Requests at once</label><input id="max_concurrency" name="max_concurrency" inputmode="numeric" value="${value('max_concurrency')}" placeholder="unlimited"></div>
  <div class="field"><label for="budget_usd">Budget (USD)</label><input id="budget_usd" name="budget_usd" inputmode="decimal" value="${value('budget_usd')}" placeholder="none"></div>
  <div class="field"><label for="budget_period">Budget period</label>
    <select id="budget_period" name="budget_period">
    % for period in ("day", "week", "month"):
      <option value="${period}"${' selected' if value('budget_period', 'month') == period else '' | n}>${period}</option>
    % endfor
    </select></div>
  <div class="field"><label for="tier">Upstream tier</label><input id="tier" name="tier" inputmode="numeric" value="${value('tier', 0)}"></div>
  <div class="field"><label for="expires_at">Expires</label><input id="expires_at" name="expires_at" type="date" value="${value('expires_at')}"></div>
  % if key is not None:
  <div class="field check"><input id="disabled" name="disabled" type="checkbox"${' checked' if key["disabled"] else '' | n}><label for="disabled">Disabled</label></div>
  % endif
  </fieldset>
  % if editable:
  <button type="submit">${"Create key" if key is None else "Save changes"}</button>
  % endif
</form>
