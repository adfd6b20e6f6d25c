% rebase('base', title=title, scripts=scripts)
<link rel="stylesheet" href="/static/css/live.css">
<div class="live-head">
  <h1>Live SMTP</h1>
  <span class="live-status" id="live-status" data-state="off">not connected</span>
</div>
% if not recording:
<p class="card note">The live view is not recording in this process.</p>
% end
% if workers:
<p class="card note" id="worker-note">Incoming SMTP sessions run in {{workers}} worker processes
(<code>smtp-threads</code>); each process sends the sessions it records here.</p>
% end
<p class="muted">While this page is open every conversation is recorded; otherwise at most one a
second. The last {{size}} are kept. AUTH data is never recorded.</p>
<table class="live-list" id="live-list">
  <thead>
    <tr><th>#</th><th>Started (UTC)</th><th>Direction</th><th>Peer</th><th>Local</th>
        <th>Sender</th><th>Recipients</th><th class="num">Lines</th><th class="num">Messages</th>
        <th>Last reply</th><th>State</th></tr>
  </thead>
  <tbody>
% for c in conversations:
    <tr data-id="{{c['id']}}" class="{{c['direction']}}">
      <td><a href="/live/{{c['id']}}">{{c['id']}}</a></td>
      <td>{{clock_text(c['started'])}}</td>
      <td>{{'incoming' if c['direction'] == 'in' else 'outgoing'}}</td>
      <td>{{c['peer']}}</td>
      <td>{{c['local']}}</td>
      <td>{{c['sender'] or ''}}</td>
      <td>{{', '.join(c['recipients'])}}</td>
      <td class="num">{{c['lines']}}</td>
      <td class="num">{{c['messages']}}</td>
      <td class="reply">{{c['last_reply']}}</td>
      <td>{{'ended' if c['ended'] else 'open'}}</td>
    </tr>
% end
  </tbody>
</table>
<p class="muted" id="live-empty"{{!'' if not conversations else ' hidden'}}>No conversation recorded yet.</p>
