// Portico's status page: polls /status and /metrics every second, derives rates and latency
// quantiles from the counters between polls, and sends changes to /backends. No library: the
// page must work from the binary alone, offline, under a strict Content-Security-Policy.
"use strict";

(function () {
  const POLL_MS = 1000;
  /** While the tab is hidden the page polls less often; it catches up when shown again. */
  const HIDDEN_POLL_MS = 10000;
  const REQUEST_TIMEOUT_MS = 3000;
  /** Samples kept per backend for the sparkline (one per poll: about a minute). */
  const SPARK_POINTS = 60;
  /** Polls over which latency quantiles are computed (a sliding window of ~10 s). */
  const LATENCY_WINDOW = 10;
  const MAX_WEIGHT = 256;
  const REMOVE_CONFIRM_MS = 4000;

  /** The admin token: in this closure only, never in storage; a reload forgets it. */
  let token = null;
  let timer = null;
  let polling = false;
  let tokenNeeded = false;
  /** url -> {row, cells, samples: [{t, requests, errors}], spark: [], buckets: [[le...]]} */
  const rows = new Map();

  const $ = (id) => document.getElementById(id);

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (token !== null) h.Authorization = "Bearer " + token;
    return h;
  }

  async function request(method, path, body) {
    const ctrl = new AbortController();
    const t = setTimeout(() => ctrl.abort(), REQUEST_TIMEOUT_MS);
    const init = { method, headers: headers(), cache: "no-store", signal: ctrl.signal };
    if (body !== undefined) {
      // The admin API only takes JSON writes (and checks Content-Type); same-origin fetches
      // carry the page's own Origin.
      init.headers = headers({ "Content-Type": "application/json" });
      init.body = JSON.stringify(body);
    }
    try {
      return await fetch(path, init);
    } finally {
      clearTimeout(t);
    }
  }

  async function errorText(resp) {
    try {
      const v = await resp.json();
      if (v && typeof v.error === "string") return v.error;
    } catch (_) { /* not JSON */ }
    return "HTTP " + resp.status;
  }

  // ---- token ---------------------------------------------------------------------------

  function askToken(message) {
    tokenNeeded = true;
    const form = $("token-form");
    $("token-error").textContent = message || "";
    if (form.hidden) {
      form.hidden = false;
      $("token").focus();
    }
    setConn("admin token needed", true);
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("token").value.trim();
    if (v === "") return;
    token = v;
    $("token").value = "";
    $("token-form").hidden = true;
    tokenNeeded = false;
    pollNow();
  });

  // ---- polling -------------------------------------------------------------------------

  function setConn(text, bad) {
    const c = $("conn");
    c.textContent = text;
    c.classList.toggle("bad", !!bad);
  }

  function pollNow() {
    clearTimeout(timer);
    poll();
  }

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const [st, mt] = await Promise.allSettled([
        request("GET", "/status"),
        request("GET", "/metrics"),
      ]);
      if (st.status !== "fulfilled") {
        setConn("gateway unreachable, retrying…", true);
        return;
      }
      const resp = st.value;
      if (resp.status === 401) {
        askToken(token === null ? "" : "That token was refused; try again.");
        token = null;
        return;
      }
      if (!resp.ok) {
        setConn("/status answered " + (await errorText(resp)), true);
        return;
      }
      const status = await resp.json();
      let metrics = null;
      if (mt.status === "fulfilled" && mt.value.ok) {
        metrics = parseMetrics(await mt.value.text());
      }
      render(status, metrics, performance.now());
      setConn("updated " + new Date().toLocaleTimeString(), false);
    } catch (e) {
      setConn("update failed (" + e.message + "), retrying…", true);
    } finally {
      polling = false;
      if (!tokenNeeded) timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !tokenNeeded) pollNow();
  });

  // ---- Prometheus text -----------------------------------------------------------------

  /** Buckets of `portico_backend_request_duration_seconds` by backend: [[le, count], ...]. */
  function parseMetrics(text) {
    const byBackend = new Map();
    const prefix = "portico_backend_request_duration_seconds_bucket{";
    for (const line of text.split("\n")) {
      if (!line.startsWith(prefix)) continue;
      const close = line.lastIndexOf("}");
      if (close < 0) continue;
      const labels = parseLabels(line.slice(prefix.length, close));
      const value = Number(line.slice(close + 1).trim().split(/\s+/)[0]);
      const backend = labels.backend;
      if (backend === undefined || labels.le === undefined || !isFinite(value)) continue;
      const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
      if (!byBackend.has(backend)) byBackend.set(backend, []);
      byBackend.get(backend).push([le, value]);
    }
    for (const list of byBackend.values()) list.sort((a, b) => a[0] - b[0]);
    return byBackend;
  }

  /** `a="x",b="y\"z"` -> {a: "x", b: "y\"z"} (the exposition format's escapes). */
  function parseLabels(s) {
    const out = {};
    let i = 0;
    while (i < s.length) {
      const eq = s.indexOf("=", i);
      if (eq < 0 || s[eq + 1] !== '"') break;
      const name = s.slice(i, eq).trim().replace(/^,/, "").trim();
      let j = eq + 2;
      let v = "";
      while (j < s.length && s[j] !== '"') {
        if (s[j] === "\\" && j + 1 < s.length) {
          const n = s[j + 1];
          v += n === "n" ? "\n" : n;
          j += 2;
        } else {
          v += s[j];
          j += 1;
        }
      }
      out[name] = v;
      i = j + 1;
      if (s[i] === ",") i += 1;
    }
    return out;
  }

  /** The q-quantile of the requests between two cumulative bucket lists, interpolated
   *  linearly inside the bucket as Prometheus' histogram_quantile does; null if none. */
  function quantile(q, older, newer) {
    if (!newer) return null;
    const counts = newer.map(([le, c], i) => {
      const prev = older && older[i] && older[i][0] === le ? older[i][1] : 0;
      return [le, Math.max(0, c - prev)];
    });
    const total = counts.length ? counts[counts.length - 1][1] : 0;
    if (total <= 0) return null;
    const rank = q * total;
    let lowerBound = 0;
    let lowerCount = 0;
    for (const [le, c] of counts) {
      if (c >= rank) {
        if (le === Infinity) return lowerBound;
        if (c === lowerCount) return le;
        return lowerBound + (le - lowerBound) * ((rank - lowerCount) / (c - lowerCount));
      }
      lowerBound = le;
      lowerCount = c;
    }
    return lowerBound;
  }

  // ---- formatting ----------------------------------------------------------------------

  function fmtRate(x) {
    if (x === null || !isFinite(x)) return "-";
    if (x >= 1000) return Math.round(x).toLocaleString("en-US");
    if (x >= 10) return x.toFixed(0);
    return x.toFixed(1);
  }

  function fmtLatency(s) {
    if (s === null || !isFinite(s)) return "-";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
    return s.toFixed(2) + " s";
  }

  function fmtAgo(unix) {
    if (!unix) return "";
    let s = Math.max(0, Math.round(Date.now() / 1000 - unix));
    if (s < 60) return s + "s ago";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s ago";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "h " + (m % 60) + "m ago";
    return Math.floor(h / 24) + "d ago";
  }

  // ---- rendering -----------------------------------------------------------------------

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const SVG = "http://www.w3.org/2000/svg";

  function makeRow(url) {
    const tr = el("tr", { "data-url": url });
    const cell = (label, cls) => {
      const td = el("td", { "data-label": label, class: cls || "" });
      tr.appendChild(td);
      return td;
    };
    const c = {};
    c.url = cell("Backend", "url");
    c.url.textContent = url;
    c.url.title = url;
    c.health = cell("Health", "health-cell");
    c.badge = el("span", { class: "badge health" });
    c.drainBadge = el("span", { class: "badge drain" }, "DRAINING");
    c.drainBadge.hidden = true;
    c.since = el("span", { class: "since" });
    // One child per cell: on a phone each cell is a two-column grid (label, value).
    const hwrap = el("div");
    hwrap.append(c.badge, " ", c.drainBadge, c.since);
    c.health.appendChild(hwrap);
    c.inflight = cell("In flight", "num inflight");
    c.rps = cell("Req/s", "num rps");
    c.eps = cell("Err/s", "num eps");
    c.p50 = cell("p50", "num p50");
    c.p99 = cell("p99", "num p99");

    const w = cell("Weight", "weight-cell");
    const wrap = el("div", { class: "weight" });
    c.weightInput = el("input", {
      type: "number", min: "1", max: String(MAX_WEIGHT), inputmode: "numeric",
      "aria-label": "Weight of " + url,
    });
    c.weightInput.dataset.dirty = "";
    c.weightInput.addEventListener("input", () => { c.weightInput.dataset.dirty = "1"; });
    c.weightInput.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") { ev.preventDefault(); setWeight(url, c); }
    });
    c.weightButton = el("button", { type: "button", "aria-label": "Set weight of " + url }, "Set");
    c.weightButton.addEventListener("click", () => setWeight(url, c));
    c.effective = el("span", { class: "since effective" });
    wrap.append(c.weightInput, c.weightButton);
    const wcell = el("div");
    wcell.append(wrap, c.effective);
    w.appendChild(wcell);

    const s = cell("Req/s, 60 s", "spark-cell");
    c.svg = document.createElementNS(SVG, "svg");
    c.svg.setAttribute("class", "spark");
    c.svg.setAttribute("viewBox", "0 0 " + (SPARK_POINTS - 1) + " 20");
    c.svg.setAttribute("preserveAspectRatio", "none");
    c.svg.setAttribute("role", "img");
    const base = document.createElementNS(SVG, "line");
    base.setAttribute("x1", "0"); base.setAttribute("x2", String(SPARK_POINTS - 1));
    base.setAttribute("y1", "19.5"); base.setAttribute("y2", "19.5");
    c.line = document.createElementNS(SVG, "polyline");
    c.svg.append(base, c.line);
    s.appendChild(c.svg);

    const a = cell("Actions", "actions-cell");
    const acts = el("div", { class: "actions" });
    c.drain = el("button", { type: "button", class: "drain-button" }, "Drain");
    c.drain.addEventListener("click", () => toggleDrain(url, c));
    c.remove = el("button", { type: "button", class: "danger remove-button",
      "aria-label": "Remove " + url }, "Remove");
    c.remove.addEventListener("click", () => removeBackend(url, c));
    acts.append(c.drain, c.remove);
    a.appendChild(acts);
    return { tr, c, samples: [], spark: [], buckets: [], draining: false };
  }

  function render(status, metrics, now) {
    const backends = Array.isArray(status.backends) ? status.backends : [];
    const tbody = $("rows");
    const seen = new Set();
    let rps = 0, eps = 0, inflight = 0;
    backends.forEach((b, index) => {
      const url = String(b.url);
      seen.add(url);
      let r = rows.get(url);
      if (!r) {
        r = makeRow(url);
        rows.set(url, r);
      }
      if (tbody.children[index] !== r.tr) tbody.insertBefore(r.tr, tbody.children[index] || null);
      const rates = updateRates(r, b, now);
      rps += rates.rps || 0;
      eps += rates.eps || 0;
      inflight += Number(b.current_connections) || 0;
      fillRow(r, b, rates, metrics ? metrics.get(url) : undefined);
    });
    for (const [url, r] of rows) {
      if (!seen.has(url)) {
        r.tr.remove();
        rows.delete(url);
      }
    }
    $("empty").hidden = backends.length > 0;
    $("t-strategy").textContent = status.strategy || "-";
    $("t-backends").textContent = String(status.total_backends ?? backends.length);
    $("t-active").textContent = String(status.active_backends ?? "-");
    const removed = Array.isArray(status.draining) ? status.draining : [];
    for (const d of removed) inflight += Number(d.current_connections) || 0;
    $("t-inflight").textContent = String(inflight);
    $("t-rps").textContent = fmtRate(rps);
    $("t-eps").textContent = fmtRate(eps);
    renderRemoved(removed);
  }

  /** Requests/s and errors/s between the last two polls (counter resets count as zero). */
  function updateRates(r, b, now) {
    const sample = { t: now, requests: Number(b.requests) || 0, errors: Number(b.errors) || 0 };
    const prev = r.samples[r.samples.length - 1];
    r.samples.push(sample);
    if (r.samples.length > 2) r.samples.shift();
    if (!prev) return { rps: null, eps: null };
    const dt = (sample.t - prev.t) / 1000;
    if (dt <= 0) return { rps: null, eps: null };
    const rate = (a, b2) => (a >= b2 ? (a - b2) / dt : 0);
    const out = { rps: rate(sample.requests, prev.requests), eps: rate(sample.errors, prev.errors) };
    r.spark.push(out.rps);
    if (r.spark.length > SPARK_POINTS) r.spark.shift();
    return out;
  }

  function fillRow(r, b, rates, buckets) {
    const c = r.c;
    const health = String(b.health || (b.alive ? "up" : "down")).toLowerCase();
    const draining = b.draining === true || b.state === "draining";
    r.draining = draining;
    r.tr.classList.toggle("draining", draining);
    c.badge.textContent = health.toUpperCase();
    c.badge.className = "badge health " + (["up", "down", "pending"].includes(health) ? health : "pending");
    c.drainBadge.hidden = !draining;
    const reason = b.last_change_reason ? " · " + b.last_change_reason : "";
    c.since.textContent = (b.last_change ? "changed " + fmtAgo(b.last_change) : "") + reason;
    c.health.title = (b.last_change ? "last change " + new Date(b.last_change * 1000).toLocaleString() : "")
      + reason;
    c.inflight.textContent = String(Number(b.current_connections) || 0);
    c.rps.textContent = fmtRate(rates.rps);
    c.eps.textContent = fmtRate(rates.eps);

    if (buckets) {
      r.buckets.push(buckets);
      if (r.buckets.length > LATENCY_WINDOW + 1) r.buckets.shift();
      const older = r.buckets.length > 1 ? r.buckets[0] : null;
      c.p50.textContent = fmtLatency(quantile(0.5, older, buckets));
      c.p99.textContent = fmtLatency(quantile(0.99, older, buckets));
    } else {
      r.buckets = [];
      c.p50.textContent = "-";
      c.p99.textContent = "-";
    }

    const weight = Number(b.weight);
    const input = c.weightInput;
    if (document.activeElement !== input && input.dataset.dirty !== "1") input.value = String(weight);
    const eff = b.effective_weight;
    c.effective.textContent = eff !== undefined && Number(eff) !== weight ? "effective " + eff : "";

    c.drain.textContent = draining ? "Enable" : "Drain";
    c.drain.setAttribute("aria-label", (draining ? "Enable " : "Drain ") + b.url);

    const pts = r.spark;
    const max = Math.max(1, ...pts);
    const offset = SPARK_POINTS - pts.length;
    c.line.setAttribute("points", pts.map((v, i) =>
      (offset + i) + "," + (19 - (v / max) * 18).toFixed(2)).join(" "));
    c.svg.setAttribute("aria-label", "requests per second over the last minute, peak " + fmtRate(max));
  }

  function renderRemoved(list) {
    const panel = $("removed-panel");
    const ul = $("removed");
    panel.hidden = list.length === 0;
    ul.replaceChildren(...list.map((d) =>
      el("li", {}, d.url + ": " + (Number(d.current_connections) || 0) + " requests in flight")));
  }

  // ---- actions -------------------------------------------------------------------------

  function say(text, isError) {
    const m = $("message");
    m.textContent = text;
    m.classList.toggle("error", !!isError);
  }

  /** Sends one change; returns whether it was accepted. */
  async function change(method, body, done, buttons) {
    for (const b of buttons) b.disabled = true;
    try {
      const resp = await request(method, "/backends", body);
      if (resp.status === 401) {
        token = null;
        askToken("The admin API needs a token for this change.");
        say("not changed: token needed", true);
        return false;
      }
      if (!resp.ok) {
        say("not changed: " + (await errorText(resp)), true);
        return false;
      }
      say(done, false);
      pollNow();
      return true;
    } catch (e) {
      say("not changed: " + e.message, true);
      return false;
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  function toggleDrain(url, c) {
    const r = rows.get(url);
    const drain = !(r && r.draining);
    change("PATCH", { url, state: drain ? "drain" : "enabled" },
      (drain ? "draining " : "enabled ") + url, [c.drain]);
  }

  async function setWeight(url, c) {
    const w = Number(c.weightInput.value);
    if (!Number.isInteger(w) || w < 1 || w > MAX_WEIGHT) {
      say("weight must be a whole number from 1 to " + MAX_WEIGHT, true);
      c.weightInput.focus();
      return;
    }
    if (await change("PATCH", { url, weight: w }, "weight of " + url + " set to " + w, [c.weightButton])) {
      c.weightInput.dataset.dirty = "";
    }
  }

  function removeBackend(url, c) {
    const btn = c.remove;
    if (btn.dataset.armed !== "1") {
      // Two steps instead of a blocking confirm() dialog: the second press within a few
      // seconds removes.
      btn.dataset.armed = "1";
      btn.textContent = "Confirm";
      btn.classList.add("confirm");
      btn.setAttribute("aria-label", "Confirm removal of " + url);
      setTimeout(() => disarm(btn, url), REMOVE_CONFIRM_MS);
      return;
    }
    disarm(btn, url);
    change("DELETE", { url }, "removed " + url + " (its requests in flight finish)", [btn]);
  }

  function disarm(btn, url) {
    btn.dataset.armed = "";
    btn.textContent = "Remove";
    btn.classList.remove("confirm");
    btn.setAttribute("aria-label", "Remove " + url);
  }

  $("add-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const url = $("add-url").value.trim();
    const weight = Number($("add-weight").value);
    const button = ev.target.querySelector("button");
    if (await change("POST", { url, weight }, "added " + url + " (probed at once)", [button])) {
      $("add-url").value = "";
      $("add-weight").value = "1";
    }
  });

  pollNow();
})();
