/* The overview page (views/overview.tpl): charts of /api/stats, queue depths and
 * connections from /api/status, cluster links from /api/cluster, refreshed by
 * polling. Pause buttons call POST /api/tables/paused; Reload calls
 * POST /api/reload. All text goes in with textContent (never innerHTML).
 * The charts are exposed as window.mqCharts for the browser tests. */
(function () {
  "use strict";

  var STATUS_EVERY = 5000;          // ms: status and the hour chart
  var DAY_EVERY = 60000;            // ms: the day chart and the cluster
  var COLOURS = {success: "#067647", failures: "#b42318", retries: "#b54708"};
  var LABELS = {success: "Delivered", failures: "Failed", retries: "Retried"};
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var latest = {hour: null, day: null};
  var lastDay = 0;
  var stopped = false;

  function $(id) { return document.getElementById(id); }

  function text(tag, value, className) {
    var element = document.createElement(tag);
    element.textContent = value === null || value === undefined ? "-" : String(value);
    if (className) { element.className = className; }
    return element;
  }

  function say(message, good) {
    var box = $("overview-message");
    box.textContent = message || "";
    box.className = good ? "ok" : "error";
    box.hidden = !message;
  }

  function api(method, path, body) {
    var options = {method: method, headers: {"Accept": "application/json"},
                   credentials: "same-origin"};
    if (method !== "GET") {
      options.headers["X-CSRF-Token"] = csrf;
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body || {});
    }
    return fetch(path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status === 401) { stopped = true; }
        if (!response.ok) {
          throw new Error(data.error || ("HTTP " + response.status));
        }
        return data;
      });
    });
  }

  // -- charts ----------------------------------------------------------------

  function clock(seconds, withDay) {
    var options = {hour: "2-digit", minute: "2-digit"};
    if (withDay) { options.weekday = "short"; }
    return new Date(seconds * 1000).toLocaleTimeString([], options);
  }

  function makeChart(canvas, type) {
    var datasets = Object.keys(LABELS).map(function (key) {
      return {label: LABELS[key], data: [], borderColor: COLOURS[key],
              backgroundColor: COLOURS[key], pointRadius: 0, borderWidth: 2,
              tension: 0, stack: type === "bar" ? "all" : undefined};
    });
    return new window.Chart(canvas, {
      type: type,
      data: {labels: [], datasets: datasets},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: {mode: "index", intersect: false},
        scales: {x: {stacked: type === "bar", ticks: {maxTicksLimit: 12}},
                 y: {stacked: type === "bar", beginAtZero: true, ticks: {precision: 0}}},
        plugins: {legend: {position: "bottom"}}
      }
    });
  }

  var charts = {hour: makeChart($("chart-hour"), "line"),
                day: makeChart($("chart-day"), "bar")};
  window.mqCharts = charts;

  function drawStats(stats) {
    var chart = charts[stats.range];
    latest[stats.range] = stats;
    chart.data.labels = stats.series.times.map(function (t) {
      return clock(t, false);
    });
    Object.keys(LABELS).forEach(function (key, index) {
      chart.data.datasets[index].data = stats.series[key];
    });
    chart.update("none");
    $("totals-" + stats.range).textContent = Object.keys(LABELS).map(function (key) {
      return LABELS[key] + ": " + stats.totals[key];
    }).join(" · ");
    if ($("top-range").value === stats.range) { drawTops(stats); }
  }

  // -- top lists and pausing ----------------------------------------------------

  function drawTops(stats) {
    drawTop($("top-domains"), stats.domains, "domain");
    drawTop($("top-localips"), stats.localips, "localip");
  }

  function drawTop(table, rows, key) {
    var body = table.tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      var empty = document.createElement("tr");
      var cell = text("td", "No deliveries in this period.", "muted");
      cell.colSpan = 5;
      empty.appendChild(cell);
      body.appendChild(empty);
      return;
    }
    rows.forEach(function (row) {
      var line = document.createElement("tr");
      line.appendChild(text("td", row[key] || "(unassigned)"));
      ["success", "failures", "retries"].forEach(function (name) {
        line.appendChild(text("td", row[name], "num"));
      });
      line.appendChild(pauseCell(key, row));
      body.appendChild(line);
    });
  }

  function pauseCell(key, row) {
    var cell = document.createElement("td");
    cell.className = "action";
    if (row.paused) {
      cell.appendChild(text("span", "Paused", "badge paused"));
    } else if (row[key]) {          // an empty key would pause everything
      var button = text("button", "Pause");
      button.type = "button";
      button.className = "pause";
      button.dataset.kind = key;
      button.dataset.value = row[key];
      button.addEventListener("click", function () { pause(button, key, row); });
      cell.appendChild(button);
    }
    return cell;
  }

  function pause(button, key, row) {
    var target = key === "domain" ? {localip: "", target: row.domain}
                                  : {localip: row.localip, target: ""};
    button.disabled = true;
    api("POST", "/api/tables/paused", target).then(function () {
      row.paused = true;
      button.replaceWith(text("span", "Paused", "badge paused"));
      say((key === "domain" ? "Domain " : "Local IP ") + row[key] +
          " paused. Unpause it under Settings → paused.", true);
    }).catch(function (error) {
      button.disabled = false;
      say("Could not pause " + row[key] + ": " + error.message);
    });
  }

  // -- status, connections, cluster --------------------------------------------------

  function drawStatus(status) {
    var body = $("queues").tBodies[0];
    body.replaceChildren();
    status.queues.forEach(function (queue) {
      var line = document.createElement("tr");
      line.appendChild(text("td", queue.key));
      line.appendChild(text("td", queue.name || "(disabled)", queue.name ? "" : "muted"));
      var depth = queue.state === "ok" ? queue.depth : queue.state;
      line.appendChild(text("td", depth, queue.state === "ok" ? "num" : "num muted"));
      body.appendChild(line);
    });
    var connections = status.connections || {};
    document.querySelectorAll("#connections td[data-key]").forEach(function (cell) {
      var value = connections[cell.dataset.key];
      cell.textContent = value === undefined || value === null ? "-" : String(value);
    });
    var settings = status.settings;
    $("settings-info").textContent = settings.loaded
      ? "Generation " + settings.generation + ", loaded " +
        new Date(settings.loaded_at * 1000).toLocaleString()
      : "Not loaded from the database yet.";
    $("overview-updated").className = "muted";
    $("overview-updated").textContent = status.hostname + " · updated " +
      new Date(status.time * 1000).toLocaleTimeString();
  }

  function drawCluster(cluster) {
    var body = $("cluster").tBodies[0];
    body.replaceChildren();
    cluster.instances.forEach(function (instance) {
      var line = document.createElement("tr");
      var name = document.createElement("td");
      if (instance.url && /^https?:\/\//i.test(instance.url)) {
        var link = text("a", instance.hostname);
        link.href = instance.url;
        link.rel = "noopener noreferrer";
        name.appendChild(link);
      } else {
        name.textContent = instance.hostname;
      }
      if (instance.self) { name.appendChild(text("span", "this console", "badge")); }
      line.appendChild(name);
      line.appendChild(text("td", instance.ips.join(", ") || "-"));
      line.appendChild(text("td", instance.updated
        ? new Date(instance.updated * 1000).toLocaleString() : "-"));
      body.appendChild(line);
    });
  }

  // -- polling -----------------------------------------------------------------------

  function refresh() {
    var now = Date.now();
    var work = [api("GET", "/api/status").then(drawStatus),
                api("GET", "/api/stats?range=hour").then(drawStats)];
    if (now - lastDay >= DAY_EVERY) {
      lastDay = now;
      work.push(api("GET", "/api/stats?range=day").then(drawStats));
      work.push(api("GET", "/api/cluster").then(drawCluster));
    }
    return Promise.all(work).catch(function (error) {
      var line = $("overview-updated");
      line.className = "error";
      line.textContent = stopped ? "Your session has ended: log in again."
                                 : "Update failed: " + error.message;
    });
  }

  function loop() {
    if (stopped) { return; }
    var next = function () { window.setTimeout(loop, STATUS_EVERY); };
    if (document.hidden) { next(); return; }
    refresh().then(next);
  }

  $("top-range").addEventListener("change", function () {
    var stats = latest[$("top-range").value];
    if (stats) { drawTops(stats); }
  });

  $("reload-settings").addEventListener("click", function () {
    var button = $("reload-settings");
    button.disabled = true;
    api("POST", "/api/reload").then(function (answer) {
      say("Settings reloaded: generation " + answer.generation + ".", true);
      return refresh();
    }).catch(function (error) {
      say("Reload failed: " + error.message);
    }).then(function () { button.disabled = false; });
  });

  loop();
}());
