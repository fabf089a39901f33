// The ops page (/ops): live queues, agents, service levels with charts, escalations, rules backtest. Admin token.
"use strict";

(() => {
  const { t, el, api } = Triage;
  const $ = (id) => document.getElementById(id);
  const token = Triage.tokenStore("triage.admin-token");
  const TIERS = ["P1", "P2", "P3", "P4"];
  const BUCKETS = 12;          // points of the service-level charts over the chosen window
  const LIVE_MS = 3000;
  const AGENTS_MS = 5000;
  const LEVELS_MS = 60000;
  let shop = null;

  Triage.register({
    "ops.title": { en: "Operations", zh: "运营看板" },
    "ops.signin": { en: "Sign in with the admin token", zh: "使用管理员令牌登录" },
    "ops.token": { en: "Admin token", zh: "管理员令牌" },
    "signin.hint": { en: "Kept for this tab only; closing the tab signs you out.", zh: "只保存在当前标签页，关闭标签页即退出。" },
    "signin.go": { en: "Sign in", zh: "登录" },
    "ops.wrong": { en: "This admin token was not accepted (TRIAGE_ADMIN_TOKEN of the service). An agent token does not open this page.",
                   zh: "管理员令牌无效（服务的 TRIAGE_ADMIN_TOKEN）。客服令牌不能打开此页面。" },
    "ops.noshop": { en: "No shop yet: create one with POST /v1/shops or `triage bootstrap`.", zh: "还没有店铺：请用 POST /v1/shops 或 `triage bootstrap` 创建。" },
    "ops.shop": { en: "Shop", zh: "店铺" },
    "ops.window": { en: "Service levels over", zh: "统计时间范围" },
    "w.1h": { en: "the last hour", zh: "最近 1 小时" },
    "w.24h": { en: "the last 24 hours", zh: "最近 24 小时" },
    "w.7d": { en: "the last 7 days", zh: "最近 7 天" },
    "w.30d": { en: "the last 30 days", zh: "最近 30 天" },
    "ops.live": { en: "Live · updated {time}", zh: "实时 · 更新于 {time}" },
    "ops.queues": { en: "Queues now", zh: "当前队列" },
    "ops.queues.caption": { en: "Queued tickets per tier and the oldest wait, refreshed every 3 s", zh: "各优先级排队数与最长等待，每 3 秒刷新" },
    "ops.agents": { en: "Agents", zh: "客服" },
    "ops.escalations": { en: "Escalations", zh: "升级工单" },
    "ops.esc.text": { en: "{n} waiting in escalations, oldest {wait}.", zh: "升级队列中 {n} 个等待，最长 {wait}。" },
    "ops.esc.none": { en: "Nothing waits in escalations.", zh: "升级队列为空。" },
    "ops.levels": { en: "Service levels", zh: "服务水平" },
    "ops.chart.fr": { en: "First response, p50 and p90 (seconds)", zh: "首次响应时间 p50 / p90（秒）" },
    "ops.chart.rate": { en: "Reply rate", zh: "回复率" },
    "ops.chart.breaches": { en: "SLA breaches by tier", zh: "各优先级超时数" },
    "ops.backtest": { en: "Rules backtest", zh: "规则回测" },
    "ops.candidate": { en: "Candidate ruleset (JSON; starts as the active one)", zh: "候选规则（JSON，初始为当前规则）" },
    "ops.limit": { en: "Recent messages to replay", zh: "回放最近消息数" },
    "ops.run": { en: "Run backtest", zh: "运行回测" },
    "ops.badjson": { en: "The candidate is not valid JSON: {error}", zh: "候选规则不是有效的 JSON：{error}" },
    "ops.bt.summary": { en: "{messages} messages replayed under {candidate} against {active}: {any} would change ({tickets} tickets).",
                        zh: "按 {candidate} 回放 {messages} 条消息（对照 {active}）：{any} 条会变化（涉及 {tickets} 个会话）。" },
    "ops.bt.none": { en: "No replayed message would change.", zh: "回放的消息都不会变化。" },
    "ops.unread": { en: "{n} unread", zh: "{n} 条未读" },
    "ops.escalated": { en: "escalated", zh: "已升级" },
    "ops.escalated.held": { en: "Escalated while held", zh: "处理中升级" },
    "col.queue": { en: "Queue", zh: "队列" }, "col.total": { en: "Total", zh: "合计" },
    "col.oldest": { en: "Oldest wait", zh: "最长等待" }, "col.name": { en: "Name", zh: "姓名" },
    "col.queues": { en: "Queues", zh: "队列" }, "col.holding": { en: "Holding", zh: "处理中" },
    "col.capacity": { en: "Capacity", zh: "上限" }, "col.active": { en: "Active", zh: "启用" },
    "col.replied": { en: "Replied", zh: "已回复" }, "col.tier": { en: "Tier", zh: "优先级" },
    "col.received": { en: "Received", zh: "接入" }, "col.rate": { en: "Reply rate", zh: "回复率" },
    "col.breaches": { en: "Breaches", zh: "超时" }, "col.target": { en: "Target", zh: "目标" },
    "col.kind": { en: "Change", zh: "变化" }, "col.excerpt": { en: "Message", zh: "消息" },
    "col.before": { en: "Now", zh: "当前" }, "col.after": { en: "Candidate", zh: "候选" },
    "yes": { en: "yes", zh: "是" }, "no": { en: "no", zh: "否" },
  });

  const call = (method, path, options) => api(token.get(), method, path, options).catch((error) => {
    if (error.status === 401) signOut(t("ops.wrong"));
    throw error;
  });

  function table(node, head, rows) {
    node.querySelectorAll("thead, tbody").forEach((part) => part.remove());
    node.append(el("thead", {}, el("tr", {}, head.map(([label, num]) => el("th", { scope: "col", class: num ? "num" : null }, label)))),
                el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell, i) =>
                  el("td", { class: head[i][1] ? "num" : null }, cell))))));
  }

  // --- sign in ---------------------------------------------------------------------------------------------
  async function signIn(value) {
    try {
      const shops = await api(value, "GET", "/v1/shops");
      token.set(value);
      $("signin").hidden = true;
      $("board").hidden = false;
      $("signout").hidden = false;
      $("shop").replaceChildren(...shops.map((s) => el("option", { value: s.id }, s.name + " (" + s.id + ")")));
      if (!shops.length) return ($("error").textContent = t("ops.noshop"));
      shop = shops[0].id;
      refreshAll();
    } catch (error) {
      $("signin-error").textContent = error.status === 401 ? t("ops.wrong") : error.message;
    }
  }

  function signOut(message) {
    token.clear();
    shop = null;
    $("board").hidden = true;
    $("signin").hidden = false;
    $("signout").hidden = true;
    $("signin-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  // --- live: queues and escalations ------------------------------------------------------------------------
  async function refreshLive() {
    if (!shop) return;
    try {
      const found = await call("GET", "/v1/queues?shop_id=" + encodeURIComponent(shop));
      table($("queues"), [[t("col.queue")], ...TIERS.map((tier) => [tier, true]), [t("col.total"), true], [t("col.oldest"), true]],
            found.queues.map((q) => [q.name, ...TIERS.map((tier) => String(q.depth[tier] || 0)), String(q.total),
                                     Triage.seconds(q.oldest_wait_seconds)]));
      const esc = found.queues.find((q) => q.name === "escalations");
      $("escalations").textContent = esc && esc.total
        ? t("ops.esc.text", { n: esc.total, wait: Triage.seconds(esc.oldest_wait_seconds) }) : t("ops.esc.none");
      $("live").textContent = t("ops.live", { time: new Date().toLocaleTimeString() });
      $("error").textContent = "";
    } catch (error) {
      if (error.status !== 401) $("error").textContent = error.message;
    }
  }

  // --- service levels and agents ---------------------------------------------------------------------------
  function statsPath(since, until) {
    return "/v1/shops/" + encodeURIComponent(shop) + "/stats?since=" + since.toISOString() + "&until=" + until.toISOString();
  }

  async function refreshLevels() {
    if (!shop) return;
    const span = Number($("window").value) * 1000;
    const until = new Date();
    const since = new Date(until - span);
    try {
      const whole = await call("GET", statsPath(since, until));
      renderLevels(whole);
      const step = span / BUCKETS;
      const buckets = await Promise.all(Array.from({ length: BUCKETS }, (_, i) =>
        call("GET", statsPath(new Date(since.getTime() + i * step), new Date(since.getTime() + (i + 1) * step)))));
      const long = span > 2 * 86400 * 1000;
      const labels = buckets.map((b) => new Date(b.until).toLocaleString(Triage.lang === "zh" ? "zh-CN" : "en-GB",
        long ? { month: "numeric", day: "numeric", hour: "2-digit" } : { hour: "2-digit", minute: "2-digit" }));
      $("chart-fr").replaceChildren(lineChart(labels, [
        { name: "p50", colour: "#0b57d0", values: buckets.map((b) => b.overall.first_response.p50) },
        { name: "p90", colour: "#a50e0e", values: buckets.map((b) => b.overall.first_response.p90) }]));
      $("chart-rate").replaceChildren(lineChart(labels, [
        { name: t("col.rate"), colour: "#146c2e", values: buckets.map((b) => b.overall.reply_rate) }], 1));
      $("chart-breaches").replaceChildren(barChart(whole.tiers.map((tier) => [tier.tier, tier.sla_breaches])));
    } catch (error) {
      if (error.status !== 401) $("error").textContent = error.message;
    }
  }

  // Each agent's held tickets (GET /v1/shops/{id}/agents/{agent}/tickets), read with the live view.
  async function refreshAgents() {
    if (!shop) return;
    try {
      const agents = await call("GET", "/v1/shops/" + encodeURIComponent(shop) + "/agents");
      const held = await Promise.all(agents.map((a) =>
        call("GET", "/v1/shops/" + encodeURIComponent(shop) + "/agents/" + encodeURIComponent(a.id) + "/tickets")));
      renderAgents(agents, held.map((list) => list.tickets));
    } catch (error) {
      if (error.status !== 401) $("error").textContent = error.message;
    }
  }

  function heldItem(ticket) {
    const nick = (ticket.customer && ticket.customer.nick) || ticket.conversation_id;
    return el("li", {}, el("span", { class: "tier tier-" + ticket.tier }, ticket.tier), " ", nick, " · ", ticket.primary,
              ticket.unread ? " · " + t("ops.unread", { n: ticket.unread }) : "",
              ticket.escalated ? el("span", { class: "escalated" }, " ↑ " + t("ops.escalated")) : "");
  }

  function renderAgents(agents, held) {
    table($("agents"), [[t("col.name")], [t("col.queues")], [t("col.holding")], [t("col.capacity"), true], [t("col.active")]],
          agents.map((a, i) => [a.name, a.queues.join(", "),
                                held[i].length ? el("ul", { class: "plain" }, held[i].map(heldItem)) : "0",
                                held[i].length + " / " + a.capacity, a.active ? t("yes") : t("no")]));
    const escalated = held.flat().filter((ticket) => ticket.escalated);
    $("escalated-held").replaceChildren(...escalated.map(heldItem));
    $("escalated-held-title").hidden = escalated.length === 0;
  }

  function renderLevels(stats) {
    const pct = (value) => (value === null ? "–" : Math.round(value * 100) + " %");
    table($("levels"), [[t("col.tier")], [t("col.received"), true], [t("col.rate"), true], ["p50", true], ["p90", true],
                        [t("col.breaches"), true], [t("col.target"), true]],
          stats.tiers.map((tier) => [tier.tier, String(tier.conversations_received), pct(tier.reply_rate),
                                     Triage.seconds(tier.first_response.p50), Triage.seconds(tier.first_response.p90),
                                     String(tier.sla_breaches), tier.first_response_target_seconds + " s"]));
  }

  // --- charts: inline SVG, no library ----------------------------------------------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  function lineChart(labels, series, fixedMax) {
    const W = 360, H = 160, L = 36, B = 22, T = 8;
    const values = series.flatMap((s) => s.values).filter((v) => v !== null);
    const max = fixedMax || Math.max(1, ...values);
    const x = (i) => L + (i * (W - L - 8)) / Math.max(1, labels.length - 1);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                               "aria-label": series.map((s) => s.name).join(", ") },
      svg("line", { x1: L, y1: H - B, x2: W - 8, y2: H - B, class: "axis" }),
      svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }),
      svg("text", { x: 2, y: T + 8 }, fixedMax ? "100 %" : String(Math.round(max))),
      svg("text", { x: 2, y: H - B }, "0"),
      svg("text", { x: L, y: H - 6 }, labels[0] || ""),
      svg("text", { x: W - 8, y: H - 6, "text-anchor": "end" }, labels[labels.length - 1] || ""));
    for (const s of series) {
      // A bucket without data breaks the line rather than drawing a false zero.
      let path = "";
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        path += (pen ? " L" : " M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
        chart.append(svg("circle", { cx: x(i), cy: y(v), r: 2.5, fill: s.colour },
                         svg("title", {}, `${labels[i]}: ${fixedMax ? Math.round(v * 100) + " %" : v.toFixed(1)}`)));
      });
      if (path) chart.append(svg("path", { d: path.trim(), fill: "none", stroke: s.colour, "stroke-width": 2 }));
    }
    const legend = el("p", { class: "legend" }, series.map((s) =>
      el("span", {}, el("span", { class: "sw", "data-colour": s.colour }), " " + s.name)));
    legend.querySelectorAll(".sw").forEach((sw) => sw.append(svgSwatch(sw.dataset.colour)));
    return el("div", {}, chart, legend);
  }

  function svgSwatch(colour) {
    return svg("svg", { width: 12, height: 12, "aria-hidden": "true" }, svg("rect", { width: 12, height: 12, fill: colour }));
  }

  function barChart(pairs) {
    const W = 360, H = 150, B = 22, T = 14;
    const max = Math.max(1, ...pairs.map(([, v]) => v));
    const colours = { P1: "#a50e0e", P2: "#8a4300", P3: "#245b9e", P4: "#3d4a57" };
    const width = (W - 20) / pairs.length;
    return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                        "aria-label": pairs.map(([k, v]) => `${k}: ${v}`).join(", ") },
      ...pairs.flatMap(([name, value], i) => {
        const h = ((H - T - B) * value) / max;
        return [svg("rect", { x: 10 + i * width + 8, y: H - B - h, width: width - 16, height: h, fill: colours[name] },
                    svg("title", {}, `${name}: ${value}`)),
                svg("text", { x: 10 + i * width + width / 2 - 8, y: H - 6 }, name),
                svg("text", { x: 10 + i * width + width / 2 - 4, y: H - B - h - 3 }, String(value))];
      }));
  }

  // --- rules backtest --------------------------------------------------------------------------------------
  async function loadCandidate() {
    try {
      const active = await call("GET", "/v1/shops/" + encodeURIComponent(shop) + "/rules");
      $("candidate").value = JSON.stringify(active.body, null, 2);
    } catch (error) {
      if (error.status !== 401) $("error").textContent = error.message;
    }
  }

  async function runBacktest(event) {
    event.preventDefault();
    let ruleset;
    try {
      ruleset = JSON.parse($("candidate").value);
    } catch (error) {
      $("backtest").replaceChildren(el("p", { class: "error", role: "alert" }, t("ops.badjson", { error: error.message })));
      return;
    }
    try {
      const report = await call("POST", "/v1/shops/" + encodeURIComponent(shop) + "/rules/backtest",
                                { body: { ruleset, limit: Number($("limit").value) || 1000 } });
      renderBacktest(report);
    } catch (error) {
      const where = error.details && error.details[0] ? " (" + error.details[0].field + ")" : "";
      $("backtest").replaceChildren(el("p", { class: "error", role: "alert" }, error.message + where));
    }
  }

  function renderBacktest(report) {
    const moves = el("table", {});
    table(moves, [["→"], ...TIERS.map((tier) => [tier, true])],
          TIERS.map((from) => [from, ...TIERS.map((to) => String(report.tier_moves[from][to]))]));
    moves.querySelectorAll("tbody tr").forEach((row, i) => row.querySelectorAll("td").forEach((cell, j) => {
      if (j > 0 && j - 1 !== i && cell.textContent !== "0") cell.classList.add("changed");
    }));
    const seen = new Set();
    const rows = [];
    for (const kind of ["tier", "queue", "primary"]) {
      for (const ex of report.examples[kind]) {
        if (seen.has(ex.message_id)) continue;
        seen.add(ex.message_id);
        const show = (d) => `${d.primary} · ${d.tier} · ${d.queue}`;
        rows.push([kind, ex.excerpt, show(ex.before), show(ex.after)]);
      }
    }
    const examples = rows.length ? el("table", {}) : el("p", { class: "hint" }, t("ops.bt.none"));
    if (rows.length) table(examples, [[t("col.kind")], [t("col.excerpt")], [t("col.before")], [t("col.after")]], rows);
    $("backtest").replaceChildren(
      el("p", {}, t("ops.bt.summary", { messages: report.messages, candidate: report.candidate, active: report.active,
                                        any: report.changed.any, tickets: report.tickets.any })),
      moves, examples);
  }

  function refreshAll() {
    refreshLive();
    refreshAgents();
    refreshLevels();
    loadCandidate();
  }

  document.addEventListener("DOMContentLoaded", () => {
    Triage.translate();
    $("lang").addEventListener("click", () => {
      Triage.setLanguage(Triage.lang === "zh" ? "en" : "zh");
      if (shop) { refreshLive(); refreshAgents(); refreshLevels(); }
    });
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("token").value.trim());
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("shop").addEventListener("change", () => { shop = $("shop").value; refreshAll(); });
    $("window").addEventListener("change", refreshLevels);
    $("backtest-form").addEventListener("submit", runBacktest);
    setInterval(refreshLive, LIVE_MS);
    setInterval(refreshAgents, AGENTS_MS);
    setInterval(refreshLevels, LEVELS_MS);
    if (token.get()) signIn(token.get());
    else $("token").focus();
  });
})();
