// slmgate cost dashboard: polls GET /v1/usage (a report grouped by time) and
// GET /v1/usage/recent every two seconds and redraws. No dependencies. The admin key travels
// as the HttpOnly cookie the sign-in form set (or the page is opened from loopback with no
// admin key configured).
"use strict";
(function () {
  const REFRESH_MS = 2000;
  const $ = (id) => document.getElementById(id);
  const svgNS = "http://www.w3.org/2000/svg";

  function usd(x) {
    if (x === null || x === undefined || isNaN(x)) return "–";
    const a = Math.abs(x);
    const digits = a === 0 ? 2 : a < 0.01 ? 6 : a < 1 ? 4 : 2;
    return "$" + x.toFixed(digits);
  }
  function pct(x) {
    return x === null || x === undefined || isNaN(x) ? "–" : (100 * x).toFixed(1) + "%";
  }
  function ms(x) {
    return x === null || x === undefined ? "–" : x < 10 ? x.toFixed(1) : Math.round(x).toString();
  }
  function setTile(id, text, raw) {
    const el = $(id);
    el.textContent = text;
    if (raw !== undefined && raw !== null) el.dataset.value = String(raw);
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(svgNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  // A line chart of several series over shared x buckets.
  function lineChart(container, labels, series) {
    container.textContent = "";
    const W = 600, H = 200, L = 56, R = 8, T = 8, B = 22;
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
    const max = Math.max(1e-12, ...series.flatMap((x) => x.values));
    const n = Math.max(1, labels.length - 1);
    const X = (i) => L + ((W - L - R) * i) / n;
    const Y = (v) => T + (H - T - B) * (1 - v / max);
    for (let g = 0; g <= 4; g++) {
      const v = (max * g) / 4;
      s.appendChild(svg("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#26313c" }));
      const t = svg("text", { x: L - 4, y: Y(v) + 4, "text-anchor": "end", fill: "#8a97a5", "font-size": 10 });
      t.textContent = usd(v);
      s.appendChild(t);
    }
    const step = Math.max(1, Math.ceil(labels.length / 6));
    labels.forEach((lab, i) => {
      if (i % step) return;
      const t = svg("text", { x: X(i), y: H - 6, "text-anchor": "middle", fill: "#8a97a5", "font-size": 10 });
      t.textContent = lab;
      s.appendChild(t);
    });
    for (const ser of series) {
      if (!ser.values.length) continue;
      const d = ser.values.map((v, i) => `${i ? "L" : "M"}${X(i).toFixed(1)},${Y(v).toFixed(1)}`).join(" ");
      s.appendChild(svg("path", { d, fill: "none", stroke: ser.color, "stroke-width": 2 }));
      if (ser.values.length === 1) s.appendChild(svg("circle", { cx: X(0), cy: Y(ser.values[0]), r: 3, fill: ser.color }));
    }
    container.appendChild(s);
  }

  // Stacked bars (local / remote / cache) per bucket.
  function stackChart(container, labels, stacks) {
    container.textContent = "";
    const W = 600, H = 200, L = 40, R = 8, T = 8, B = 22;
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
    const totals = labels.map((_, i) => stacks.reduce((a, st) => a + st.values[i], 0));
    const max = Math.max(1, ...totals);
    const bw = (W - L - R) / Math.max(1, labels.length);
    const Y = (v) => (H - T - B) * (v / max);
    for (let g = 0; g <= 4; g++) {
      const v = (max * g) / 4;
      const y = H - B - Y(v);
      s.appendChild(svg("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#26313c" }));
      const t = svg("text", { x: L - 4, y: y + 4, "text-anchor": "end", fill: "#8a97a5", "font-size": 10 });
      t.textContent = Math.round(v);
      s.appendChild(t);
    }
    labels.forEach((lab, i) => {
      let y = H - B;
      for (const st of stacks) {
        const h = Y(st.values[i]);
        if (h > 0) s.appendChild(svg("rect", { x: L + i * bw + 1, y: y - h, width: Math.max(1, bw - 2), height: h, fill: st.color }));
        y -= h;
      }
    });
    const step = Math.max(1, Math.ceil(labels.length / 6));
    labels.forEach((lab, i) => {
      if (i % step) return;
      const t = svg("text", { x: L + i * bw + bw / 2, y: H - 6, "text-anchor": "middle", fill: "#8a97a5", "font-size": 10 });
      t.textContent = lab;
      s.appendChild(t);
    });
    container.appendChild(s);
  }

  function bucketLabel(iso, bucket) {
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const p = (n) => String(n).padStart(2, "0");
    if (bucket === "day") return `${d.getUTCMonth() + 1}/${d.getUTCDate()}`;
    if (bucket === "hour") return `${p(d.getUTCHours())}:00`;
    return `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`;
  }

  // Requests in a bucket that neither the embedded model nor the cache answered.
  const remoteOf = (g) => Math.max(0, g.requests - g.local_requests - g.cache_hits);

  function render(report, recent, bucket) {
    const t = report.totals;
    setTile("t-requests", String(t.requests), t.requests);
    setTile("t-cost", usd(t.cost_usd), t.cost_usd);
    setTile("t-counterfactual", usd(t.counterfactual_usd), t.counterfactual_usd);
    setTile("t-savings", usd(t.savings_usd), t.savings_usd);
    setTile("t-savings-pct", t.counterfactual_usd > 0 ? pct(t.savings_usd / t.counterfactual_usd) + " of all-remote" : "", t.counterfactual_usd > 0 ? t.savings_usd / t.counterfactual_usd : null);
    setTile("t-local", pct(t.local_share), t.local_share);
    setTile("t-cache", pct(t.cache_hit_rate), t.cache_hit_rate);
    const l = report.latency_ms || {};
    setTile("t-latency", `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)} ms`, l.p50);
    setTile("t-errors", String(t.errors), t.errors);

    const series = report.groups || [];
    const labels = series.map((g) => bucketLabel(g.key, bucket));
    lineChart($("chart-cost"), labels, [
      { color: "#f5a623", values: series.map((g) => g.counterfactual_usd) },
      { color: "#4fb3ff", values: series.map((g) => g.cost_usd) },
    ]);
    stackChart($("chart-share"), labels, [
      { color: "#3fcf8e", values: series.map((g) => g.local_requests) },
      { color: "#f5a623", values: series.map(remoteOf) },
      { color: "#b38cff", values: series.map((g) => g.cache_hits) },
    ]);

    const cats = $("categories");
    cats.textContent = "";
    const categories = report.categories || [];
    const cmax = Math.max(1, ...categories.map((c) => c.requests));
    for (const c of categories) {
      const name = c.key === null ? "(not routed)" : c.key;
      const row = el("div", { class: "bar", "data-category": name, "data-requests": c.requests });
      row.appendChild(el("span", { class: "name", title: name }, name));
      const fill = el("span", { class: "fill" });
      fill.style.width = `${(60 * c.requests) / cmax}%`;
      row.appendChild(fill);
      row.appendChild(el("span", { class: "n" }, String(c.requests)));
      cats.appendChild(row);
    }

    const tk = $("top-keys").tBodies[0];
    tk.textContent = "";
    for (const k of report.top_keys || []) {
      const name = k.key === null ? "(no key)" : k.key;
      const tr = el("tr", { "data-key": name, "data-cost": k.cost_usd });
      tr.appendChild(el("td", {}, name));
      tr.appendChild(el("td", { class: "num" }, String(k.requests)));
      tr.appendChild(el("td", { class: "num" }, usd(k.cost_usd)));
      tr.appendChild(el("td", { class: "num" }, usd(k.savings_usd)));
      tk.appendChild(tr);
    }

    const rc = $("recent").tBodies[0];
    rc.textContent = "";
    for (const r of recent) {
      const tr = el("tr", { "data-request-id": r.request_id || "" });
      const cls = r.status >= 400 ? "t-err" : r.local ? "t-local" : "t-remote";
      const cells = [
        [new Date(r.ts_ms).toLocaleTimeString(), ""],
        [r.key_name || "–", ""],
        [r.requested_model || "", ""],
        [(r.target || "") + (r.backend ? ` (${r.backend})` : ""), cls],
        [r.strategy || "", ""],
        [r.category || "", ""],
        [r.score === null || r.score === undefined ? "" : Number(r.score).toFixed(3), "num"],
        [r.reason || "", "reason"],
        [String(r.status), "num " + (r.status >= 400 ? "t-err" : "")],
        [ms(r.latency_ms), "num"],
        [usd(r.cost_usd), "num"],
        [r.cache || "", ""],
      ];
      for (const [text, c] of cells) tr.appendChild(el("td", c ? { class: c } : {}, text));
      rc.appendChild(tr);
    }
    $("recent-note").textContent = `${recent.length} most recent`;
  }

  // The window selector: how far back, and the chart's bucket.
  const WINDOWS = { "1h": "minute", "24h": "hour", "7d": "day", "30d": "day" };

  let timer = null;
  async function refresh() {
    const w = $("window").value;
    const bucket = WINDOWS[w] || "hour";
    const get = async (url) => {
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) throw new Error(`${url.split("?")[0]}: HTTP ${resp.status}`);
      return resp.json();
    };
    try {
      const [report, recent] = await Promise.all([
        get(`/v1/usage?from=${encodeURIComponent(w)}&group_by=${bucket}`),
        get("/v1/usage/recent?limit=50"),
      ]);
      render(report, recent.data || [], bucket);
      document.body.dataset.window = w;
      const st = $("status");
      st.className = "status";
      st.textContent = `updated ${new Date().toLocaleTimeString()}`;
      st.dataset.updates = String(Number(st.dataset.updates || 0) + 1);
    } catch (e) {
      const st = $("status");
      st.className = "status err";
      st.textContent = `update failed: ${e.message}`;
    }
  }
  $("window").addEventListener("change", refresh);
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
  window.addEventListener("beforeunload", () => clearInterval(timer));
})();
