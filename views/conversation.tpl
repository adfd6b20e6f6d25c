% rebase('base', title=title, scripts=scripts)
% WHO = {'client': 'C:', 'server': 'S:', 'note': '--', 'message': '..'}
<link rel="stylesheet" href="/static/css/live.css">
<div class="live-head">
  <h1>Conversation {{c['id']}}</h1>
  <span class="live-status" id="live-status" data-state="off">{{'ended' if c['ended'] else 'open'}}</span>
</div>
<p><a href="/live">All conversations</a></p>
<table class="conversation-facts">
  <tr><th>Direction</th><td>{{'incoming' if c['direction'] == 'in' else 'outgoing'}}</td></tr>
  <tr><th>Peer</th><td>{{c['peer']}}</td></tr>
  <tr><th>Local</th><td>{{c['local']}}</td></tr>
  <tr><th>Started (UTC)</th><td>{{clock_text(c['started'])}}</td></tr>
  <tr><th>Ended (UTC)</th><td id="ended">{{clock_text(c['ended']) if c['ended'] else 'still open'}}</td></tr>
</table>
<h2>Dialogue</h2>
<ol class="dialogue" id="dialogue" data-id="{{c['id']}}" data-ended="{{'1' if c['ended'] else ''}}">
% for line in c['dialogue']:
  <li class="{{line['kind']}}" data-n="{{line['n']}}"><span class="t">+{{'%.3f' % line['t']}}s</span><span class="who">{{WHO[line['kind']]}}</span><span class="text">{{line['text']}}</span></li>
% end
</ol>
% if c['dropped']:
<p class="muted">{{c['dropped']}} more lines were not kept.</p>
% end
<h2>Messages</h2>
<div id="messages" data-render="{{'1' if can_render else ''}}">
% for m in c['messages']:
  <section class="card message" data-n="{{m['n']}}">
    <h3>Message {{m['n']}}: {{m['subject'] or '(no subject)'}}</h3>
    <p class="muted">From {{m['sender'] or '<>'}} to {{', '.join(m['recipients'])}}, {{m['size']}} bytes{{' (truncated)' if m['truncated'] else ''}}</p>
    <p><a href="{{m['mime']}}">Raw MIME</a> · <a href="{{m['render']}}" target="_blank" rel="noopener">Rendered HTML</a></p>
    % if can_render:
    <iframe sandbox src="{{m['render']}}" title="Message {{m['n']}} rendered" class="render"></iframe>
    % else:
    <p class="note">Not rendered here: this browser's user agent is not the one set as <code>render-useragent</code>.</p>
    % end
  </section>
% end
</div>
<p class="muted" id="no-messages"{{!'' if not c['messages'] else ' hidden'}}>No message in this conversation.</p>
