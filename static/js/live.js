/* The live SMTP view (views/live.tpl, views/conversation.tpl): server-sent
   events from /api/live/stream keep the list, or one conversation's
   dialogue, up to date without reloading. Data goes into the page with
   textContent only; a message's rendering is an <iframe sandbox> (no
   allow-scripts, no allow-same-origin) of /live/<id>/<n>/render. */
(function () {
  "use strict";

  var MAX_ROWS = 200;
  var WHO = { client: "C:", server: "S:", note: "--", message: ".." };

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (className) { node.className = className; }
    return node;
  }

  function clock(seconds) {
    return seconds ? new Date(seconds * 1000).toISOString().substr(11, 8) : "";
  }

  function setStatus(state, text) {
    var status = document.getElementById("live-status");
    if (status) { status.dataset.state = state; status.textContent = text; }
  }

  function getJSON(url, done) {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (data) { if (data) { done(data); } })
      .catch(function () { /* the stream's reconnect tries again */ });
  }

  function listen(url, handlers, onOpen) {
    var source = new EventSource(url);
    source.onopen = function () { onOpen(source); };
    source.onerror = function () { setStatus("off", "reconnecting…"); };
    Object.keys(handlers).forEach(function (kind) {
      source.addEventListener(kind, function (event) {
        handlers[kind](JSON.parse(event.data || "{}"), source);
      });
    });
    return source;
  }

  /* -- the list ------------------------------------------------------------ */

  function row(c) {
    var tr = document.createElement("tr");
    var link = el("a", c.id);
    link.href = "/live/" + encodeURIComponent(c.id);
    var first = el("td");
    first.appendChild(link);
    tr.dataset.id = c.id;
    tr.className = c.direction;
    tr.appendChild(first);
    [clock(c.started), c.direction === "in" ? "incoming" : "outgoing", c.peer, c.local,
     c.sender || "", (c.recipients || []).join(", ")].forEach(function (text) {
      tr.appendChild(el("td", text));
    });
    tr.appendChild(el("td", c.lines, "num"));
    tr.appendChild(el("td", c.messages, "num"));
    tr.appendChild(el("td", c.last_reply, "reply"));
    tr.appendChild(el("td", c.ended ? "ended" : "open"));
    return tr;
  }

  function showRow(body, c) {
    var old = body.querySelector('tr[data-id="' + Number(c.id) + '"]');
    var fresh = row(c);
    if (old) {
      body.replaceChild(fresh, old);
    } else {
      body.insertBefore(fresh, body.firstChild);
      while (body.rows.length > MAX_ROWS) { body.deleteRow(-1); }
    }
    document.getElementById("live-empty").hidden = true;
  }

  function rebuild(body, list) {
    while (body.firstChild) { body.removeChild(body.firstChild); }
    list.slice(0, MAX_ROWS).forEach(function (c) { body.appendChild(row(c)); });
    document.getElementById("live-empty").hidden = list.length > 0;
  }

  function startList(table) {
    var body = table.tBodies[0];
    var refresh = function () { getJSON("/api/live", function (list) { rebuild(body, list); }); };
    var update = function (c) { showRow(body, c); };
    listen("/api/live/stream", { begin: update, update: update, end: update, reset: refresh },
           function () { setStatus("live", "live"); refresh(); });
  }

  /* -- one conversation ------------------------------------------------------- */

  function line(entry) {
    var li = el("li", null, entry.kind);
    li.dataset.n = entry.n;
    li.appendChild(el("span", "+" + Number(entry.t).toFixed(3) + "s", "t"));
    li.appendChild(el("span", WHO[entry.kind] || "", "who"));
    li.appendChild(el("span", entry.text, "text"));
    return li;
  }

  function messageBox(m, canRender) {
    var box = el("section", null, "card message");
    box.dataset.n = m.n;
    box.appendChild(el("h3", "Message " + m.n + ": " + (m.subject || "(no subject)")));
    box.appendChild(el("p", "From " + (m.sender || "<>") + " to " + (m.recipients || []).join(", ") +
                       ", " + m.size + " bytes" + (m.truncated ? " (truncated)" : ""), "muted"));
    var links = el("p");
    var raw = el("a", "Raw MIME");
    raw.href = m.mime;
    var rendered = el("a", "Rendered HTML");
    rendered.href = m.render;
    rendered.target = "_blank";
    rendered.rel = "noopener";
    links.appendChild(raw);
    links.appendChild(document.createTextNode(" · "));
    links.appendChild(rendered);
    box.appendChild(links);
    if (canRender) {
      var frame = document.createElement("iframe");
      frame.setAttribute("sandbox", "");      /* before src: no scripts, no same origin */
      frame.title = "Message " + m.n + " rendered";
      frame.className = "render";
      frame.src = m.render;
      box.appendChild(frame);
    } else {
      box.appendChild(el("p", "Not rendered here: this browser's user agent is not the one " +
                              "set as render-useragent.", "note"));
    }
    return box;
  }

  function startConversation(list) {
    var id = list.dataset.id;
    var messages = document.getElementById("messages");
    var canRender = messages.dataset.render === "1";
    var last = function () { return list.children.length; };
    var addMessage = function (m) {
      if (messages.querySelector('section[data-n="' + Number(m.n) + '"]')) { return; }
      messages.appendChild(messageBox(m, canRender));
      document.getElementById("no-messages").hidden = true;
    };
    var ended = function (c, source) {
      list.dataset.ended = "1";
      document.getElementById("ended").textContent = clock(c.ended);
      setStatus("ended", "ended");
      if (source) { source.close(); }
    };
    var catchUp = function () {
      getJSON("/api/live/" + encodeURIComponent(id), function (c) {
        c.dialogue.slice(last()).forEach(function (entry) { list.appendChild(line(entry)); });
        c.messages.forEach(addMessage);
        if (c.ended) { ended(c, current); }
      });
    };
    var onLine = function (entry) {
      if (entry.n !== last() + 1) { if (entry.n > last()) { catchUp(); } return; }
      list.appendChild(line(entry));
      if (entry.message) { addMessage(entry.message); }
    };
    var current = null;
    if (list.dataset.ended) { return; }
    current = listen("/api/live/stream?id=" + encodeURIComponent(id),
                     { line: onLine, end: function (c, source) { catchUp(); ended(c, source); },
                       reset: catchUp },
                     function () { setStatus("live", "live"); catchUp(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("live-list");
    var dialogue = document.getElementById("dialogue");
    if (table) { startList(table); }
    if (dialogue) { startConversation(dialogue); }
  });
}());
