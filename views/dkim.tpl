% rebase('base', title=title, scripts=scripts)
<link rel="stylesheet" href="/static/css/tables.css">
<h1>DKIM keys</h1>
% if message:
<p class="ok" role="status" id="message">{{message}}</p>
% end
% for key in new:
<section class="card new-key" id="new-key">
  <h2>New key for {{key['domain']}}: publish this DNS record</h2>
  <p>Name <code class="txt-name">{{key['txt_name']}}</code>, type TXT, value:</p>
  <pre class="txt txt-value">{{key.get('txt_value', '')}}</pre>
  <p>As a zone file line:</p>
  <pre class="txt txt-record">{{key.get('txt_record', '')}}</pre>
  <p class="muted">The private key is stored in the database and is never shown. To sign with it,
  add a <a href="/tables/dkim_patterns">DKIM pattern</a> naming key {{key['id']}}.</p>
</section>
% end
<section class="card">
<h2>Keys</h2>
% if keys:
<div class="scroll">
<table class="rows" id="keys">
<thead><tr><th>id</th><th>domain</th><th>selector</th><th>algorithm</th><th>expire</th><th>DNS TXT record</th><th></th></tr></thead>
<tbody>
% for key in keys:
<tr data-id="{{key['id']}}" class="{{'skipped' if key['problem'] or key.get('txt_error') else ''}}">
  <td>{{key['id']}}</td>
  <td>{{key['domain']}}</td>
  <td>{{key['selector']}}</td>
  <td>{{key['algorithm']}}</td>
  <td>{{key['expire'] or 'no x= tag'}}</td>
  <td class="long">
    <code class="txt-name">{{key['txt_name']}}</code>
    % if key.get('txt_error'):
    <div class="error small">{{key['txt_error']}}</div>
    % else:
    <pre class="txt small">{{key['txt_value']}}</pre>
    % end
    % if key['problem']:
    <div class="error small">Skipped by the settings loader: {{key['problem']}}</div>
    % end
  </td>
  <td class="actions"><button type="button" class="delete" data-id="{{key['id']}}">Delete</button></td>
</tr>
% end
</tbody>
</table>
</div>
% else:
<p class="muted">No keys yet.</p>
% end
<p class="error" id="keys-error" role="alert" hidden></p>
</section>
<div class="grid">
<section class="card">
<h2>Generate a key</h2>
<form id="generate-form" novalidate>
  <p class="error form-error" role="alert" hidden></p>
  <label class="field"><span class="label">domain *</span>
    <input name="domain" data-kind="text" placeholder="example.com">
    <span class="field-error error" data-for="domain"></span></label>
  <label class="field"><span class="label">selector *</span>
    <input name="selector" data-kind="text" placeholder="mq2024">
    <span class="field-error error" data-for="selector"></span></label>
  <label class="field"><span class="label">algorithm</span>
    <select name="algorithm" data-kind="text">
      <option value="rsa-sha256" selected>RSA 2048 (rsa-sha256)</option>
      <option value="ed25519-sha256">Ed25519 (ed25519-sha256)</option>
    </select>
    <span class="field-error error" data-for="algorithm"></span></label>
  <label class="field"><span class="label">expire</span>
    <input name="expire" type="number" value="0" min="0" data-kind="int">
    <span class="hint muted">seconds a signature is valid (0: no x= tag)</span>
    <span class="field-error error" data-for="expire"></span></label>
  <div class="buttons"><button type="submit" class="primary">Generate</button></div>
</form>
</section>
<section class="card">
<h2>Upload a private key</h2>
<form id="upload-form" novalidate>
  <p class="error form-error" role="alert" hidden></p>
  <label class="field"><span class="label">domain *</span>
    <input name="domain" data-kind="text">
    <span class="field-error error" data-for="domain"></span></label>
  <label class="field"><span class="label">selector *</span>
    <input name="selector" data-kind="text">
    <span class="field-error error" data-for="selector"></span></label>
  <label class="field"><span class="label">algorithm</span>
    <select name="algorithm" data-kind="text">
      <option value="rsa-sha256" selected>rsa-sha256</option>
      <option value="ed25519-sha256">ed25519-sha256</option>
    </select>
    <span class="field-error error" data-for="algorithm"></span></label>
  <label class="field"><span class="label">expire</span>
    <input name="expire" type="number" value="0" min="0" data-kind="int">
    <span class="field-error error" data-for="expire"></span></label>
  <label class="field"><span class="label">private key (PEM) *</span>
    <textarea name="privatekey" data-kind="text" rows="8" autocomplete="off" spellcheck="false"></textarea>
    <span class="hint muted">stored, never shown again</span>
    <span class="field-error error" data-for="privatekey"></span></label>
  <div class="buttons"><button type="submit" class="primary">Upload</button></div>
</form>
</section>
</div>
