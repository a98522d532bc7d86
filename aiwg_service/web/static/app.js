/* aiwg dashboard: live updates from Server-Sent Events (never polling), written for this page, no build step.
   Everything arriving from the service is inserted as text (textContent), or is HTML the server escaped. */
"use strict";
(function () {
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var live = document.getElementById("live");
  var enc = new TextEncoder(), dec = new TextDecoder();

  function setLive(on) { if (live) { live.className = on ? "live on" : "live off"; } }

  function open(url, handlers) {
    var es = new EventSource(url);
    es.onopen = function () { setLive(true); };
    es.onerror = function () { setLive(false); };
    Object.keys(handlers).forEach(function (k) {
      es.addEventListener(k, function (m) { handlers[k](JSON.parse(m.data), m); });
    });
    return es;
  }

  /* A stream held only while the tab is visible: a browser opens at most six connections to one host, so
     background tabs give theirs back; coming back, the stream resumes where the page is (offsets, cursor). */
  function liveStream(makeUrl, handlers, onReturn) {
    var es = null;
    function start() { if (!es) { es = open(makeUrl(), handlers); } }
    function stop() { if (es) { es.close(); es = null; setLive(false); } }
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") { stop(); } else { if (onReturn) { onReturn(); } start(); }
    });
    window.addEventListener("pagehide", stop);
    if (document.visibilityState !== "hidden") { start(); }
    return { stop: stop };
  }

  /* Append a log chunk once: `offset` is the byte offset after it, so repeats are skipped. */
  function appendLog(pre, msg) {
    var have = parseInt(pre.dataset.offset || "0", 10);
    if (msg.offset <= have) { return; }
    var bytes = enc.encode(msg.data || "");
    var start = msg.offset - bytes.length;
    var text = start < have ? dec.decode(bytes.slice(have - start)) : msg.data;
    var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(text || ""));
    pre.dataset.offset = String(msg.offset);
    if (stick) { pre.scrollTop = pre.scrollHeight; }
  }

  /* Readable lines, each with the offset after it: a line the page has already is skipped. */
  function appendLines(pre, msg) {
    var have = parseInt(pre.dataset.offset || "0", 10), add = "";
    msg.lines.forEach(function (l) { if (l[0] > have) { add += l[1] + "\n"; have = l[0]; } });
    if (!add) { return; }
    var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(add));
    pre.dataset.offset = String(have);
    if (stick) { pre.scrollTop = pre.scrollHeight; }
  }

  function logFor(id) { return document.querySelector('pre.log[data-task="' + CSS.escape(id) + '"]'); }

  function onOutput(msg) { var pre = logFor(msg.taskId); if (pre) { appendLog(pre, msg); } }
  function onLines(msg) { var pre = logFor(msg.taskId); if (pre) { appendLines(pre, msg); } }

  /* Cancel without leaving the page: the stream's task event redraws the list. */
  function wireCancel(root) {
    root.querySelectorAll("form.js-cancel").forEach(function (f) {
      f.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var b = f.querySelector("button"); if (b) { b.disabled = true; b.textContent = "Cancelling…"; }
        fetch(f.action, { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" })
          .then(function (r) { if (!r.ok) { throw new Error(r.status); } if (document.body.dataset.page !== "now") { location.reload(); } })
          .catch(function () { f.submit(); });
      });
    });
  }

  /* Now: redraw the task list on task events (fetching a fragment), keeping the logs already streamed. */
  function toBottom(root) {
    root.querySelectorAll("pre.log").forEach(function (p) { if (!p.dataset.seen) { p.dataset.seen = "1"; p.scrollTop = p.scrollHeight; } });
  }

  function nowPage() {
    var box = document.getElementById("tasks");
    toBottom(box);
    var pending = false, again = false;
    function redraw() {
      if (pending) { again = true; return; }  /* one fetch at a time; events meanwhile ask for one more */
      pending = true;
      fetch("/partials/now", { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) { throw new Error(r.status); }
        return r.text();
      }).then(function (html) {
        pending = false;
        var old = {};
        box.querySelectorAll("pre.log").forEach(function (p) { old[p.dataset.task] = p; });
        var t = document.createElement("template");
        t.innerHTML = html;
        t.content.querySelectorAll("pre.log").forEach(function (p) {
          var keep = old[p.dataset.task];
          if (keep && parseInt(keep.dataset.offset, 10) >= parseInt(p.dataset.offset, 10)) { p.replaceWith(keep); }
        });
        box.replaceChildren(t.content);
        wireCancel(box);
        toBottom(box);
        if (again) { again = false; redraw(); }
      }).catch(function () { pending = false; again = false; setLive(false); });
    }
    liveStream(function () {
      var follow = [];
      box.querySelectorAll("pre.log").forEach(function (p) { follow.push(p.dataset.task + ":" + p.dataset.offset); });
      return "/sse/now?follow=" + encodeURIComponent(follow.join(","));
    }, { task: redraw, lines: onLines, output: onOutput }, redraw);
  }

  function taskPage() {
    var pre = document.querySelector("pre.log");
    if (!pre || pre.dataset.follow !== "yes") { return; }
    pre.scrollTop = pre.scrollHeight;
    var live = liveStream(function () {
      return "/sse/tasks/" + encodeURIComponent(pre.dataset.task) + "?offset=" + pre.dataset.offset + (pre.dataset.raw ? "&raw=1" : "");
    }, {
      output: function (msg) { appendLog(pre, msg); },
      lines: function (msg) { appendLines(pre, msg); },
      done: function () { live.stop(); setTimeout(function () { location.reload(); }, 300); }
    });
  }

  /* Events: new rows on top; the last cursor (sequence number, or id) survives a reload in sessionStorage. */
  function eventsPage() {
    var table = document.getElementById("events");
    var body = table.querySelector("tbody");
    var key = "aiwg-events:" + table.dataset.type + ":" + table.dataset.project;
    var since = sessionStorage.getItem(key) || table.dataset.last || "";
    var note = document.getElementById("resume-note");
    function cell(tr, text, cls) { var td = document.createElement("td"); if (cls) { td.className = cls; } td.textContent = text; tr.appendChild(td); return td; }
    function row(e, m) {
      if (document.querySelector('tr[data-id="' + CSS.escape(e.id) + '"]')) { return; }
      var tr = document.createElement("tr"); tr.dataset.id = e.id;
      var td = document.createElement("td"); td.className = "nowrap";
      var a = document.createElement("a"); a.href = "/trace/" + encodeURIComponent(e.id); a.title = e.id;
      a.textContent = String(e.time || "").replace("T", " ").replace("Z", "").slice(0, 19); td.appendChild(a); tr.appendChild(td);
      var c = document.createElement("code"); c.textContent = e.type; cell(tr, "").appendChild(c);
      cell(tr, e.project ? e.project.replace(/\/+$/, "").split("/").pop() : "-").title = e.project || "";
      cell(tr, JSON.stringify(e.data).slice(0, 2000), "data");
      body.insertBefore(tr, body.firstChild);
      while (body.children.length > 500) { body.removeChild(body.lastChild); }
      var none = document.getElementById("no-events"); if (none) { none.remove(); }
      if (m.lastEventId) { sessionStorage.setItem(key, m.lastEventId); }
    }
    liveStream(function () {
      var q = "?type=" + encodeURIComponent(table.dataset.type || "*") + "&project=" + encodeURIComponent(table.dataset.project || "");
      since = sessionStorage.getItem(key) || since;
      return "/sse/events" + (since ? q + "&since=" + encodeURIComponent(since) : q);
    }, {
      event: row,
      resumed: function (r) {
        if (note) { note.textContent = r.count === null ? "resumed after #" + r.since : r.count ? "caught up on " + r.count + " event(s) since " + r.since : ""; }
      },
      gap: function (g) { if (note) { note.textContent = g.dropped + " event(s) skipped: this page fell behind"; } }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireCancel(document);
    var page = document.body.dataset.page;
    if (page === "now") { nowPage(); }
    else if (page === "task") { taskPage(); }
    else if (page === "events") { eventsPage(); }
  });
})();
