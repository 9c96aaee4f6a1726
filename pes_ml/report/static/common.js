/* pes_ml report: helpers shared by the portfolio and account pages.
 * Data reaches the page only through textContent and setAttribute: never innerHTML. */
"use strict";
var PES = (function () {
  var SVG_NS = "http://www.w3.org/2000/svg";
  var MINUS = "\u2212";
  var TIERS = { at_risk: "At risk", watch: "Watch", healthy: "Healthy", expand: "Expand" };

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function missing(v) { return v === null || v === undefined || (typeof v === "number" && !isFinite(v)); }
  function number(v, digits) {
    if (missing(v)) return "\u2014";
    return v.toLocaleString("en-US", { minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0 });
  }
  function signed(v, digits) {
    if (missing(v)) return "\u2014";
    var text = number(Math.abs(v), digits === undefined ? 0 : digits);
    if (/^[0.,]+$/.test(text)) return "\u00b1" + text;
    return (v > 0 ? "+" : MINUS) + text;
  }
  function percent(v) {
    if (missing(v)) return "\u2014";
    var p = 100 * v;
    return (p < 10 ? p.toFixed(1) : p.toFixed(0)) + "%";
  }
  function money(v) {
    if (missing(v)) return "\u2014";
    var a = Math.abs(v), sign = v < 0 ? "-" : "";
    if (a >= 1e9) return sign + "$" + (a / 1e9).toFixed(1) + "B";
    if (a >= 1e6) return sign + "$" + (a / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return sign + "$" + (a / 1e3).toFixed(1) + "k";
    return sign + "$" + number(a, 0);
  }
  function tierLabel(t) { return Object.prototype.hasOwnProperty.call(TIERS, t) ? TIERS[t] : String(t); }
  function tierBadge(t) {
    var badge = el("span", "tier", tierLabel(t));
    if (Object.prototype.hasOwnProperty.call(TIERS, t)) badge.classList.add("tier-" + t);
    return badge;
  }
  function accountHref(id) { return "account.html#" + encodeURIComponent(id); }
  function capitalize(s) { s = String(s); return s.charAt(0).toUpperCase() + s.slice(1); }
  /* FNV-1a (32 bit) of the UTF-8 bytes: the same as pes_ml.report.build.shard_of. */
  function fnv1a(text) {
    var bytes = new TextEncoder().encode(text), h = 0x811c9dc5;
    for (var i = 0; i < bytes.length; i++) { h ^= bytes[i]; h = Math.imul(h, 0x01000193) >>> 0; }
    return h >>> 0;
  }
  return {
    el: el, svg: svg, number: number, signed: signed, percent: percent, money: money,
    tierLabel: tierLabel, tierBadge: tierBadge, accountHref: accountHref, capitalize: capitalize,
    fnv1a: fnv1a, missing: missing
  };
})();
