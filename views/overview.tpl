% rebase('base', title=title, scripts=['vendor/chartjs/chart.umd.js', 'js/overview.js'])
<div class="overview-head">
  <h1>Overview</h1>
  <p class="muted" id="overview-updated" aria-live="polite">Loading…</p>
  <button type="button" id="reload-settings">Reload settings</button>
</div>
<p class="error" id="overview-message" role="alert" hidden></p>

<div class="grid">
  <section class="card">
    <h2>Deliveries per minute, last hour</h2>
    <div class="chart"><canvas id="chart-hour" role="img"
      aria-label="Deliveries, failures and retries per minute over the last hour"></canvas></div>
    <p class="muted totals" id="totals-hour"></p>
  </section>
  <section class="card">
    <h2>Deliveries per 15 minutes, last day</h2>
    <div class="chart"><canvas id="chart-day" role="img"
      aria-label="Deliveries, failures and retries per 15 minutes over the last day"></canvas></div>
    <p class="muted totals" id="totals-day"></p>
  </section>
</div>

<div class="grid">
  <section class="card">
    <h2>Queues</h2>
    <table id="queues">
      <thead><tr><th>Queue</th><th>Name</th><th class="num">Ready</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section class="card">
    <h2>Connections</h2>
    <table id="connections">
      <tbody>
        <tr><th>Inbound (SMTP clients)</th><td class="num" data-key="inbound">-</td></tr>
        <tr><th>Outbound (deliveries)</th><td class="num" data-key="outbound">-</td></tr>
        <tr><th>Outbound idle</th><td class="num" data-key="idle">-</td></tr>
      </tbody>
    </table>
    <h2>Settings</h2>
    <p id="settings-info" class="muted">-</p>
  </section>
</div>

<div class="top-range">
  <label>Top lists over
    <select id="top-range">
      <option value="hour">the last hour</option>
      <option value="day">the last day</option>
    </select>
  </label>
</div>
<div class="grid">
  <section class="card">
    <h2>Top domains</h2>
    <table id="top-domains" class="top">
      <thead><tr><th>Domain</th><th class="num">Delivered</th><th class="num">Failed</th>
        <th class="num">Retried</th><th></th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section class="card">
    <h2>Top local IPs</h2>
    <table id="top-localips" class="top">
      <thead><tr><th>Local IP</th><th class="num">Delivered</th><th class="num">Failed</th>
        <th class="num">Retried</th><th></th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</div>

<section class="card">
  <h2>Cluster</h2>
  <table id="cluster">
    <thead><tr><th>Instance</th><th>Addresses</th><th>Started</th></tr></thead>
    <tbody></tbody>
  </table>
</section>
