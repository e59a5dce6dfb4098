<%inherit file="base.mako"/>
<section class="card secret" aria-labelledby="secret-title">
  <h2 id="secret-title">${"The new secret" if rotated else "The key"} for ${key["name"]}</h2>
  <p>This is the only time it is shown. Copy it now and hand it to its holder; poolgate keeps only its hash.</p>
  <div class="copyable">
    <label for="new-key" class="visually-hidden">API key</label>
    <input id="new-key" value="${token}" readonly spellcheck="false">
    <button type="button" data-copy="new-key">Copy</button>
  </div>
  % if rotated:
  <p class="hint">The old secret stopped working at once.</p>
  % endif
  <p><a href="/admin/keys/${key['id']}">Back to the key</a> · <a href="/admin/keys">All keys</a></p>
</section>
