% rebase('base', title='Log in', user=None, csrf='')
<section class="login">
  <h1>mailerq-gevent</h1>
  % if error:
  <p class="error" role="alert">{{error}}</p>
  % end
  <form method="post" action="/login">
    <label>User <input name="user" autocomplete="username" required autofocus></label>
    <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
    <button type="submit">Log in</button>
  </form>
</section>
