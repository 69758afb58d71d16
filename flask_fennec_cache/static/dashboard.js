// fennec-cache dashboard: polls stats, health and metrics (relative URLs, so it works under any
// mount point) and draws what changed. No dependencies, no build step.
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const POLL_MS = Math.max(250, Number(params.get("interval")) || 1000);
  const HISTORY_MS = 5 * 60 * 1000; // the charts' longest span
  const MIN_SPAN_MS = 20 * 1000; // ... and shortest, while the page is young
  const WINDOW_MS = 10 * 1000; // "current" hit rate and latency percentiles
  const samples = []; // {t, stats, histogram}

  const $ = (id) => document.getElementById(id);
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  function setText(id, text) {
    const node = $(id);
    if (node && node.textContent !== text) node.textContent = text;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    return value.toLocaleString("en-US", {
      minimumFractionDigits: digits, maximumFractionDigits: digits,
    });
  }

  function fmtMs(seconds) {
    if (seconds === null) return "–";
    const ms = seconds * 1000;
    return ms < 10 ? `${fmt(ms, 2)} ms` : `${fmt(ms, 0)} ms`;
  }

  // -- the Prometheus text format (only what our endpoint writes) ---------------------------

  function parseMetrics(text) {
    const samplesByName = {};
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const labels = {};
      for (const pair of (match[2] || "").split(",")) {
        const eq = pair.indexOf("=");
        if (eq > 0) labels[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim().replace(/^"|"$/g, "");
      }
      const value = match[3] === "+Inf" ? Infinity : Number(match[3]);
      (samplesByName[match[1]] = samplesByName[match[1]] || []).push({ labels, value });
    }
    return samplesByName;
  }

  function histogramFrom(metrics) {
    const buckets = (metrics.fennec_cache_operation_duration_seconds_bucket || [])
      .map((s) => [s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value])
      .sort((a, b) => a[0] - b[0]);
    const count = (metrics.fennec_cache_operation_duration_seconds_count || [{ value: 0 }])[0].value;
    return { buckets, count };
  }

  function histogramDelta(newer, older) {
    if (!older || newer.count < older.count) return newer; // first sample, or counters reset
    const before = new Map(older.buckets);
    return {
      buckets: newer.buckets.map(([le, c]) => [le, c - (before.get(le) || 0)]),
      count: newer.count - older.count,
    };
  }

  // Same estimate as Prometheus' histogram_quantile: linear inside the bucket.
  function quantile(histogram, q) {
    if (!histogram.count) return null;
    const rank = q * histogram.count;
    let lower = 0;
    let below = 0;
    for (const [bound, cumulative] of histogram.buckets) {
      if (cumulative >= rank && cumulative > below) {
        if (!Number.isFinite(bound)) return lower;
        return lower + ((bound - lower) * (rank - below)) / (cumulative - below);
      }
      lower = bound;
      below = cumulative;
    }
    return lower;
  }

  // -- rates between samples ------------------------------------------------------------------

  function delta(newer, older, field) {
    const d = newer.stats[field] - older.stats[field];
    return d >= 0 ? d : newer.stats[field]; // a reset (POST stats/reset) restarts the counters
  }

  function sampleAgo(ms) {
    const newest = samples[samples.length - 1];
    for (let i = samples.length - 2; i >= 0; i -= 1) {
      if (newest.t - samples[i].t >= ms) return samples[i];
    }
    return samples.length > 1 ? samples[0] : null;
  }

  function rates(newer, older) {
    const seconds = (newer.t - older.t) / 1000;
    const reads = delta(newer, older, "hits") + delta(newer, older, "misses");
    const hits = delta(newer, older, "hits");
    return {
      reads: reads / seconds,
      writes: delta(newer, older, "sets") / seconds,
      deletes: delta(newer, older, "deletes") / seconds,
      errors: delta(newer, older, "errors") / seconds,
      hitRate: reads ? (100 * hits) / reads : null,
    };
  }

  // -- rendering ------------------------------------------------------------------------------

  function renderHealth(health) {
    const badge = $("health");
    const status = health ? health.status : "unreachable";
    badge.className = `badge ${status}`;
    setText("health-status", status);
    setText("breaker", health && health.breaker ? health.breaker : "–");
    setText("ping-ms", health && Number.isFinite(health.latency_ms) ? `${fmt(health.latency_ms, 2)} ms` : "–");
    badge.title = health && health.error ? health.error : "GET health";
    setText("backend-url", health && health.url ? health.url : "");
  }

  function renderNumbers() {
    const newest = samples[samples.length - 1];
    const stats = newest.stats;
    setText("total-requests", fmt(stats.total_requests, 0));
    setText("hit-rate-total", `${fmt(stats.hit_rate, 2)} %`);
    setText("errors", fmt(stats.errors, 0));
    setText("stale-hits", fmt(stats.stale_hits || 0, 0));
    setText("lock-waits", fmt(stats.lock_waits || 0, 0));
    setText("fail-safe-hits", fmt(stats.fail_safe_hits || 0, 0));
    setText("round-trips", fmt(newest.histogram.count, 0));
    // Not shared: Redis is unreachable, or memory:// (a cache private to each process).
    setText("shared-note", stats.shared === false ? "(counts of this process only)" : "");

    const previous = samples.length > 1 ? samples[samples.length - 2] : null;
    const windowStart = sampleAgo(WINDOW_MS);
    if (previous) {
      const now = rates(newest, previous);
      setText("ops", fmt(now.reads + now.writes + now.deletes, 1));
      setText("reads-per-s", fmt(now.reads, 1));
      setText("writes-per-s", fmt(now.writes, 1));
      setText("deletes-per-s", fmt(now.deletes, 1));
      setText("errors-per-s", fmt(now.errors, 1));
      $("errors-card").classList.toggle("failing", now.errors > 0);
    }
    if (windowStart) {
      const span = rates(newest, windowStart);
      const seconds = Math.round((newest.t - windowStart.t) / 1000);
      setText("window-label", `last ${seconds} s`);
      setText("hit-rate", span.hitRate === null ? "no reads" : `${fmt(span.hitRate, 1)} %`);
    }
    let latency = histogramDelta(newest.histogram, windowStart ? windowStart.histogram : null);
    let label = "last 10 s";
    if (!latency.count) {
      latency = newest.histogram;
      label = "all time";
    }
    setText("latency-label", label);
    setText("p50", fmtMs(quantile(latency, 0.5)));
    setText("p90", fmtMs(quantile(latency, 0.9)));
    setText("p99", fmtMs(quantile(latency, 0.99)));
  }

  // Hit rates under this are highlighted in the by-name table (the docs' "aim for > 80 %").
  const LOW_HIT_RATE = 80;
  const MAX_NAME_ROWS = 200;

  function fmtLoadMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms < 10 ? `${fmt(ms, 2)} ms` : `${fmt(ms, 0)} ms`;
  }

  function renderNames(byName, scope) {
    const rows = Object.entries(byName || {})
      .sort((a, b) => (b[1].total_requests + b[1].bypasses) - (a[1].total_requests + a[1].bypasses)
        || (a[0] < b[0] ? -1 : 1))
      .slice(0, MAX_NAME_ROWS);
    setText("names-scope", scope);
    $("names-empty").hidden = rows.length > 0;
    const body = $("names-body");
    const fresh = document.createDocumentFragment();
    for (const [name, row] of rows) {
      const tr = document.createElement("tr");
      tr.dataset.name = name;
      const low = row.total_requests > 0 && row.hit_rate < LOW_HIT_RATE;
      tr.classList.toggle("low", low);
      const cells = [
        [name, "name"],
        [fmt(row.total_requests, 0), "reads"],
        [row.total_requests ? `${fmt(row.hit_rate, 1)} %` : "–", "rate"],
        [fmt(row.hits, 0), "hits"],
        [fmt(row.misses, 0), "misses"],
        [fmt(row.stale_hits, 0), "stale"],
        [fmt(row.fail_safe_hits, 0), "fail-safe"],
        [fmt(row.errors, 0), "errors"],
        [fmt(row.bypasses, 0), "bypasses"],
        [fmtLoadMs(row.load_p50_ms), "p50"],
        [fmtLoadMs(row.load_p99_ms), "p99"],
      ];
      for (const [value, kind] of cells) {
        const td = document.createElement("td");
        td.className = kind;
        td.textContent = value; // names come from code, but never as HTML
        tr.appendChild(td);
      }
      if (row.bypass_reasons && Object.keys(row.bypass_reasons).length) {
        tr.title = "not cached: " + Object.entries(row.bypass_reasons)
          .map(([reason, n]) => `${reason} ${n}`).join(", ");
      }
      fresh.appendChild(tr);
    }
    body.replaceChildren(fresh);
  }

  // The shared counters cannot be read (Redis is away, fail-open): rates and hit rates are
  // unknown, not zero; the counts at hand are this process's only, and said to be.
  function renderUnknown(stats) {
    for (const id of ["ops", "reads-per-s", "writes-per-s", "deletes-per-s", "errors-per-s", "hit-rate"]) {
      setText(id, "unknown");
    }
    $("errors-card").classList.remove("failing");
    for (const card of document.querySelectorAll(".card")) card.classList.add("unknown");
    setText("window-label", "Redis unreachable");
    setText("shared-note", `(Redis unreachable: shared counters unknown; this process only: `
      + `${fmt(stats.total_requests, 0)} reads, ${fmt(stats.errors, 0)} errors since the last flush)`);
    renderNames(stats.by_name, "this process only, since the last flush");
  }

  // -- Redis' own figures (health's "redis" section and warnings) ---------------------------

  function fmtBytes(count) {
    if (!Number.isFinite(count)) return "–";
    if (count < 1024) return `${count} B`;
    let size = count / 1024;
    for (const unit of ["KiB", "MiB"]) {
      if (size < 1024) return `${fmt(size, 1)} ${unit}`;
      size /= 1024;
    }
    return `${fmt(size, 1)} GiB`;
  }

  // A rate the answering worker cannot tell yet (its first sample) says so: never a 0.
  function fmtRate(value) {
    if (value === "unknown") return "unknown";
    return Number.isFinite(value) ? fmt(value, 1) : "–";
  }

  function fmtMemory(figures) {
    const used = fmtBytes(figures.used_memory_bytes);
    if (!Number.isFinite(figures.maxmemory_bytes)) return used;
    if (figures.maxmemory_bytes === 0) return `${used} (no maxmemory)`;
    const percent = Number.isFinite(figures.used_memory_percent)
      ? ` (${fmt(figures.used_memory_percent, 1)} %)` : "";
    return `${used} of ${fmtBytes(figures.maxmemory_bytes)}${percent}`;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function renderRedisNodes(nodes) {
    const table = $("redis-nodes");
    const body = $("redis-nodes-body");
    table.hidden = !nodes;
    body.replaceChildren();
    for (const [name, node] of Object.entries(nodes || {})) {
      const row = document.createElement("tr");
      cell(row, name);
      if (node.available === false) {
        cell(row, `figures left out: ${node.reason}`, "reason").colSpan = 5;
      } else {
        cell(row, fmtMemory(node));
        cell(row, node.maxmemory_policy || "–");
        cell(row, fmtRate(node.evicted_keys_per_second));
        cell(row, fmtRate(node.expired_keys_per_second));
        cell(row, fmt(node.connected_clients, 0));
      }
      body.appendChild(row);
    }
  }

  function renderRedis(health) {
    const redis = health && health.redis;
    const available = Boolean(redis && redis.available);
    $("redis-figures").hidden = !available;
    $("redis-unavailable").hidden = available;
    if (!available) {
      setText("redis-unavailable", redis ? `figures left out: ${redis.reason}` : "no health report");
      renderRedisNodes(null);
    } else {
      setText("redis-memory", fmtMemory(redis));
      const meter = $("redis-memory-meter");
      meter.hidden = !Number.isFinite(redis.used_memory_percent);
      meter.value = Math.min(100, redis.used_memory_percent || 0);
      setText("redis-policy", redis.maxmemory_policy || "–");
      setText("redis-evicted", fmtRate(redis.evicted_keys_per_second));
      setText("redis-evicted-total", fmt(redis.evicted_keys, 0));
      setText("redis-expired", fmtRate(redis.expired_keys_per_second));
      setText("redis-expired-total", fmt(redis.expired_keys, 0));
      setText("redis-clients", fmt(redis.connected_clients, 0));
      setText("redis-scope", redis.nodes ? "every primary, summed" : "INFO, at most once a second");
      renderRedisNodes(redis.nodes || null);
    }
    const list = $("redis-warnings");
    const warnings = (health && health.warnings) || [];
    if (list.childElementCount !== warnings.length
        || warnings.some((text, i) => list.children[i].textContent !== text)) {
      list.replaceChildren(...warnings.map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        return item;
      }));
    }
  }

  function niceCeiling(value) {
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 4, 5, 10]) {
      if (step * magnitude >= value) return step * magnitude;
    }
    return 10 * magnitude;
  }

  function drawChart(canvas, series, options) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const left = 36;
    const bottom = height - 18;
    const now = samples.length ? samples[samples.length - 1].t : performance.now();
    const span = Math.min(HISTORY_MS, Math.max(MIN_SPAN_MS, samples.length ? now - samples[0].t : 0));
    const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null);
    const max = options.max || niceCeiling(Math.max(1, ...values) * 1.1);
    const x = (t) => left + ((width - left - 4) * (t - (now - span))) / span;
    const y = (v) => 6 + (bottom - 6) * (1 - v / max);

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = css("--muted");
    ctx.strokeStyle = css("--line");
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i += 1) {
      const v = (max * i) / 4;
      ctx.beginPath();
      ctx.moveTo(left, y(v));
      ctx.lineTo(width - 4, y(v));
      ctx.stroke();
      ctx.fillText(v >= 10 || v === 0 ? fmt(v, 0) : fmt(v, 1), 2, y(v) + 4);
    }
    const seconds = Math.round(span / 1000);
    ctx.fillText(seconds >= 120 ? `-${Math.round(seconds / 60)} min` : `-${seconds} s`, left, height - 4);
    ctx.fillText("now", width - 26, height - 4);

    for (const s of series) {
      ctx.strokeStyle = ctx.fillStyle = css(s.color);
      ctx.lineWidth = 2;
      ctx.beginPath();
      s.points.forEach(([t, v], i) => {
        if (v === null) return;
        const joined = i > 0 && s.points[i - 1][1] !== null;
        if (joined) ctx.lineTo(x(t), y(v));
        else ctx.moveTo(x(t), y(v));
        // A point between two gaps (reads in one interval only) has no line: draw it as a dot.
        if (!joined && (i + 1 >= s.points.length || s.points[i + 1][1] === null)) {
          ctx.fillRect(x(t) - 1.5, y(v) - 1.5, 3, 3);
        }
      });
      ctx.stroke();
    }
  }

  function renderCharts() {
    const hitRate = [];
    const reads = [];
    const writes = [];
    const errors = [];
    for (let i = 1; i < samples.length; i += 1) {
      const r = rates(samples[i], samples[i - 1]);
      const t = samples[i].t;
      hitRate.push([t, r.hitRate]);
      reads.push([t, r.reads]);
      writes.push([t, r.writes + r.deletes]);
      errors.push([t, r.errors]);
    }
    drawChart($("hit-rate-chart"), [{ points: hitRate, color: "--good" }], { max: 100 });
    drawChart($("ops-chart"), [
      { points: reads, color: "--reads" },
      { points: writes, color: "--writes" },
      { points: errors, color: "--bad" },
    ], {});
  }

  // -- polling --------------------------------------------------------------------------------

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    return response.json(); // health answers 503 with a JSON body when unhealthy
  }

  async function getText(url) {
    const response = await fetch(url, { cache: "no-store" });
    return response.text();
  }

  async function tick() {
    try {
      const [stats, health, metricsText] = await Promise.all([
        getJSON("stats"), getJSON("health"), getText("metrics"),
      ]);
      renderHealth(health);
      renderRedis(health);
      if (!Number.isFinite(stats.hits)) {
        // A fail-closed cache answers 503 while Redis is away: nothing to count or chart, and
        // a sample without numbers would leave NaN in the rates and scales until it ages out.
        setText("shared-note", `(statistics unavailable: ${stats.error || "no answer"})`);
        return;
      }
      if (stats.available === false) {
        renderUnknown(stats);
        return;
      }
      for (const card of document.querySelectorAll(".card.unknown")) card.classList.remove("unknown");
      renderNames(stats.by_name, stats.shared === false ? "this process only" : "all processes");
      samples.push({ t: performance.now(), stats, histogram: histogramFrom(parseMetrics(metricsText)) });
      while (samples.length > 2 && samples[samples.length - 1].t - samples[0].t > HISTORY_MS) {
        samples.shift();
      }
      renderNumbers();
      renderCharts();
      setText("updated", new Date().toLocaleTimeString());
    } catch (error) {
      renderHealth(null); // the app itself did not answer
      renderRedis(null);
      $("health").title = String(error);
    } finally {
      window.setTimeout(tick, POLL_MS);
    }
  }

  setText("interval", fmt(POLL_MS / 1000, POLL_MS % 1000 ? 2 : 0));
  tick();
})();
