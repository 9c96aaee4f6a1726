/* pes_ml report: the portfolio table. The data is a JSON array per account; only one page of
 * rows is ever in the DOM. Sort, filters, search and page live in location.hash, so the
 * browser's Back button returns to the same view. */
(function () {
  var source = JSON.parse(document.getElementById("portfolio-data").textContent);
  var rows = source.rows, C = {};
  source.columns.forEach(function (name, i) { C[name] = i; });
  var NUMERIC = { pes: 1, delta: 1, churn: 1, expansion: 1, arr: 1, arr_at_risk: 1, exp_arr: 1 };
  var PAGE_SIZE = 50;
  var collator = new Intl.Collator("en", { sensitivity: "base", numeric: true });
  var state = { sort: "pes", dir: 1, tier: "", segment: "", q: "", page: 0 };
  var view = null, haystack = null;

  var tbody = document.querySelector("#portfolio tbody");
  var search = document.getElementById("search");
  var tierFilter = document.getElementById("tier-filter");
  var segmentFilter = document.getElementById("segment-filter");
  var count = document.getElementById("row-count");
  var pageInfo = document.getElementById("page-info");
  var prev = document.getElementById("prev-page");
  var next = document.getElementById("next-page");
  var headers = Array.prototype.slice.call(document.querySelectorAll("#portfolio th[data-key]"));

  function readHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    var sort = params.get("sort");
    if (sort && Object.prototype.hasOwnProperty.call(C, sort)) state.sort = sort;
    state.dir = params.get("dir") === "desc" ? -1 : 1;
    state.tier = params.get("tier") || "";
    state.segment = params.get("segment") || "";
    state.q = params.get("q") || "";
    state.page = Math.max(0, (parseInt(params.get("page"), 10) || 1) - 1);
  }
  function writeHash() {
    var params = new URLSearchParams();
    params.set("sort", state.sort);
    params.set("dir", state.dir < 0 ? "desc" : "asc");
    if (state.tier) params.set("tier", state.tier);
    if (state.segment) params.set("segment", state.segment);
    if (state.q) params.set("q", state.q);
    if (state.page) params.set("page", String(state.page + 1));
    history.replaceState(null, "", "#" + params.toString());
  }

  function compute() {
    var tier = state.tier, segment = state.segment, q = state.q.trim().toLowerCase();
    if (q && !haystack) {
      haystack = rows.map(function (r) { return ((r[C.name] || "") + " " + r[C.id]).toLowerCase(); });
    }
    var out = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (tier && r[C.tier] !== tier) continue;
      if (segment && r[C.segment] !== segment) continue;
      if (q && haystack[i].indexOf(q) < 0) continue;
      out.push(i);
    }
    var k = C[state.sort], dir = state.dir, numeric = NUMERIC[state.sort] === 1, idCol = C.id;
    out.sort(function (a, b) {
      var x = rows[a][k], y = rows[b][k];
      if (state.sort === "name") { x = x || rows[a][idCol]; y = y || rows[b][idCol]; }
      var xm = x === null || x === undefined, ym = y === null || y === undefined;
      if (xm || ym) return xm === ym ? a - b : (xm ? 1 : -1); /* missing values last */
      var c = numeric ? x - y : collator.compare(String(x), String(y));
      return c !== 0 ? dir * c : a - b;
    });
    view = out;
  }

  function cell(tr, text, className) {
    var td = PES.el("td", className, text);
    tr.appendChild(td);
    return td;
  }
  function render() {
    var pages = Math.max(1, Math.ceil(view.length / PAGE_SIZE));
    if (state.page >= pages) state.page = pages - 1;
    var start = state.page * PAGE_SIZE, end = Math.min(view.length, start + PAGE_SIZE);
    var fragment = document.createDocumentFragment();
    for (var i = start; i < end; i++) {
      var r = rows[view[i]];
      var tr = document.createElement("tr");
      tr.setAttribute("data-id", r[C.id]);
      var first = cell(tr, null, "account-cell");
      var link = PES.el("a", "account", r[C.name] || r[C.id]);
      link.setAttribute("href", PES.accountHref(r[C.id]));
      first.appendChild(link);
      first.appendChild(PES.el("span", "muted id", r[C.id]));
      cell(tr, r[C.segment] || "\u2014");
      cell(tr, null).appendChild(PES.tierBadge(r[C.tier]));
      cell(tr, PES.number(r[C.pes], 0), "num pes");
      var d = cell(tr, PES.signed(r[C.delta], 0), "num");
      if (r[C.delta] <= -5) d.classList.add("down"); else if (r[C.delta] >= 5) d.classList.add("up");
      cell(tr, PES.percent(r[C.churn]), "num");
      cell(tr, PES.percent(r[C.expansion]), "num");
      cell(tr, PES.money(r[C.arr]), "num");
      cell(tr, PES.money(r[C.arr_at_risk]), "num");
      cell(tr, PES.money(r[C.exp_arr]), "num");
      cell(tr, r[C.reason] || "\u2014", "reason");
      fragment.appendChild(tr);
    }
    tbody.replaceChildren(fragment);
    count.textContent = view.length === 0 ? "No account matches." :
      "Showing " + PES.number(start + 1) + "\u2013" + PES.number(end) + " of " + PES.number(view.length) +
      (view.length !== rows.length ? " matching accounts (" + PES.number(rows.length) + " in all)" : " accounts");
    pageInfo.textContent = "Page " + PES.number(state.page + 1) + " of " + PES.number(pages);
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    headers.forEach(function (th) {
      var key = th.getAttribute("data-key");
      th.setAttribute("aria-sort", key === state.sort ? (state.dir > 0 ? "ascending" : "descending") : "none");
    });
    writeHash();
  }
  function refresh() { compute(); render(); }

  headers.forEach(function (th) {
    th.querySelector("button").addEventListener("click", function () {
      var key = th.getAttribute("data-key");
      if (state.sort === key) state.dir = -state.dir;
      else { state.sort = key; state.dir = NUMERIC[key] && key !== "pes" ? -1 : 1; }
      state.page = 0;
      refresh();
    });
  });
  tierFilter.addEventListener("change", function () { state.tier = tierFilter.value; state.page = 0; refresh(); });
  segmentFilter.addEventListener("change", function () { state.segment = segmentFilter.value; state.page = 0; refresh(); });
  var timer = null;
  search.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { state.q = search.value; state.page = 0; refresh(); }, 120);
  });
  prev.addEventListener("click", function () { state.page = Math.max(0, state.page - 1); render(); });
  next.addEventListener("click", function () { state.page += 1; render(); });

  readHash();
  search.value = state.q;
  tierFilter.value = state.tier;
  segmentFilter.value = state.segment;
  if (tierFilter.value !== state.tier) state.tier = "";
  if (segmentFilter.value !== state.segment) state.segment = "";
  refresh();
  document.documentElement.setAttribute("data-ready-ms", String(Math.round(performance.now())));
  document.documentElement.setAttribute("data-ready", "portfolio");
})();
