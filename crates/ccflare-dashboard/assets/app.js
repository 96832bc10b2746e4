// ccflare dashboard: the pages. Reads /api/* and its live feeds (Server-Sent Events); with an
// admin key, logs in once through POST /api/session, after which the browser's HttpOnly
// cookie carries the session (the key is never kept). Pages are chosen by the URL's hash.
"use strict";
(function () {
  const { h, fmtInt, fmtCompact, fmtCost, fmtMs, fmtDuration, fmtPct, fmtTime } = window.ccf;
  const $ = (id) => document.getElementById(id);
  const RANGES = ["1h", "6h", "24h", "7d", "30d"];
  const STRATEGIES = ["session", "round-robin", "least-requests", "priority", "headroom"];

  let cleanup = [];
  let session = { admin_key_required: false, signed_in: true };

  /** A call to the API: JSON in and out; throws an Error with the API's message. */
  async function api(path, opts) {
    const o = Object.assign({ method: "GET", headers: {} }, opts);
    if (o.json !== undefined) {
      o.body = JSON.stringify(o.json);
      o.headers["content-type"] = "application/json";
    }
    const res = await fetch(path, { method: o.method, headers: o.headers, body: o.body, credentials: "same-origin", cache: "no-store" });
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (res.status === 401 && path !== "/api/session") {
      session.signed_in = false;
      showLogin();
    }
    if (!res.ok) {
      const message = (data && data.error && data.error.message) || res.status + " " + res.statusText;
      throw new Error(message);
    }
    return data;
  }

  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  /** A live feed; closed when the page changes. `on` maps event names to handlers. */
  function feed(path, on) {
    const source = new EventSource(path);
    const live = $("live");
    source.onopen = () => live.classList.add("on");
    source.onerror = () => live.classList.remove("on");
    for (const [name, fn] of Object.entries(on)) {
      source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    }
    cleanup.push(() => { source.close(); live.classList.remove("on"); });
    return source;
  }

  function every(ms, fn) {
    const id = setInterval(fn, ms);
    cleanup.push(() => clearInterval(id));
  }

  function card(titleText, ...children) {
    return h("div", { class: "card" }, titleText ? h("h3", {}, titleText) : null, ...children);
  }

  function tile(key, value, id) {
    return h("div", { class: "tile", "data-tile": id || key }, h("div", { class: "k" }, key), h("div", { class: "v" }, value));
  }

  function seg(values, current, onPick, attr) {
    return h("span", { class: "seg", "data-seg": attr || "" }, values.map((v) =>
      h("button", { class: v === current ? "on" : null, "data-value": v, onclick: () => onPick(v) }, v)));
  }

  function meter(fraction, label) {
    const bar = h("span", { class: fraction >= 0.9 ? "hi" : null });
    bar.style.width = Math.max(0, Math.min(1, fraction || 0)) * 100 + "%";
    return h("div", { class: "meter", title: label || fmtPct(fraction) }, bar);
  }

  function stateCell(account) {
    const cls = { active: "ok", paused: "muted", rate_limited: "warn", overloaded: "warn", invalid: "bad" }[account.state] || "";
    return h("span", { class: "pill " + cls }, account.state.replace("_", " "));
  }

  function statusCell(r) {
    return h("span", { class: r.success ? "ok" : "bad" }, r.status);
  }

  // ---- Overview -------------------------------------------------------------------------

  async function overview(root, params) {
    const range = RANGES.includes(params.get("range")) ? params.get("range") : "24h";
    const [a, accounts, errors, config] = await Promise.all([
      api("/api/analytics?range=" + range),
      api("/api/accounts"),
      api("/api/requests?status=error&limit=8"),
      api("/api/config"),
    ]);
    const t = a.totals;
    const strategy = (config.options.find((o) => o.key === "lb_strategy") || {}).value;
    const states = {};
    for (const acc of accounts.accounts) states[acc.state] = (states[acc.state] || 0) + 1;
    const points = window.ccf.fillBuckets(a.series, a.since, a.until, a.bucket_ms)
      .map((p) => Object.assign({}, p, { ok: p.requests - p.errors }));
    const subs = accounts.accounts.filter((x) => x.subscription);
    const mean = (key) => subs.length ? subs.reduce((s, x) => s + (x.subscription[key] || 0), 0) / subs.length : null;
    root.append(
      h("div", { class: "row" }, h("h2", {}, "Overview"), seg(RANGES, range, (r) => go("overview", { range: r }), "range"),
        h("label", {}, " Strategy ", h("select", { id: "strategy", onchange: async (e) => {
          try { await api("/api/config", { method: "PATCH", json: { lb_strategy: e.target.value } }); toast("strategy: " + e.target.value); }
          catch (err) { toast(err.message); }
        } }, STRATEGIES.map((s) => h("option", { value: s, selected: s === strategy }, s))))),
      h("div", { class: "tiles" },
        tile("Requests", fmtInt(t.requests), "requests"),
        tile("Success rate", fmtPct(t.success_rate), "success_rate"),
        tile("Latency p50", fmtMs(a.latency_ms.p50), "p50"),
        tile("Latency p95", fmtMs(a.latency_ms.p95), "p95"),
        tile("Tokens", fmtCompact(t.total_tokens), "tokens"),
        tile("Cost", fmtCost(t.cost_usd), "cost"),
        tile("Output tokens/s", t.output_tokens_per_second ? t.output_tokens_per_second.toFixed(1) : "–", "tps")),
      card("Requests per " + window.ccf.bucketName(a.bucket_ms) + " (times in your time zone)",
        window.ccf.chart(points, [{ key: "ok", label: "succeeded", cls: "b3" }, { key: "errors", label: "failed", cls: "bad" }],
          { kind: "bar", bucketMs: a.bucket_ms, label: "Requests over " + range, fmt: fmtCompact, width: 1200 }),
        h("div", { class: "legend" }, h("span", {}, h("i", { class: "c3" }), "succeeded"), h("span", {}, h("i", { class: "cbad" }), "failed"))),
      h("div", { class: "grid" },
        card("Accounts by state", h("table", { id: "states" }, h("tbody", {},
          Object.entries(states).map(([s, n]) => h("tr", {}, h("td", {}, stateCell({ state: s })), h("td", { class: "num" }, n)))))),
        card("Subscription use (pool mean 5h " + fmtPct(mean("utilization_5h")) + ", 7d " + fmtPct(mean("utilization_7d")) + ")",
          h("div", { class: "bars", id: "utilisation" }, subs.length ? subs.map((x) => h("div", { class: "b" },
            h("span", {}, x.name),
            h("div", {}, h("small", { class: "muted" }, "5h " + fmtPct(x.subscription.utilization_5h)), meter(x.subscription.utilization_5h),
              h("small", { class: "muted" }, "7d " + fmtPct(x.subscription.utilization_7d)), meter(x.subscription.utilization_7d)),
            h("span", { class: "muted" }, "5h resets in " + fmtDuration(resetIn(x.subscription.resets_5h))))) :
            h("p", { class: "muted" }, "No subscription accounts."))),
        card("Recent errors", h("table", { id: "recent-errors" }, h("tbody", {},
          errors.requests.length ? errors.requests.map((r) => h("tr", {},
            h("td", {}, fmtTime(r.started_at)), h("td", {}, statusCell(r)), h("td", {}, r.error_type || ""), h("td", {}, r.account || "–"))) :
            h("tr", {}, h("td", { class: "muted" }, "None in the listing."))))),
      ),
    );
    every(10000, () => route());
  }

  function resetIn(epochS) {
    if (!epochS) return null;
    // Subscription resets are epoch seconds from the upstream's headers.
    const ms = epochS > 1e12 ? epochS : epochS * 1000;
    return (ms - Date.now()) / 1000;
  }

  // ---- Accounts -------------------------------------------------------------------------

  async function accountsPage(root) {
    const data = await api("/api/accounts");
    const table = h("table", { id: "accounts" },
      h("thead", {}, h("tr", {}, ["Name", "Kind", "State", "Returns in", "5h", "7d", "In flight", "Requests", "Priority", ""].map((x) => h("th", {}, x)))),
      h("tbody", {}, data.accounts.map((a) => h("tr", { "data-account": a.name },
        h("td", {}, a.name), h("td", {}, a.kind === "oauth" ? "subscription" : "API key"), h("td", {}, stateCell(a)),
        h("td", { "data-until": a.available_at || null }, a.reset_in_s !== null && a.reset_in_s !== undefined ? fmtDuration(a.reset_in_s) : "–"),
        h("td", {}, a.subscription ? meter(a.subscription.utilization_5h) : "–"),
        h("td", {}, a.subscription ? meter(a.subscription.utilization_7d) : "–"),
        h("td", { class: "num" }, a.in_flight), h("td", { class: "num" }, fmtInt(a.requests)), h("td", { class: "num" }, a.priority),
        h("td", {},
          a.status === "paused"
            ? h("button", { "data-action": "resume", onclick: () => act(a.name, "resume") }, "Resume")
            : h("button", { "data-action": "pause", onclick: () => act(a.name, "pause") }, "Pause"),
          " ", h("button", { "data-action": "edit", onclick: () => edit(a) }, "Edit"))))));
    // The time until a benched account returns counts down in place (only the text changes,
    // so nothing under the pointer is replaced).
    every(1000, () => {
      for (const cell of table.querySelectorAll("td[data-until]")) {
        const left = (Number(cell.dataset.until) - Date.now()) / 1000;
        cell.textContent = left > 0 ? fmtDuration(left) : "now";
      }
    });
    const panel = h("div", { id: "edit-panel" });
    root.append(h("div", { class: "row" }, h("h2", {}, "Accounts")), card(null, h("div", { class: "scroll" }, table)), panel,
      h("div", { class: "grid" }, addKeyForm(), oauthForm()));

    async function act(name, action) {
      try { await api(`/api/accounts/${encodeURIComponent(name)}/${action}`, { method: "POST", json: {} }); toast(`${name}: ${action}d`); route(); }
      catch (err) { toast(err.message); }
    }

    function edit(a) {
      const name = encodeURIComponent(a.name);
      const rename = h("input", { id: "edit-name", value: a.name, "aria-label": "new name" });
      const priority = h("input", { id: "edit-priority", type: "number", value: a.priority, "aria-label": "priority" });
      const confirmName = h("input", { id: "edit-confirm", placeholder: "type " + a.name + " to remove", "aria-label": "confirm removal" });
      const remove = h("button", { id: "edit-remove", class: "danger", disabled: true, onclick: async () => {
        try { await api(`/api/accounts/${name}`, { method: "DELETE" }); toast(a.name + " removed"); route(); } catch (err) { toast(err.message); }
      } }, "Remove");
      confirmName.addEventListener("input", () => { remove.disabled = confirmName.value !== a.name; });
      panel.replaceChildren(card("Edit " + a.name,
        h("div", { class: "row" }, rename, h("button", { id: "edit-rename", onclick: async () => {
          try { await api(`/api/accounts/${name}/rename`, { method: "POST", json: { name: rename.value } }); route(); } catch (err) { toast(err.message); }
        } }, "Rename")),
        h("div", { class: "row" }, priority, h("button", { id: "edit-set-priority", onclick: async () => {
          try { await api(`/api/accounts/${name}/priority`, { method: "POST", json: { priority: Number(priority.value) } }); route(); } catch (err) { toast(err.message); }
        } }, "Set priority")),
        h("div", { class: "row" }, confirmName, remove)));
    }
  }

  function addKeyForm() {
    const name = h("input", { id: "add-name", placeholder: "name", required: true });
    const key = h("input", { id: "add-key", type: "password", placeholder: "sk-ant-api…", required: true, autocomplete: "off" });
    const priority = h("input", { id: "add-priority", type: "number", value: 0, "aria-label": "priority" });
    const form = h("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api("/api/accounts", { method: "POST", json: { name: name.value, api_key: key.value, priority: Number(priority.value) } });
        key.value = "";
        toast(name.value + " added");
        route();
      } catch (err) { toast(err.message); }
    } }, name, key, priority, h("button", { id: "add-submit", type: "submit", class: "primary" }, "Add"));
    return card("Add an API key", form);
  }

  function oauthForm() {
    const name = h("input", { id: "oauth-name", placeholder: "name", required: true });
    const mode = h("select", { id: "oauth-mode" }, h("option", { value: "max" }, "Claude subscription (Max/Pro)"), h("option", { value: "console" }, "Console (API key)"));
    const step2 = h("div", {});
    const form = h("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      try {
        const started = await api("/api/oauth/start", { method: "POST", json: { mode: mode.value, name: name.value } });
        const code = h("input", { id: "oauth-code", placeholder: "paste code#state", required: true, autocomplete: "off" });
        step2.replaceChildren(
          h("p", {}, "1. ", h("a", { id: "oauth-link", href: started.authorize_url, target: "_blank", rel: "noopener noreferrer" }, "Open the authorisation page"), " and sign in."),
          h("form", { class: "inline", onsubmit: async (ev) => {
            ev.preventDefault();
            try {
              await api("/api/oauth/finish", { method: "POST", json: { flow_id: started.flow_id, code: code.value.trim() } });
              toast(name.value + " added");
              route();
            } catch (err) { toast(err.message); }
          } }, "2. ", code, h("button", { id: "oauth-finish", type: "submit", class: "primary" }, "Finish")));
      } catch (err) { toast(err.message); }
    } }, name, mode, h("button", { id: "oauth-start", type: "submit" }, "Start login"));
    return card("Add an OAuth login", form, step2);
  }

  // ---- Requests -------------------------------------------------------------------------

  const FILTERS = ["account", "model", "status", "range", "key"];

  /** The API query of the Requests page's filters (`range` becomes `since`). */
  function requestQuery(params, cursor) {
    const q = new URLSearchParams();
    for (const k of ["account", "model", "status", "key"]) if (params.get(k)) q.set(k, params.get(k));
    const range = window.ccf.rangeMs(params.get("range") || "");
    if (range) q.set("since", String(Date.now() - range));
    if (cursor) q.set("cursor", cursor);
    q.set("limit", "50");
    return q.toString();
  }

  /** Whether a live row belongs on the page under its filters (`keyId`: the id rows record
   * for the chosen client key). */
  function matches(r, params, keyId) {
    if (params.get("account") && r.account !== params.get("account")) return false;
    if (params.get("model") && r.model !== params.get("model")) return false;
    if (params.get("key") && r.client_key !== keyId) return false;
    const s = params.get("status");
    if (s === "error" && r.success) return false;
    if (s === "success" && !r.success) return false;
    if (s && /^\dxx$/.test(s) && window.ccf.statusClass(r.status) !== s) return false;
    if (s && /^\d{3}$/.test(s) && String(r.status) !== s) return false;
    return true;
  }

  function requestRow(r, fresh) {
    return h("tr", { class: "click" + (fresh ? " fresh" : ""), "data-id": r.id, tabindex: 0, onclick: () => drawer(r.id),
      onkeydown: (e) => { if (e.key === "Enter") drawer(r.id); } },
      h("td", {}, fmtTime(r.started_at)), h("td", {}, statusCell(r)), h("td", {}, r.model || "–"), h("td", {}, r.account || "–"),
      h("td", { class: "num" }, fmtMs(r.latency_ms)), h("td", { class: "num" }, fmtInt(r.input_tokens)), h("td", { class: "num" }, fmtInt(r.output_tokens)),
      h("td", { class: "num" }, fmtCost(r.cost_usd)), h("td", { class: "num" }, r.attempts));
  }

  async function requestsPage(root, params) {
    const cursor = params.get("cursor");
    const [page, accounts, analytics] = await Promise.all([
      api("/api/requests?" + requestQuery(params, cursor)),
      api("/api/accounts"),
      api("/api/analytics?range=30d"),
    ]);
    let keys = [];
    try { keys = (await api("/api/keys")).keys || []; } catch (_) { keys = []; }
    const pick = (name, options, label) => h("select", { "data-filter": name, "aria-label": label, onchange: (e) => {
      const next = {};
      for (const k of FILTERS) if (params.get(k)) next[k] = params.get(k);
      if (e.target.value) next[name] = e.target.value; else delete next[name];
      go("requests", next);
    } }, options.map(([v, text]) => h("option", { value: v, selected: (params.get(name) || "") === v }, text)));
    const tbody = h("tbody", {}, page.requests.map((r) => requestRow(r, false)));
    root.append(
      h("div", { class: "row" }, h("h2", {}, "Requests"),
        pick("account", [["", "all accounts"], ...accounts.accounts.map((a) => [a.name, a.name])], "account"),
        pick("model", [["", "all models"], ...analytics.models.map((m) => [m.name, m.name])], "model"),
        pick("status", [["", "any status"], ["success", "successes"], ["error", "errors only"], ["2xx", "2xx"], ["4xx", "4xx"], ["5xx", "5xx"]], "status"),
        pick("range", [["", "any time"], ["1h", "last hour"], ["24h", "last 24h"], ["7d", "last 7 days"], ["30d", "last 30 days"]], "time range"),
        keys.length ? pick("key", [["", "all client keys"], ...keys.map((k) => [k.name, k.name])], "client key") : null),
      card(null, h("div", { class: "scroll" }, h("table", { id: "requests" },
        h("thead", {}, h("tr", {}, ["Started", "Status", "Model", "Account", "Latency", "In", "Out", "Cost", "Tries"].map((x, i) => h("th", { class: i >= 4 ? "num" : null }, x)))),
        tbody))),
      h("div", { class: "row" },
        cursor ? h("button", { id: "newest", onclick: () => go("requests", without(params, "cursor")) }, "← Newest") : null,
        page.next_cursor ? h("button", { id: "older", onclick: () => go("requests", Object.assign(without(params, "cursor"), { cursor: page.next_cursor })) }, "Older →") : null,
        h("span", { class: "muted" }, cursor ? "" : "live: new requests appear at the top")));
    const chosen = keys.find((k) => k.name === params.get("key"));
    const keyId = chosen ? String(chosen.id) : null;
    if (!cursor) {
      feed("/api/requests/stream", {
        request_finished: (r) => {
          if (!matches(r, params, keyId)) return;
          tbody.prepend(requestRow(r, true));
          while (tbody.children.length > 200) tbody.lastChild.remove();
        },
      });
    }
  }

  function without(params, name) {
    const out = {};
    for (const [k, v] of params) if (k !== name) out[k] = v;
    return out;
  }

  async function drawer(id) {
    const old = document.querySelector(".drawer");
    if (old) old.remove();
    let r;
    try { r = await api("/api/requests/" + encodeURIComponent(id)); } catch (err) { toast(err.message); return; }
    const dl = (pairs) => h("dl", {}, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null || v === undefined || v === "" ? "–" : v)]));
    const box = h("aside", { class: "drawer", id: "drawer", role: "dialog", "aria-label": "request " + r.id },
      h("div", { class: "row" }, h("h2", {}, "Request"), h("button", { class: "link", id: "drawer-close", onclick: () => box.remove() }, "Close ✕")),
      dl([["id", r.id], ["upstream request-id", r.upstream_request_id], ["message id", r.message_id], ["started", fmtTime(r.started_at)], ["method", r.method + " " + r.path], ["model", r.model], ["account", r.account],
        ["status", r.status + (r.success ? " (success)" : "")], ["error", r.error_type ? r.error_type + ": " + (r.error_message || "") : null],
        ["session", r.session_key], ["client key", r.client_key], ["streamed", r.streamed ? "yes" : "no"]]),
      h("h3", {}, "Timings"),
      dl([["latency", fmtMs(r.latency_ms)], ["first byte", fmtMs(r.ttfb_ms)], ["output tokens/s", r.output_tokens_per_second ? r.output_tokens_per_second.toFixed(1) : null]]),
      h("h3", {}, "Usage"),
      dl([["input", fmtInt(r.input_tokens)], ["output", fmtInt(r.output_tokens)], ["cache read", fmtInt(r.cache_read_tokens)],
        ["cache write", fmtInt(r.cache_write_tokens) + " (5m " + fmtInt(r.cache_write_5m_tokens) + ", 1h " + fmtInt(r.cache_write_1h_tokens) + ")"],
        ["cost", fmtCost(r.cost_usd) + (r.cost_estimated ? " (estimated)" : "")], ["usage incomplete", r.usage_incomplete ? "yes" : "no"]]),
      h("h3", {}, "Attempts: " + r.attempts),
      h("table", { id: "attempts" }, h("tbody", {},
        (r.attempt_failures || []).map((f, i) => h("tr", {}, h("td", {}, "#" + (i + 1)), h("td", {}, f.account), h("td", {}, f.status), h("td", {}, f.reason))),
        h("tr", {}, h("td", {}, "#" + r.attempts), h("td", {}, r.account || "–"), h("td", {}, r.status), h("td", {}, r.success ? "served" : "final")))),
      h("h3", {}, "Routing"),
      h("p", { id: "route", class: "route" }, r.route || "not recorded (before routing was explained)"));
    document.body.append(box);
  }

  // ---- Analytics ------------------------------------------------------------------------

  async function analyticsPage(root, params) {
    const range = RANGES.includes(params.get("range")) ? params.get("range") : "24h";
    const a = await api("/api/analytics?range=" + range);
    const pts = window.ccf.fillBuckets(a.series, a.since, a.until, a.bucket_ms)
      .map((p) => Object.assign({}, p, { ok: p.requests - p.errors }));
    const t = a.totals;
    const opt = (label, fmt) => ({ kind: "line", bucketMs: a.bucket_ms, label, fmt });
    const groupTable = (id, rows) => h("table", { id },
      h("thead", {}, h("tr", {}, ["Name", "Requests", "Success", "Input", "Output", "Cache read", "Cache write", "Cost", "Avg latency"].map((x, i) => h("th", { class: i ? "num" : null }, x)))),
      h("tbody", {}, rows.map((g) => h("tr", {}, h("td", {}, g.name), h("td", { class: "num" }, fmtInt(g.requests)), h("td", { class: "num" }, fmtPct(g.success_rate)),
        h("td", { class: "num" }, fmtCompact(g.input_tokens)), h("td", { class: "num" }, fmtCompact(g.output_tokens)),
        h("td", { class: "num" }, fmtCompact(g.cache_read_tokens)), h("td", { class: "num" }, fmtCompact(g.cache_write_tokens)),
        h("td", { class: "num" }, fmtCost(g.cost_usd)), h("td", { class: "num" }, fmtMs(g.average_response_time))))));
    const legend = (...items) => h("div", { class: "legend" }, items.map(([c, text]) => h("span", {}, h("i", { class: c }), text)));
    root.append(
      h("div", { class: "row" }, h("h2", {}, "Analytics"), seg(RANGES, range, (r) => go("analytics", { range: r }), "range"),
        h("span", { class: "muted" }, "one point per " + window.ccf.bucketName(a.bucket_ms) + ", times in " + Intl.DateTimeFormat().resolvedOptions().timeZone)),
      h("div", { class: "tiles" }, tile("Requests", fmtInt(t.requests), "requests"), tile("Input", fmtCompact(t.input_tokens), "input"),
        tile("Output", fmtCompact(t.output_tokens), "output"), tile("Cache read", fmtCompact(t.cache_read_tokens), "cache_read"),
        tile("Cache write", fmtCompact(t.cache_write_tokens), "cache_write"),
        // Prompt cache written again because sessions moved to another account (docs/routing.md).
        tile("Re-cached by moves", fmtCompact(t.moved_cache_write_tokens) + " (" + fmtInt(t.session_moves) + " moved)", "moved_cache"),
        tile("Cost", fmtCost(t.cost_usd), "cost"),
        tile("p50 / p95 / p99", fmtMs(a.latency_ms.p50) + " / " + fmtMs(a.latency_ms.p95) + " / " + fmtMs(a.latency_ms.p99), "latency")),
      h("div", { class: "charts" },
        card("Requests", window.ccf.chart(pts, [{ key: "ok", label: "succeeded", cls: "b3" }, { key: "errors", label: "failed", cls: "bad" }],
          { kind: "bar", bucketMs: a.bucket_ms, label: "Requests", fmt: fmtCompact }), legend(["c3", "succeeded"], ["cbad", "failed"])),
        card("Tokens", window.ccf.chart(pts, [{ key: "total_tokens", label: "tokens", cls: "l2" }], opt("Tokens", fmtCompact))),
        card("Cost", window.ccf.chart(pts, [{ key: "cost_usd", label: "cost", cls: "l1" }], opt("Cost", fmtCost))),
        card("Latency", window.ccf.chart(pts, [{ key: "latency_p50_ms", label: "p50", cls: "l3" }, { key: "latency_p95_ms", label: "p95", cls: "l1" }], opt("Latency", fmtMs)),
          legend(["c3", "p50"], ["c1", "p95"]))),
      card("By model", h("div", { class: "scroll" }, groupTable("by-model", a.models))),
      card("By account", h("div", { class: "scroll" }, groupTable("by-account", a.accounts))));
  }

  // ---- Logs -----------------------------------------------------------------------------

  function logsPage(root) {
    let paused = false;
    const box = h("div", { class: "logs", id: "log-lines" });
    const level = h("select", { id: "log-level", "aria-label": "level" }, ["INFO", "WARN", "ERROR"].map((l) => h("option", { value: l }, l + " and above")));
    const search = h("input", { id: "log-search", placeholder: "search", type: "search" });
    const pause = h("button", { id: "log-pause", onclick: () => { paused = !paused; pause.textContent = paused ? "Resume" : "Pause"; pause.classList.toggle("on", paused); } }, "Pause");
    const rank = { ERROR: 3, WARN: 2, INFO: 1, DEBUG: 0, TRACE: 0 };
    const visible = (line) => rank[line.dataset.level] >= rank[level.value] &&
      (!search.value || line.textContent.toLowerCase().includes(search.value.toLowerCase()));
    const refilter = () => { for (const line of box.children) line.hidden = !visible(line); };
    level.addEventListener("change", refilter);
    search.addEventListener("input", refilter);
    root.append(h("div", { class: "row" }, h("h2", {}, "Logs"), level, search, pause), card(null, box));
    feed("/api/logs/stream", {
      log: (l) => {
        if (paused) return;
        const fields = Object.entries(l.fields || {}).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
        const line = h("div", { class: "lv-" + l.level, "data-level": l.level }, `${fmtTime(l.time)} ${l.level.padEnd(5)} ${l.target}: ${l.message} ${fields}`);
        line.hidden = !visible(line);
        box.prepend(line);
        while (box.children.length > 1000) box.lastChild.remove();
      },
      lagged: (l) => box.prepend(h("div", { class: "muted" }, `… ${l.missed} lines missed`)),
    });
  }

  // ---- Settings -------------------------------------------------------------------------

  async function settingsPage(root) {
    const config = await api("/api/config");
    const byKey = Object.fromEntries(config.options.map((o) => [o.key, o]));
    const field = (key, input) => {
      const o = byKey[key] || { value: "", source: "?", pinned: true, help: "" };
      input.disabled = !!o.pinned;
      input.id = "set-" + key;
      const save = h("button", { disabled: !!o.pinned, "data-save": key, onclick: async () => {
        const raw = input.value.trim();
        const value = key === "lb_strategy" ? raw : Number(raw);
        try { await api("/api/config", { method: "PATCH", json: { [key]: value } }); toast(key + " saved"); route(); } catch (err) { toast(err.message); }
      } }, "Save");
      return h("tr", {}, h("td", {}, key), h("td", {}, input), h("td", {}, save),
        h("td", { class: "muted" }, o.pinned ? "pinned by " + o.source : "from " + o.source), h("td", { class: "muted" }, o.help));
    };
    const strategy = h("select", {}, STRATEGIES.map((s) => h("option", { value: s, selected: (byKey.lb_strategy || {}).value === s }, s)));
    root.append(h("div", { class: "row" }, h("h2", {}, "Settings")),
      card("Live settings (PATCH /api/config: applied at once, saved in the database)", h("table", { id: "settings" }, h("tbody", {},
        field("lb_strategy", strategy),
        field("session_timeout", h("input", { type: "number", min: 0, value: (byKey.session_timeout || {}).value })),
        field("retention_days", h("input", { type: "number", min: 0, value: (byKey.retention_days || {}).value }))))),
      card("Every setting", h("div", { class: "scroll" }, h("table", { id: "all-settings" }, h("tbody", {},
        config.options.map((o) => h("tr", {}, h("td", {}, o.key), h("td", {}, o.value), h("td", { class: "muted" }, o.source))))))));
  }

  // ---- Login, routing -------------------------------------------------------------------

  function showLogin() {
    $("page").hidden = true;
    $("login").hidden = false;
    $("logout").hidden = true;
    $("login-key").focus();
  }

  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = $("login-key");
    const res = await fetch("/api/session", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ key: key.value }), credentials: "same-origin" });
    key.value = "";
    if (res.ok) {
      session.signed_in = true;
      $("login-error").textContent = "";
      $("login").hidden = true;
      route();
    } else {
      const data = await res.json().catch(() => null);
      $("login-error").textContent = (data && data.error && data.error.message) || "login failed";
    }
  });

  $("logout").addEventListener("click", async () => {
    await api("/api/session", { method: "DELETE" });
    session.signed_in = false;
    for (const f of cleanup) f();
    cleanup = [];
    showLogin();
  });

  const PAGES = { overview, accounts: accountsPage, requests: requestsPage, analytics: analyticsPage, logs: logsPage, settings: settingsPage };

  /** Opens `page` with `params` (kept in the hash, so a reload or a link keeps them). */
  function go(page, params) {
    const q = new URLSearchParams(params || {}).toString();
    location.hash = page + (q ? "?" + q : "");
  }

  let generation = 0;
  async function route() {
    for (const f of cleanup) f();
    cleanup = [];
    const open = document.querySelector(".drawer");
    if (open) open.remove();
    if (!session.signed_in) return showLogin();
    const [name, query] = (location.hash.slice(1) || "overview").split("?");
    const page = PAGES[name] ? name : "overview";
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("on", a.dataset.page === page);
    $("logout").hidden = !session.admin_key_required;
    const mine = ++generation;
    const root = h("div", { "data-page": page, "data-hash": location.hash });
    try {
      await PAGES[page](root, new URLSearchParams(query || ""));
    } catch (err) {
      if (!session.signed_in) return;
      root.append(h("p", { class: "error" }, err.message));
    }
    // A slower earlier page must not replace a later one.
    if (mine !== generation) return;
    $("page").replaceChildren(root);
    $("page").hidden = false;
    root.dataset.ready = "1";
  }

  window.addEventListener("hashchange", route);
  window.ccf.go = go;
  (async () => {
    try { session = await api("/api/session"); } catch (err) { toast(err.message); }
    route();
  })();
})();
