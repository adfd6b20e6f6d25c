% rebase('base', title=title, scripts=get('scripts', []))
<h1>Overview</h1>
<p>Deliveries per minute, queues and connections appear here.</p>
