/* Neural entropy dashboard: chart read-outs, the live job list and cancel buttons.
   The app's own script: no libraries, no external requests; pages work without it
   (charts are drawn by the server, cancel falls back to a form post). */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";

  function fmt(v) {
    if (v === null || v === undefined) return "—";
    var t = Number(v).toPrecision(6);
    if (t.indexOf(".") < 0) return t;
    return t.replace(/(\.\d*?)0+(e|$)/, "$1$2").replace(/\.(e|$)/, "$1");
  }

  /* ---- charts: the values under the pointer (or the arrow keys) ---- */
  function nearest(xs, x) {
    var lo = 0, hi = xs.length - 1, best = -1, bestD = Infinity, i, d;
    while (hi - lo > 3) {
      var mid = (lo + hi) >> 1;
      if (xs[mid] === null || xs[mid] < x) lo = mid; else hi = mid;
    }
    for (i = Math.max(0, lo - 2); i <= Math.min(xs.length - 1, hi + 2); i++) {
      if (xs[i] === null) continue;
      d = Math.abs(xs[i] - x);
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  function setupChart(data) {
    var svg = document.getElementById(data.id);
    var out = document.querySelector('[data-readout="' + data.id + '"]');
    if (!svg || !out || !data.series.length) return;
    var p = data.plot, xd = data.x_domain, yd = data.y_domain;
    var cursor = svg.querySelector("g.cursor"), line = cursor.querySelector("line");
    var markers = data.series.map(function (s) {
      var c = document.createElementNS(SVGNS, "circle");
      c.setAttribute("r", "4.5");
      c.setAttribute("class", "marker c" + s.color);
      cursor.appendChild(c);
      return c;
    });
    var ref = data.series[0], index = -1;
    function xsOf(s) { return s.x || data.x; }
    var refX = xsOf(ref);
    function px(x) {
      var u = data.x_log ? Math.log10(x) : x;
      return p.left + (u - xd[0]) / (xd[1] - xd[0]) * (p.right - p.left);
    }
    function py(y) { return p.bottom - (y - yd[0]) / (yd[1] - yd[0]) * (p.bottom - p.top); }
    function show(i) {
      if (i < 0 || i >= refX.length) return;
      index = i;
      var x = refX[i], parts = [data.x_label + " = " + fmt(x)];
      line.setAttribute("x1", px(x)); line.setAttribute("x2", px(x));
      data.series.forEach(function (s, k) {
        var sx = xsOf(s), j = s === ref || sx === refX ? i : nearest(sx, x), m = markers[k];
        if (j < 0 || s.y[j] === null) { m.setAttribute("hidden", ""); return; }
        var text = s.name + " = " + fmt(s.y[j]);
        if (s.err && s.err[j] !== null) text += " ± " + fmt(s.err[j]) + " (" + s.err_label + ")";
        if (sx[j] !== x) text += " at " + fmt(sx[j]);
        parts.push(text);
        m.removeAttribute("hidden");
        m.setAttribute("cx", px(sx[j])); m.setAttribute("cy", py(s.y[j]));
      });
      cursor.removeAttribute("hidden");
      out.textContent = parts.join(" · ");
      out.setAttribute("data-index", String(i));
    }
    svg.addEventListener("pointermove", function (ev) {
      var r = svg.getBoundingClientRect();
      var vx = (ev.clientX - r.left) * p.width / r.width;
      if (vx < p.left || vx > p.right) return;
      var u = xd[0] + (vx - p.left) / (p.right - p.left) * (xd[1] - xd[0]);
      show(nearest(refX, data.x_log ? Math.pow(10, u) : u));
    });
    svg.addEventListener("focus", function () { if (index < 0) show(refX.length >> 1); });
    svg.addEventListener("keydown", function (ev) {
      var n = refX.length, step = ev.shiftKey ? Math.max(1, Math.round(n / 10)) : 1, i = index;
      if (ev.key === "ArrowRight") i = Math.min(n - 1, index + step);
      else if (ev.key === "ArrowLeft") i = Math.max(0, index - step);
      else if (ev.key === "Home") i = 0;
      else if (ev.key === "End") i = n - 1;
      else return;
      ev.preventDefault();
      show(i);
    });
  }

  /* ---- the job list: poll its JSON and redraw the rows ---- */
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function jobRow(r) {
    var tr = el("tr", {"data-job": r.id}), td;
    td = el("td"); td.appendChild(el("a", {href: r.url}, r.id)); tr.appendChild(td);
    tr.appendChild(el("td", {}, r.type));
    td = el("td"); td.appendChild(el("span", {"class": "status s-" + r.status, "data-field": "status"}, r.status));
    if (r.cancel_requested && r.status === "running") td.appendChild(el("span", {"class": "muted"}, " (cancel requested)"));
    tr.appendChild(td);
    td = el("td");
    var bar = el("progress", {max: "100", "aria-label": "progress of " + r.id});
    if (r.percent !== null) bar.setAttribute("value", String(r.percent));
    td.appendChild(bar);
    var label = (r.percent !== null ? r.percent + " % " : " ") + r.phase;
    if (r.epochs) label += " · epoch " + (r.epoch || 0) + "/" + r.epochs;
    td.appendChild(document.createTextNode(" "));
    td.appendChild(el("span", {"data-field": "progress"}, label));
    tr.appendChild(td);
    tr.appendChild(el("td", {"data-field": "eta"}, r.eta));
    tr.appendChild(el("td", {"data-field": "device"}, r.device));
    tr.appendChild(el("td", {}, r.created_at.slice(0, 19).replace("T", " ")));
    td = el("td");
    if (r.measurement_url) td.appendChild(el("a", {href: r.measurement_url}, "measurement"));
    if (r.error) td.appendChild(el("span", {"class": "error"}, r.error));
    tr.appendChild(td);
    td = el("td");
    if (r.cancelable) {
      var f = el("form", {method: "post", action: "/ui/jobs/" + r.id + "/cancel", "class": "cancel"});
      f.appendChild(el("input", {type: "hidden", name: "csrf_token", value: csrf()}));
      f.appendChild(el("button", {type: "submit", "aria-label": "Cancel job " + r.id}, "Cancel"));
      td.appendChild(f);
    }
    tr.appendChild(td);
    return tr;
  }

  function setupJobList(tbody) {
    var url = tbody.getAttribute("data-poll"), state = document.getElementById("poll-state");
    var count = document.getElementById("job-count"), timer = null;
    function redraw(doc) {
      var focused = document.activeElement, focusJob = null;
      if (focused && tbody.contains(focused)) {
        var tr = focused.closest("tr");
        focusJob = tr ? tr.getAttribute("data-job") : null;
      }
      var rows = doc.jobs.map(jobRow);
      while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
      if (!rows.length) {
        var tr0 = el("tr", {"class": "empty"}), td0 = el("td", {colspan: "9"}, "No jobs.");
        tr0.appendChild(td0); tbody.appendChild(tr0);
      }
      rows.forEach(function (r) { tbody.appendChild(r); });
      if (focusJob) {  /* keep keyboard focus on the same row's link */
        var again = tbody.querySelector('tr[data-job="' + focusJob + '"] a');
        if (again) again.focus();
      }
      if (count) count.textContent = String(doc.total);
      if (state) state.textContent = "(last update " + new Date().toLocaleTimeString() + ")";
    }
    function poll() {
      if (document.hidden) { timer = setTimeout(poll, 2000); return; }
      fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then(function (r) {
          if (r.status === 401) { if (state) state.textContent = "(signed out: reload to sign in)"; return null; }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (doc) { if (doc) { redraw(doc); timer = setTimeout(poll, 2000); } })
        .catch(function () {
          if (state) state.textContent = "(could not update; retrying)";
          timer = setTimeout(poll, 5000);
        });
    }
    tbody.pollNow = function () { clearTimeout(timer); poll(); };
    timer = setTimeout(poll, 2000);
  }

  /* ---- cancel: POST with the CSRF token in a header; the form post is the fallback ---- */
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains("cancel")) return;
    ev.preventDefault();
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    fetch(form.getAttribute("action"), {method: "POST", credentials: "same-origin",
      headers: {"X-CSRF-Token": csrf(), Accept: "application/json"}})
      .then(function (r) {
        if (!r.ok) return r.json().then(function (p) { throw new Error(p.detail || ("HTTP " + r.status)); });
        var tbody = document.getElementById("job-rows");
        if (tbody && tbody.pollNow) tbody.pollNow(); else window.location.reload();
      })
      .catch(function (e) {
        if (button) button.disabled = false;
        window.alert("Could not cancel: " + e.message);
      });
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("script.chart-data").forEach(function (s) {
      try { setupChart(JSON.parse(s.textContent)); } catch (e) { /* leave the static chart */ }
    });
    var tbody = document.getElementById("job-rows");
    if (tbody) setupJobList(tbody);
  });
})();
