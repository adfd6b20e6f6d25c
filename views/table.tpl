% rebase('base', title=title, scripts=scripts)
<link rel="stylesheet" href="/static/css/tables.css">
<p class="crumbs"><a href="/tables">Settings</a> › {{editor.name}}</p>
<h1>{{editor.title}}</h1>
<p class="muted">{{editor.help}}</p>
% if message:
<p class="ok" role="status" id="message">{{message}}</p>
% end
% if editor.name in ('dkim_keys', 'dkim_patterns'):
<p><a href="/dkim">DKIM keys: generate one, see the DNS records to publish</a></p>
% end
<section class="card">
<h2>{{total}} row{{'' if total == 1 else 's'}}</h2>
% if rows:
<div class="scroll">
<table class="rows" id="rows">
<thead><tr><th>id</th>
% if not editor.read_only:
<th></th>
% end
% for header in headers:
<th>{{header.replace('_', '_\u200b')}}</th>
% end
</tr></thead>
<tbody>
% for row in rows:
<tr data-id="{{row['id']}}" class="{{'skipped' if row['problem'] else ''}}">
  <td>{{row['id']}}</td>
  % if not editor.read_only:
  <td class="actions">
    <button type="button" class="edit" data-id="{{row['id']}}">Edit</button>
    <button type="button" class="delete" data-id="{{row['id']}}">Delete</button>
  </td>
  % end
  % for value in row['cells']:
  <td class="{{'long' if len(value) > 40 else ''}}">{{value}}</td>
  % end
</tr>
% if row['problem']:
<tr class="skipped-note"><td colspan="{{len(headers) + 2}}" class="error small">Row {{row['id']}} is skipped by the settings loader: {{row['problem']}}</td></tr>
% end
% end
</tbody>
</table>
</div>
% else:
<p class="muted">No rows.</p>
% end
% if pages > 1:
<nav class="pages">
  % if page > 1:
  <a href="?page={{page - 1}}">‹ previous</a>
  % end
  <span>page {{page}} of {{pages}}</span>
  % if page < pages:
  <a href="?page={{page + 1}}">next ›</a>
  % end
</nav>
% end
</section>
% if fields:
<section class="card">
<h2 id="form-title">Add a row</h2>
<form id="row-form" data-table="{{editor.name}}" novalidate>
  <p class="error form-error" id="form-error" role="alert" hidden></p>
  <div class="fields">
  % for f in fields:
    <label class="field">
      <span class="label">{{f['name']}}{{' *' if f['required'] else ''}}</span>
      % if f['widget'] == 'select':
      <select name="{{f['name']}}" data-kind="{{f['kind']}}">
        % for value, label in f['choices']:
        <option value="{{value}}" {{'selected' if str(value) == str(f['default']) else ''}}>{{label}}</option>
        % end
      </select>
      % elif f['widget'] == 'textarea':
      <textarea name="{{f['name']}}" data-kind="text" data-secret="{{'yes' if f['secret'] else ''}}" rows="{{8 if f['secret'] else 2}}"></textarea>
      % else:
      <input name="{{f['name']}}" type="{{'number' if f['widget'] == 'number' else 'text'}}" value="{{f['default']}}" data-kind="{{f['kind']}}">
      % end
      <span class="hint muted">{{f['hint']}}</span>
      <span class="field-error error" data-for="{{f['name']}}"></span>
    </label>
  % end
  </div>
  <div class="buttons">
    <button type="submit" class="primary" id="save">Add</button>
    <button type="button" id="cancel" hidden>Cancel</button>
  </div>
</form>
</section>
% end
