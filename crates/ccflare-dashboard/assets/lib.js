// ccflare dashboard: pure helpers (formatting, bucketing, chart scales) and small DOM and SVG
// builders. No dependencies. Everything hangs off `window.ccf` so the browser test can call
// the pure functions with `execute_script` and compare their results.
"use strict";
(function () {
  const ccf = (window.ccf = window.ccf || {});

  /** 1234567 → "1,234,567" (the grouping is ours, not the locale's: tests compare text). */
  ccf.fmtInt = function (n) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    const sign = n < 0 ? "-" : "";
    const digits = String(Math.round(Math.abs(n)));
    return sign + digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  };

  /** 1234 → "1.2k", 2500000 → "2.5M"; small numbers whole. */
  ccf.fmtCompact = function (n) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    const a = Math.abs(n);
    const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [size, unit] of units) {
      if (a >= size) {
        const v = n / size;
        return (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, "")) + unit;
      }
    }
    return String(Math.round(n));
  };

  /** US dollars: cents under a dollar are kept to four places. */
  ccf.fmtCost = function (usd) {
    if (usd === null || usd === undefined || !isFinite(usd)) return "–";
    if (usd === 0) return "$0.00";
    if (Math.abs(usd) < 1) return "$" + usd.toFixed(4);
    return "$" + ccf.fmtInt(Math.trunc(usd)) + "." + Math.abs(usd).toFixed(2).split(".")[1];
  };

  /** Milliseconds: "850 ms", "1.25 s", "2m 05s". */
  ccf.fmtMs = function (ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(2).replace(/0$/, "") + " s";
    return ccf.fmtDuration(Math.round(ms / 1000));
  };

  /** Seconds as the two largest units: "45s", "3m 07s", "2h 05m", "3d 4h". */
  ccf.fmtDuration = function (s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    const pad = (n) => String(n).padStart(2, "0");
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  };

  /** A fraction 0..1 as a percentage: 0.9876 → "98.8%". */
  ccf.fmtPct = function (x) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    const p = x * 100;
    return (p === 100 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + "%";
  };

  /** The status class of an HTTP status: 429 → "4xx". */
  ccf.statusClass = function (status) {
    return Math.floor(status / 100) + "xx";
  };

  /** A bucket's length in words: "hour", "5 minutes", "day", "6 hours". */
  ccf.bucketName = function (ms) {
    const units = [[86400000, "day"], [3600000, "hour"], [60000, "minute"], [1000, "second"]];
    for (const [size, unit] of units) {
      if (ms >= size && ms % size === 0) {
        const n = ms / size;
        return n === 1 ? unit : n + " " + unit + "s";
      }
    }
    return ms + " ms";
  };

  /** A range name ("1h", "7d") in milliseconds. */
  ccf.rangeMs = function (range) {
    const m = /^(\d+)([hd])$/.exec(range);
    if (!m) return null;
    return Number(m[1]) * (m[2] === "h" ? 3600000 : 86400000);
  };

  /**
   * The label of a bucket that starts at `ms` (UTC epoch milliseconds) and is `bucketMs`
   * long, in `timeZone` (the viewer's when not given): hours and minutes for buckets shorter
   * than a day, month and day otherwise.
   */
  ccf.bucketLabel = function (ms, bucketMs, timeZone) {
    const opts = bucketMs >= 86400000
      ? { month: "short", day: "numeric" }
      : { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    if (timeZone) opts.timeZone = timeZone;
    return new Intl.DateTimeFormat("en-GB", opts).format(new Date(ms));
  };

  /** A full local date and time for `ms` (tooltips, the drawer). */
  ccf.fmtTime = function (ms, timeZone) {
    if (ms === null || ms === undefined) return "–";
    const opts = {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    };
    if (timeZone) opts.timeZone = timeZone;
    return new Intl.DateTimeFormat("en-CA", opts).format(new Date(ms)).replace(",", "");
  };

  /**
   * Points placed on a regular grid of `bucketMs` from `since` to `until`: the server leaves
   * out empty buckets, a chart must not join across them. Missing buckets get zeros.
   */
  ccf.fillBuckets = function (points, since, until, bucketMs) {
    const byTime = new Map(points.map((p) => [p.time, p]));
    const out = [];
    const start = Math.floor(since / bucketMs) * bucketMs;
    for (let t = start; t < until && out.length < 2000; t += bucketMs) {
      out.push(byTime.get(t) || { time: t, requests: 0, errors: 0, total_tokens: 0, cost_usd: 0 });
    }
    return out;
  };

  /** The smallest 1, 2 or 5 × 10^n at or above `v` (a chart's top), at least 1. */
  ccf.niceMax = function (v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  };

  /** An element: `h("td", {class: "num"}, "12")`. Attributes through setAttribute only. */
  ccf.h = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  };

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) if (c) node.append(c);
    return node;
  }
  function title(text) {
    const t = document.createElementNS(SVG, "title");
    t.textContent = text;
    return t;
  }

  /**
   * A chart of `points` (each with `time`): `series` is a list of {key, label, cls}; `kind`
   * "line" or "bar" (bars stack). Each bucket has a `<title>` with its values, which browsers
   * show as a tooltip and screen readers read.
   */
  ccf.chart = function (points, series, opts) {
    const o = Object.assign({ kind: "line", bucketMs: 3600000, fmt: ccf.fmtCompact, label: "", width: 600 }, opts);
    const W = o.width, H = 200, L = 56, R = 8, T = 8, B = 22;
    const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": o.label });
    svg.append(title(o.label));
    const n = points.length;
    const total = (p) => (o.kind === "bar" ? series.reduce((a, x) => a + (p[x.key] || 0), 0)
      : Math.max(...series.map((x) => p[x.key] || 0)));
    const top = ccf.niceMax(Math.max(0, ...points.map(total)));
    const x = (i) => L + ((W - L - R) * (i + 0.5)) / Math.max(n, 1);
    const y = (v) => T + (H - T - B) * (1 - v / top);
    for (const v of [0, top / 2, top]) {
      svg.append(s("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      const t = s("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" });
      t.textContent = o.fmt(v);
      svg.append(t);
    }
    const every = Math.max(1, Math.ceil(n / 6));
    points.forEach((p, i) => {
      if (i % every) return;
      const t = s("text", { x: x(i), y: H - 6, "text-anchor": "middle" });
      t.textContent = ccf.bucketLabel(p.time, o.bucketMs);
      svg.append(t);
    });
    const bw = Math.max(1, ((W - L - R) / Math.max(n, 1)) * 0.8);
    if (o.kind === "bar") {
      points.forEach((p, i) => {
        let base = 0;
        const g = s("g", {});
        g.append(title(ccf.fmtTime(p.time) + "\n" + series.map((x) => `${x.label}: ${o.fmt(p[x.key] || 0)}`).join("\n")));
        for (const ser of series) {
          const v = p[ser.key] || 0;
          if (v > 0) {
            g.append(s("rect", { class: ser.cls, x: x(i) - bw / 2, y: y(base + v), width: bw, height: Math.max(0.5, y(base) - y(base + v)) }));
          }
          base += v;
        }
        svg.append(g);
      });
    } else {
      for (const ser of series) {
        const d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[ser.key] || 0).toFixed(1)}`).join("");
        if (n) svg.append(s("path", { class: ser.cls, d }));
      }
      points.forEach((p, i) => {
        const hit = s("rect", { x: x(i) - bw / 2, y: T, width: bw, height: H - T - B, fill: "transparent" });
        hit.append(title(ccf.fmtTime(p.time) + "\n" + series.map((x) => `${x.label}: ${o.fmt(p[x.key] || 0)}`).join("\n")));
        svg.append(hit);
      });
    }
    return svg;
  };
})();
