% rebase('base', title=title, scripts=[])
<link rel="stylesheet" href="/static/css/tables.css">
<h1>Settings</h1>
% if missing:
<p class="error" role="alert">{{missing}}</p>
% end
<p class="muted">The configuration tables. A change made here reloads the settings at once
(live generation {{settings.generation}}).</p>
<section class="card">
<table class="tables" id="tables">
<thead><tr><th>Table</th><th>Rows</th><th>Loaded</th><th>What it holds</th></tr></thead>
<tbody>
% for t in tables:
<tr data-table="{{t['name']}}">
  <td><a href="/tables/{{t['name']}}">{{t['title']}}</a><div class="muted small">{{t['name']}}{{' (read-only)' if t['read_only'] else ''}}</div></td>
  <td class="count">{{t['rows']}}</td>
  % if t['live'] is None:
  <td class="muted">not loaded</td>
  % elif t['live'] != t['rows']:
  <td class="error" title="rows the loader skips or merges">{{t['live']}}</td>
  % else:
  <td>{{t['live']}}</td>
  % end
  <td>{{t['help']}}</td>
</tr>
% end
</tbody>
</table>
</section>
<p><a href="/dkim">Generate a DKIM key and see the DNS records to publish</a></p>
