/* pes_ml report: the account viewer. account.html#<account_id> loads the account's shard
 * (accounts/sNNNN.js, found by FNV-1a of the id) with a script element, which works from
 * file:// where fetch() does not, then draws the account with textContent and SVG. */
(function () {
  var cfg = JSON.parse(document.getElementById("report-config").textContent);
  var shards = {}, wanted = null;
  var status = document.getElementById("account-status");
  var article = document.getElementById("account");

  function featureName(name) {
    var f = cfg.features[name];
    return f ? f[0] : String(name).replace(/_/g, " ");
  }
  function pad(n) { var s = String(n); while (s.length < 4) s = "0" + s; return s; }
  function text(id, value) { document.getElementById(id).textContent = value === null || value === undefined ? "" : String(value); }
  function currentId() {
    try { return decodeURIComponent(location.hash.slice(1)); } catch (e) { return location.hash.slice(1); }
  }

  function showMessage(message) {
    article.hidden = true;
    status.hidden = false;
    status.textContent = message;
  }

  function trendChart(node, values) {
    var W = 640, H = 220, L = 70, R = 60, T = 24, B = 36;
    node.replaceChildren();
    node.setAttribute("viewBox", "0 0 " + W + " " + H);
    node.setAttribute("width", W);
    node.setAttribute("height", H);
    var n = cfg.runs.length;
    function x(i) { return n <= 1 ? (L + W - R) / 2 : L + (W - L - R) * i / (n - 1); }
    function y(v) { return T + (H - T - B) * (1 - v / 100); }
    [0, 25, 50, 75, 100].forEach(function (v) {
      node.appendChild(PES.svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), "class": v === 50 ? "typical" : "grid" }));
      node.appendChild(PES.svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "class": "axis" }, v));
    });
    node.appendChild(PES.svg("text", { x: W - R, y: y(50) - 4, "text-anchor": "end", "class": "axis" }, "typical account"));
    var segment = [];
    function flush() {
      if (segment.length > 1) node.appendChild(PES.svg("polyline", { points: segment.join(" "), "class": "curve" }));
      segment = [];
    }
    cfg.runs.forEach(function (date, i) {
      node.appendChild(PES.svg("text", { x: x(i), y: H - 12, "text-anchor": "middle", "class": "axis" }, date));
      var v = values[i];
      if (PES.missing(v)) { flush(); return; }
      segment.push(x(i).toFixed(1) + "," + y(v).toFixed(1));
    });
    flush();
    cfg.runs.forEach(function (date, i) {
      var v = values[i];
      if (PES.missing(v)) return;
      var dot = PES.svg("circle", { cx: x(i), cy: y(v), r: 5, "class": "dot" });
      dot.appendChild(PES.svg("title", {}, date + ": PES " + PES.number(v, 0)));
      node.appendChild(dot);
      node.appendChild(PES.svg("text", { x: x(i), y: y(v) - 10, "text-anchor": "middle", "class": "value" }, PES.number(v, 0)));
    });
  }

  /* Horizontal bars diverging from zero: [[label, points], ...]. */
  function barChart(node, items, unit) {
    node.replaceChildren();
    var W = 460, rowH = 26, labelW = 130, valueW = 56;
    var H = Math.max(rowH, items.length * rowH) + 8;
    node.setAttribute("viewBox", "0 0 " + W + " " + H);
    node.setAttribute("width", W);
    node.setAttribute("height", H);
    var peak = items.reduce(function (m, it) { return Math.max(m, Math.abs(it[1])); }, 0) || 1;
    var zero = labelW + (W - labelW - valueW) / 2, half = (W - labelW - valueW) / 2;
    node.appendChild(PES.svg("line", { x1: zero, x2: zero, y1: 0, y2: H, "class": "zero" }));
    items.forEach(function (it, i) {
      var yTop = 4 + i * rowH, w = half * Math.abs(it[1]) / peak;
      node.appendChild(PES.svg("text", { x: labelW - 8, y: yTop + 16, "text-anchor": "end", "class": "label" }, PES.capitalize(it[0])));
      var bar = PES.svg("rect", { x: it[1] < 0 ? zero - w : zero, y: yTop + 3, width: Math.max(w, 1), height: rowH - 8, "class": it[1] < 0 ? "neg" : "pos" });
      bar.appendChild(PES.svg("title", {}, PES.capitalize(it[0]) + ": " + PES.signed(it[1], 1) + " " + unit));
      node.appendChild(bar);
      node.appendChild(PES.svg("text", { x: W - 4, y: yTop + 16, "text-anchor": "end", "class": "value" }, PES.signed(it[1], 1)));
    });
  }

  /* Points per component (aligned with cfg.groups) as [[group, points], ...], largest first. */
  function components(points) {
    if (!points) return [];
    return cfg.groups.map(function (g, i) { return [g, points[i]]; })
      .filter(function (it) { return it[1] !== 0; })
      .sort(function (x, y) { return Math.abs(y[1]) - Math.abs(x[1]); });
  }

  function reasonList(node, items, empty) {
    node.replaceChildren();
    if (!items.length) { node.appendChild(PES.el("li", "muted", empty)); return; }
    items.forEach(function (it) {
      var li = PES.el("li", it[1] < 0 ? "neg" : "pos");
      li.appendChild(PES.el("span", "points", PES.signed(it[1], 1) + " pts"));
      li.appendChild(document.createTextNode(" " + it[0]));
      node.appendChild(li);
    });
  }

  function show(a) {
    document.title = (a.name || a.id) + " \u2014 PES report as of " + cfg.as_of;
    text("acct-name", a.name || a.id);
    var badge = PES.tierBadge(a.tier);
    badge.id = "acct-tier";
    document.getElementById("acct-tier").replaceWith(badge);
    var meta = [a.id];
    if (a.segment) meta.push(a.segment);
    if (a.plan) meta.push("plan " + a.plan);
    text("acct-meta", meta.join(" \u00b7 "));
    text("acct-pes", PES.number(a.pes, 0));
    text("acct-delta", PES.missing(a.delta) ? "first scored in this run" :
      PES.signed(a.delta, 1) + " since " + (cfg.previous_as_of || "the previous run"));
    text("acct-churn", PES.percent(a.churn));
    text("acct-expansion", PES.percent(a.expansion));
    text("acct-xscore", PES.missing(a.xscore) ? "" : "expansion score " + PES.number(a.xscore, 0));
    text("acct-arr", PES.money(a.arr));
    text("acct-arr-risk", PES.missing(a.arr_at_risk) ? "" : PES.money(a.arr_at_risk) + " at risk \u00b7 " + PES.money(a.exp_arr) + " expected expansion");

    trendChart(document.getElementById("trend"), a.trend);
    reasonList(document.getElementById("reasons"), a.reasons, "No feature moves this account's score.");
    var groups = components(a.groups);
    var total = groups.reduce(function (s, g) { return s + g[1]; }, 0);
    text("groups-note", "50 (a typical account) " + PES.signed(total, 1) + " points from the components = " +
      PES.number(50 + total, 1) + " before the score is kept within 0\u2013100.");
    barChart(document.getElementById("groups"), groups, "PES points");
    text("changed", a.changed || (cfg.previous_as_of ? "Not scored in the previous run: nothing to compare." : "This is the first run: nothing to compare yet."));
    barChart(document.getElementById("change"), components(a.change), "PES points of change");

    var tbody = document.querySelector("#features tbody");
    tbody.replaceChildren();
    a.features.forEach(function (f) {
      var tr = document.createElement("tr");
      tr.appendChild(PES.el("th", null, featureName(f[0]))).setAttribute("scope", "row");
      tr.appendChild(PES.el("td", "num", f[1]));
      tr.appendChild(PES.el("td", "num", f[2] === null ? "\u2014" : f[2]));
      tr.appendChild(PES.el("td", "num " + (f[3] < 0 ? "down" : "up"), PES.signed(f[3], 1)));
      tbody.appendChild(tr);
    });
    reasonList(document.getElementById("xreasons"), a.xreasons, "No expansion reasons in this run.");
    status.hidden = true;
    article.hidden = false;
    document.documentElement.setAttribute("data-ready-ms", String(Math.round(performance.now())));
    document.documentElement.setAttribute("data-ready", "account");
  }

  function tryShow() {
    var id = wanted;
    if (id === null) return;
    var n = PES.fnv1a(id) % cfg.shards;
    var shard = shards[n];
    if (!shard) return;
    if (Object.prototype.hasOwnProperty.call(shard, id)) show(shard[id]);
    else showMessage("No account with id \u201c" + id + "\u201d in this report.");
  }

  window.pesShard = function (n, accounts) { shards[n] = accounts; tryShow(); };

  function load() {
    wanted = currentId();
    if (!wanted) { showMessage("No account chosen: open one from the portfolio."); return; }
    var n = PES.fnv1a(wanted) % cfg.shards;
    if (shards[n]) { tryShow(); return; }
    showMessage("Loading the account\u2026");
    var script = document.createElement("script");
    script.src = "accounts/s" + pad(n) + ".js";
    script.onerror = function () { showMessage("Could not load the account data file " + script.src + "."); };
    document.body.appendChild(script);
  }
  window.addEventListener("hashchange", load);
  load();
})();
