<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{{csrf}}">
<title>{{title}} · mailerq-gevent</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/css/console.css">
% for script in get('scripts', []):
<script src="/static/{{script}}" defer></script>
% end
</head>
<body>
% if user:
<header class="top">
  <a class="brand" href="/">mailerq-gevent</a>
  <nav>
    <a href="/">Overview</a>
    <a href="/tables">Settings</a>
    <a href="/dkim">DKIM</a>
    <a href="/live">Live SMTP</a>
  </nav>
  <form method="post" action="/logout" class="logout">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <span class="who">{{user}}</span>
    <button type="submit">Log out</button>
  </form>
</header>
% end
<main>
{{!base}}
</main>
</body>
</html>
