// The ops page (/ops): live queues, agents and their presence, service levels with charts, shift coverage,
// escalations, failed deliveries, rules backtest. Admin token.
"use strict";

(() => {
  const { t, el, $, percent } = Triage;
  const TIERS = ["P1", "P2", "P3", "P4"];
  const BUCKETS = 12;          // points of the service-level charts over the chosen window
  const LIVE_MS = 3000;
  const AGENTS_MS = 5000;
  const DELIVERIES_MS = 10000;
  const LEVELS_MS = 60000;     // also the coverage, which changes only when agents or shifts do
  let shop = null;
  let shops = [];
  let agentLevels = new Map(); // agent id -> its service levels over the chosen window

  Triage.register({
    "ops.title": { en: "Operations", zh: "运营看板" },
    "ops.signin": { en: "Sign in with the admin token", zh: "使用管理员令牌登录" },
    "ops.token": { en: "Admin token", zh: "管理员令牌" },
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
    "ops.chart.round": { en: "Response per round, p50 and p90 (seconds)", zh: "平均响应时间（每轮）p50 / p90（秒）" },
    "ops.rate.buyers": { en: "Buyers replied", zh: "买家回复率" },
    "ops.all": { en: "Whole shop", zh: "全店" },
    "ops.levels.caption": { en: "Per round: every buyer round to the next reply, capped at 600 s; an unanswered round counts 600 s",
                            zh: "每轮：买家每一轮消息到下一次回复的时间，上限 600 秒；未回复的一轮按 600 秒计" },
    "grp.conversations": { en: "Conversations", zh: "会话" }, "grp.buyers": { en: "Buyers", zh: "买家" },
    "grp.first": { en: "First response", zh: "首次响应" }, "grp.round": { en: "Response per round", zh: "平均响应时间（每轮）" },
    "col.scope": { en: "Tier or queue", zh: "优先级 / 队列" },
    "col.mean": { en: "Mean", zh: "平均" }, "col.unanswered": { en: "Unanswered rounds", zh: "未回复轮次" },
    "col.presence": { en: "Presence", zh: "状态" }, "col.round50": { en: "Round p50", zh: "每轮响应 p50" },
    "col.buyerrate": { en: "Buyers replied", zh: "买家回复率" },
    "presence.online": { en: "online", zh: "在线" }, "presence.away": { en: "away", zh: "离开" },
    "presence.offline": { en: "offline", zh: "离线" },
    "ops.coverage": { en: "Shift coverage", zh: "班次覆盖" },
    "ops.coverage.date": { en: "Coverage date", zh: "覆盖日期" },
    "ops.coverage.tz": { en: "A date in the shop's own time zone.", zh: "按店铺所在时区的日期。" },
    "day.ordinary": { en: "An ordinary day.", zh: "普通工作日。" },
    "day.holiday": { en: "A public holiday: no shift runs.", zh: "法定节假日：不排班。" },
    "day.adjusted_workday": { en: "An adjusted working day: the working days' shifts run.", zh: "调休上班日：按工作日排班。" },
    "day.closed": { en: "A closed date of the shop: no shift runs.", zh: "店铺休息日：不排班。" },
    "day.nodata": { en: "The holiday calendar has no data for this date yet.", zh: "节假日数据尚未覆盖该日期。" },
    "col.shift": { en: "Shift", zh: "班次" }, "col.hours": { en: "Hours", zh: "时间" }, "col.runs": { en: "Runs", zh: "排班" },
    "col.covered": { en: "Covered", zh: "已覆盖" }, "col.gaps": { en: "Gaps", zh: "缺口" },
    "cov.nogap": { en: "none", zh: "无" },
    "cov.gaps": { en: "{n} gaps: queues nobody serves on a running shift.", zh: "{n} 个缺口：运行中的班次没有客服负责这些队列。" },
    "cov.full": { en: "Every running shift has every queue covered.", zh: "所有运行中的班次都覆盖了全部队列。" },
    "ops.deliveries": { en: "Failed deliveries", zh: "推送失败" },
    "ops.deliveries.none": { en: "No failed delivery.", zh: "没有失败的推送。" },
    "ops.deliveries.more": { en: "The newest {n} are shown.", zh: "仅显示最新 {n} 条。" },
    "col.when": { en: "Created", zh: "创建时间" }, "col.event": { en: "Event", zh: "事件" },
    "col.endpoint": { en: "Endpoint", zh: "接收地址" }, "col.attempts": { en: "Attempts", zh: "尝试次数" },
    "col.last": { en: "Last answer", zh: "最后结果" }, "col.action": { en: "Action", zh: "操作" },
    "ep.disabled": { en: "disabled: {reason}", zh: "已停用：{reason}" },
    "retry.go": { en: "Retry", zh: "重试" },
    "retry.label": { en: "Send delivery {id} again", zh: "重新发送推送 {id}" },
    "retry.done": { en: "Delivery {id} goes again now (same webhook-id).", zh: "推送 {id} 已重新发送（webhook-id 不变）。" },
    "retry.waits": { en: "Delivery {id} is queued again, but its endpoint is disabled: it waits until the endpoint is enabled.",
                     zh: "推送 {id} 已重新排队，但接收地址已停用：重新启用后才会发送。" },
    "409.delivery_not_failed": { en: "That delivery is no longer failed (someone retried it already).",
                                 zh: "该推送已不是失败状态（可能已被重试）。" },
  });

  const shopPath = (rest) => "/v1/shops/" + encodeURIComponent(shop) + rest;
  const presenceCell = (value) => el("span", { class: "presence-" + value }, t("presence." + value));

  function table(node, head, rows, groups) {
    node.querySelectorAll("thead, tbody").forEach((part) => part.remove());
    const heads = [];
    // groups: [[label, span], ...] over the columns, a first header row (label null: an empty cell)
    if (groups) heads.push(el("tr", {}, groups.map(([label, span]) =>
      el("th", { scope: label ? "colgroup" : null, colspan: span > 1 ? span : null, class: "group" }, label || ""))));
    heads.push(el("tr", {}, head.map(([label, num]) => el("th", { scope: "col", class: num ? "num" : null }, label))));
    node.append(el("thead", {}, heads),
                el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell, i) =>
                  el("td", { class: head[i][1] ? "num" : null }, cell))))));
  }

  const session = Triage.page({
    tokenKey: "triage.admin-token", board: "board", wrong: "ops.wrong", expired: "ops.wrong",
    verify: (value) => Triage.api(value, "GET", "/v1/shops"),
    enter(found) {
      shops = found;
      $("shop").replaceChildren(...shops.map((s) => el("option", { value: s.id }, s.name + " (" + s.id + ")")));
      if (!shops.length) return ($("error").textContent = t("ops.noshop"));
      chooseShop(shops[0].id);
    },
    leave() { shop = null; },
    relabel() { refreshLive(); refreshAgents(); refreshLevels(); refreshCoverage(); refreshDeliveries(); },
  });
  const call = session.call;

  function showError(error) {
    if (error.status !== 401) $("error").textContent = error.message;
  }

  // Today in the shop's own time zone: coverage takes a local date.
  function shopToday() {
    const zone = (shops.find((s) => s.id === shop) || {}).timezone;
    try {
      return new Intl.DateTimeFormat("en-CA", { timeZone: zone }).format(new Date());
    } catch (error) {
      return new Date().toISOString().slice(0, 10);
    }
  }

  function chooseShop(id) {
    shop = id;
    $("shop").value = id;
    $("coverage-date").value = shopToday();
    agentLevels = new Map();
    refreshAll();
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
      showError(error);
    }
  }

  // --- service levels and agents ---------------------------------------------------------------------------
  function statsPath(since, until) {
    return shopPath("/stats?since=" + since.toISOString() + "&until=" + until.toISOString());
  }

  async function refreshLevels() {
    if (!shop) return;
    const span = Number($("window").value) * 1000;
    const until = new Date();
    const since = new Date(until - span);
    try {
      const whole = await call("GET", statsPath(since, until));
      renderLevels(whole);
      agentLevels = new Map(whole.agents.map((a) => [a.agent_id, a]));
      const step = span / BUCKETS;
      const buckets = await Promise.all(Array.from({ length: BUCKETS }, (_, i) =>
        call("GET", statsPath(new Date(since.getTime() + i * step), new Date(since.getTime() + (i + 1) * step)))));
      const long = span > 2 * 86400 * 1000;
      const labels = buckets.map((b) => new Date(b.until).toLocaleString(Triage.lang === "zh" ? "zh-CN" : "en-GB",
        long ? { month: "numeric", day: "numeric", hour: "2-digit" } : { hour: "2-digit", minute: "2-digit" }));
      const p50p90 = (pick) => [
        { name: "p50", colour: "#0b57d0", values: buckets.map((b) => pick(b).p50) },
        { name: "p90", colour: "#a50e0e", values: buckets.map((b) => pick(b).p90) }];
      $("chart-fr").replaceChildren(lineChart(labels, p50p90((b) => b.overall.first_response)));
      $("chart-round").replaceChildren(lineChart(labels, p50p90((b) => b.overall.round_response)));
      $("chart-rate").replaceChildren(lineChart(labels, [
        { name: t("col.rate"), colour: "#146c2e", values: buckets.map((b) => b.overall.reply_rate) },
        { name: t("ops.rate.buyers"), colour: "#6b3fa0", values: buckets.map((b) => b.overall.buyer_reply_rate) }], 1));
      $("chart-breaches").replaceChildren(barChart(whole.tiers.map((tier) => [tier.tier, tier.sla_breaches])));
    } catch (error) {
      showError(error);
    }
  }

  // Each agent's held tickets (GET /v1/shops/{id}/agents/{agent}/tickets), read with the live view.
  async function refreshAgents() {
    if (!shop) return;
    try {
      const agents = await call("GET", shopPath("/agents"));
      const held = await Promise.all(agents.map((a) =>
        call("GET", shopPath("/agents/" + encodeURIComponent(a.id) + "/tickets"))));
      renderAgents(agents, held.map((list) => list.tickets));
    } catch (error) {
      showError(error);
    }
  }

  function heldItem(ticket) {
    const nick = (ticket.customer && ticket.customer.nick) || ticket.conversation_id;
    return el("li", {}, el("span", { class: "tier tier-" + ticket.tier }, ticket.tier), " ", nick, " · ", ticket.primary,
              ticket.unread ? " · " + t("ops.unread", { n: ticket.unread }) : "",
              ticket.escalated ? el("span", { class: "escalated" }, " ↑ " + t("ops.escalated")) : "");
  }

  function renderAgents(agents, held) {
    table($("agents"), [[t("col.name")], [t("col.presence")], [t("col.queues")], [t("col.holding")],
                        [t("col.capacity"), true], [t("col.round50"), true], [t("col.buyerrate"), true], [t("col.active")]],
          agents.map((a, i) => {
            const levels = agentLevels.get(a.id);
            return [a.name, presenceCell(a.presence), a.queues.join(", "),
                    held[i].length ? el("ul", { class: "plain" }, held[i].map(heldItem)) : "0",
                    held[i].length + " / " + a.capacity,
                    levels ? Triage.seconds(levels.round_response.p50) : "–",
                    levels ? percent(levels.buyer_reply_rate) : "–",
                    a.active ? t("yes") : t("no")];
          }));
    const escalated = held.flat().filter((ticket) => ticket.escalated);
    $("escalated-held").replaceChildren(...escalated.map(heldItem));
    $("escalated-held-title").hidden = escalated.length === 0;
  }

  // The whole shop, then each tier, then each queue: conversations, buyers, first response and response per round.
  function renderLevels(stats) {
    const row = (name, levels, target) => [name, String(levels.conversations_received), percent(levels.reply_rate),
      String(levels.buyers_received), percent(levels.buyer_reply_rate),
      Triage.seconds(levels.first_response.p50), Triage.seconds(levels.first_response.p90),
      Triage.seconds(levels.round_response.mean), Triage.seconds(levels.round_response.p50),
      Triage.seconds(levels.round_response.p90), String(levels.round_response.unanswered),
      String(levels.sla_breaches), target ? target + " s" : "–"];
    table($("levels"),
          [[t("col.scope")], [t("col.received"), true], [t("col.rate"), true], [t("col.received"), true], [t("col.rate"), true],
           ["p50", true], ["p90", true], [t("col.mean"), true], ["p50", true], ["p90", true], [t("col.unanswered"), true],
           [t("col.breaches"), true], [t("col.target"), true]],
          [row(t("ops.all"), stats.overall),
           ...stats.tiers.map((tier) => row(tier.tier, tier, tier.first_response_target_seconds)),
           ...stats.queues.map((queue) => row(queue.queue, queue))],
          [[null, 1], [t("grp.conversations"), 2], [t("grp.buyers"), 2], [t("grp.first"), 2], [t("grp.round"), 4],
           [null, 2]]);
  }

  // --- shift coverage --------------------------------------------------------------------------------------
  async function refreshCoverage() {
    const day = $("coverage-date").value;
    if (!shop || !day) return;
    try {
      renderCoverage(await call("GET", shopPath("/coverage?date=" + encodeURIComponent(day))));
    } catch (error) {
      $("coverage-note").textContent = Triage.explain(error);
    }
  }

  function renderCoverage(found) {
    const gaps = found.shifts.reduce((n, shift) => n + shift.gaps.length, 0);
    $("coverage-note").textContent = [t("day." + found.day), found.holiday_data === false ? t("day.nodata") : "",
      gaps ? t("cov.gaps", { n: gaps }) : found.shifts.some((s) => s.runs) ? t("cov.full") : ""].filter(Boolean).join(" ");
    table($("coverage"), [[t("col.shift")], [t("col.hours")], [t("col.runs")], [t("col.covered")], [t("col.gaps")]],
          found.shifts.map((shift) => [
            shift.name, shift.start + "–" + shift.end, shift.runs ? t("yes") : t("no"),
            el("ul", { class: "plain" }, shift.covered.map((c) =>
              el("li", {}, el("strong", {}, c.queue), ": ", c.agents.map((a) => a.name).join(", ")))),
            shift.gaps.length ? el("ul", { class: "plain gaps" }, shift.gaps.map((q) => el("li", { class: "gap" }, q)))
                              : t("cov.nogap")]));
  }

  // --- failed deliveries -----------------------------------------------------------------------------------
  const DELIVERIES_SHOWN = 20;

  async function refreshDeliveries() {
    if (!shop) return;
    try {
      const [found, endpoints] = await Promise.all([
        call("GET", shopPath("/deliveries?status=failed&limit=" + DELIVERIES_SHOWN)), call("GET", shopPath("/endpoints"))]);
      renderDeliveries(found, new Map(endpoints.map((e) => [e.id, e])));
    } catch (error) {
      showError(error);
    }
  }

  function renderDeliveries(found, endpoints) {
    const rows = found.deliveries;
    $("deliveries-none").hidden = rows.length > 0;
    $("deliveries").hidden = rows.length === 0;
    $("deliveries-more").textContent = found.next_before ? t("ops.deliveries.more", { n: DELIVERIES_SHOWN }) : "";
    table($("deliveries"), [[t("col.when")], [t("col.event")], [t("col.endpoint")], [t("col.attempts"), true],
                            [t("col.last")], [t("col.action")]],
          rows.map((d) => {
            const endpoint = endpoints.get(d.endpoint_id);
            return [new Date(d.created_at).toLocaleString(Triage.lang === "zh" ? "zh-CN" : "en-GB"), d.type,
                    el("span", {}, endpoint ? endpoint.url : d.endpoint_id,
                       endpoint && !endpoint.enabled
                         ? el("span", { class: "hint" }, " (" + t("ep.disabled", { reason: endpoint.disabled_reason || "–" }) + ")")
                         : null),
                    String(d.attempts), [d.last_status, d.last_error].filter((v) => v !== null).join(" · ") || "–",
                    el("button", { type: "button", class: "secondary", "aria-label": t("retry.label", { id: d.id }),
                                   dataset: { delivery: d.id },
                                   onclick: () => retry(d, endpoint) }, t("retry.go"))];
          }));
  }

  async function retry(delivery, endpoint) {
    try {
      await call("POST", shopPath("/deliveries/" + delivery.id + "/retry"));
      $("deliveries-notice").textContent = t(endpoint && !endpoint.enabled ? "retry.waits" : "retry.done",
                                             { id: delivery.id });
    } catch (error) {
      $("deliveries-notice").textContent = Triage.explain(error);
    }
    refreshDeliveries();
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
      const active = await call("GET", shopPath("/rules"));
      $("candidate").value = JSON.stringify(active.body, null, 2);
    } catch (error) {
      showError(error);
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
      const report = await call("POST", shopPath("/rules/backtest"),
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
    refreshCoverage();
    refreshDeliveries();
    loadCandidate();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("shop").addEventListener("change", () => chooseShop($("shop").value));
    $("window").addEventListener("change", refreshLevels);
    $("coverage-date").addEventListener("change", refreshCoverage);
    $("backtest-form").addEventListener("submit", runBacktest);
    setInterval(refreshLive, LIVE_MS);
    setInterval(refreshAgents, AGENTS_MS);
    setInterval(refreshDeliveries, DELIVERIES_MS);
    setInterval(() => { refreshLevels(); refreshCoverage(); }, LEVELS_MS);
    session.start();
  });
})();
