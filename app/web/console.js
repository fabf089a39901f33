// The agent console (/console): presence, claim with long poll, read the thread with its triage evidence, reply,
// resolve, release, snooze, transfer to a queue or a colleague. Every call is the public API of README "Agent
// consoles", with the agent's own token.
"use strict";

(() => {
  const { t, el, $, newKey } = Triage;
  const CLAIM_WAIT = 25;          // seconds a claim long-polls before asking again
  const REFRESH_MS = 4000;        // the held list (unread counts, escalations, new buyer messages)
  const CLAIM_GONE_MS = 1500;     // a given-up long poll has ended at the service by then (it looks each second)
  const PRESENCE_MS = 45000;      // presence said again while the console is open (silence turns it offline)
  const COLLEAGUES_MS = 15000;    // the colleagues a ticket may be handed to, and their presence

  Triage.register({
    "console.title": { en: "Agent console", zh: "客服工作台" },
    "signin.title": { en: "Sign in", zh: "登录" },
    "signin.token": { en: "Agent token", zh: "客服令牌" },
    "signin.wrong": { en: "This agent token was not accepted. Check you pasted all of it; a token an admin replaced stops working at once.",
                      zh: "客服令牌无效。请检查是否完整粘贴；管理员重置后旧令牌立即失效。" },
    "signin.expired": { en: "Your token is no longer accepted: sign in again.", zh: "令牌已失效，请重新登录。" },
    "claim.go": { en: "Claim next", zh: "领取下一个" },
    "claim.stop": { en: "Stop waiting", zh: "停止等待" },
    "claim.keep": { en: "Keep claiming", zh: "持续领取" },
    "claim.waiting": { en: "Waiting for work… a new conversation appears here as soon as it arrives.",
                       zh: "等待新会话……有新消息时会立即出现在这里。" },
    "claim.idle": { en: "Not claiming.", zh: "未在领取。" },
    "presence.label": { en: "My status", zh: "我的状态" },
    "presence.set.online": { en: "Online", zh: "在线" },
    "presence.set.away": { en: "Away (no new work)", zh: "离开（暂不接待）" },
    "presence.set.offline": { en: "Offline", zh: "离线" },
    "presence.line.claiming": { en: "Online · waiting for work", zh: "在线 · 等待新会话" },
    "presence.line.online": { en: "Online · not claiming", zh: "在线 · 未在领取" },
    "presence.line.away": { en: "Away · returning buyers are not held for you; your tickets stay yours",
                            zh: "离开 · 老客户不再为您保留；您的会话仍由您处理" },
    "presence.line.offline": { en: "Offline · nothing is held for you; your tickets stay yours",
                               zh: "离线 · 不为您保留会话；您的会话仍由您处理" },
    "presence.claim": { en: "Claiming makes you online.", zh: "领取会话会将您设为在线。" },
    "presence.failed": { en: "Your status was not changed: {why}", zh: "状态未更改：{why}" },
    "presence.online": { en: "online", zh: "在线" }, "presence.away": { en: "away", zh: "离开" },
    "presence.offline": { en: "offline", zh: "离线" },
    "held.title": { en: "My tickets", zh: "我的会话" },
    "held.empty": { en: "You hold no ticket. Claim one to start.", zh: "暂无会话，请领取。" },
    "held.unread": { en: "{n} unread", zh: "{n} 条未读" },
    "ticket.none": { en: "Open a ticket from your list, or claim the next one.", zh: "从列表打开会话，或领取下一个。" },
    "ticket.escalated": { en: "Escalated", zh: "已升级" },
    "ticket.escalated.note": { en: "This ticket became more urgent while you hold it.", zh: "您处理中的会话紧急程度已升高。" },
    "ticket.lease": { en: "Lease: {s} left", zh: "租约剩余 {s}" },
    "ticket.readonly": { en: "You no longer hold this ticket; it is shown read-only.", zh: "您已不再持有此会话，仅可查看。" },
    "thread.older": { en: "Earlier messages", zh: "更早的消息" },
    "thread.buyer": { en: "Buyer", zh: "买家" },
    "thread.agent": { en: "Agent", zh: "客服" },
    "thread.urgent": { en: "urgent", zh: "急" },
    "thread.evidence": { en: "Why: {rules}", zh: "依据：{rules}" },
    "suggest.title": { en: "Suggested replies", zh: "推荐回复" },
    "suggest.none": { en: "No template fits this ticket.", zh: "没有适用的模板。" },
    "suggest.missing": { en: "fill in: {names}", zh: "待填写：{names}" },
    "reply.label": { en: "Reply to the buyer", zh: "回复买家" },
    "reply.send": { en: "Send", zh: "发送" },
    "reply.sent": { en: "Reply sent.", zh: "回复已发送。" },
    "act.resolve": { en: "Resolve", zh: "结束会话" },
    "act.release": { en: "Release", zh: "退回队列" },
    "act.transfer": { en: "Transfer", zh: "转接" },
    "act.resolved": { en: "Resolved.", zh: "会话已结束。" },
    "act.released": { en: "Handed back to its queue.", zh: "已退回队列。" },
    "act.transferred": { en: "Transferred to {queue}.", zh: "已转接到 {queue}。" },
    "act.handed": { en: "Handed to {name}, who holds it now.", zh: "已转给 {name}，由其继续处理。" },
    "snooze.title": { en: "Snooze: wait for the buyer", zh: "稍后处理：等待买家" },
    "snooze.for": { en: "Back in its queue", zh: "回到队列" },
    "snooze.30": { en: "in 30 minutes", zh: "30 分钟后" }, "snooze.60": { en: "in 1 hour", zh: "1 小时后" },
    "snooze.120": { en: "in 2 hours", zh: "2 小时后" }, "snooze.240": { en: "in 4 hours", zh: "4 小时后" },
    "snooze.tomorrow": { en: "tomorrow at 09:00", zh: "明天 09:00" },
    "snooze.at": { en: "at a time I choose", zh: "自定义时间" },
    "snooze.time": { en: "Time", zh: "时间" },
    "snooze.reason": { en: "Waiting for", zh: "等待内容" },
    "snooze.pick": { en: "Choose the time the ticket comes back.", zh: "请选择会话回到队列的时间。" },
    "act.snooze": { en: "Snooze", zh: "稍后处理" },
    "act.snoozed": { en: "Snoozed until {time}: it comes back to its queue then, or as soon as the buyer writes.",
                     zh: "已设为稍后处理，{time} 回到队列；买家来消息时会立即回来。" },
    "422.snooze_until": { en: "The time to come back must be after now and at most 30 days ahead; the ticket stays with you.",
                          zh: "回到队列的时间须晚于现在且不超过 30 天；会话仍由您处理。" },
    "transfer.title": { en: "Transfer", zh: "转接" },
    "transfer.queue": { en: "To a queue", zh: "转到队列" },
    "transfer.agent": { en: "or to an agent", zh: "或转给客服" },
    "transfer.agent.none": { en: "(nobody chosen)", zh: "（未选择）" },
    "transfer.notserving": { en: "does not serve {queue}", zh: "不负责 {queue}" },
    "transfer.choose": { en: "Choose a queue or an agent to transfer to.", zh: "请选择要转接的队列或客服。" },
    "transfer.reason": { en: "Reason", zh: "原因" },
    "help.open": { en: "Shortcuts", zh: "快捷键" },
    "help.title": { en: "Keyboard shortcuts", zh: "快捷键" },
    "help.c": { en: "Claim the next ticket (again: stop waiting)", zh: "领取下一个会话（再按停止等待）" },
    "help.r": { en: "Write a reply", zh: "输入回复" },
    "help.send": { en: "Send the reply", zh: "发送回复" },
    "help.num": { en: "Put a suggested reply in the box", zh: "使用第 N 条推荐回复" },
    "help.e": { en: "Resolve the open ticket", zh: "结束当前会话" },
    "help.h": { en: "Hand it back to its queue (release)", zh: "退回队列" },
    "help.t": { en: "Transfer to another queue or agent", zh: "转接到其他队列或客服" },
    "help.s": { en: "Snooze: put the ticket aside until a time or the buyer's next message",
                zh: "稍后处理：到指定时间或买家来消息时再回来" },
    "help.p": { en: "Set my status (online, away, offline)", zh: "设置我的状态（在线、离开、离线）" },
    "help.jk": { en: "Next / previous ticket of your list", zh: "下一个 / 上一个会话" },
    "help.q": { en: "This help", zh: "显示本帮助" },
    "help.close": { en: "Close", zh: "关闭" },
    // 409s and other refusals, in words an agent acts on.
    "409.ticket_not_held": { en: "Lease lost: you no longer hold this ticket (its lease ran out while the console was away, or an admin took it back). It is back in its queue; claim again to continue.",
                             zh: "租约已失效：您已不再持有此会话（租约超时或被管理员收回），会话已回到队列，请重新领取。" },
    "409.at_capacity": { en: "At capacity: you hold as many tickets as you may. Resolve, release or transfer one to claim more.",
                         zh: "已达接待上限：请先结束、退回或转接一个会话再领取。" },
    "409.ticket_already_resolved": { en: "This ticket is already resolved.", zh: "此会话已结束。" },
    "404.ticket": { en: "This ticket is no longer visible to you (it moved to a queue you do not serve).",
                    zh: "您已无法查看此会话（已转到您不负责的队列）。" },
    "422.unknown_queue": { en: "This shop has no queue of that name.", zh: "店铺没有这个队列。" },
    // A hand-over the service refused: the ticket stays with you.
    "409.agent_offline": { en: "is offline: a ticket goes only to an agent at the console (online or away). Choose someone else or a queue; the ticket stays with you.",
                           zh: "已离线：只能转给在工作台的客服（在线或离开）。请选择其他客服或队列；会话仍由您处理。" },
    "409.agent_at_capacity": { en: "already holds as many tickets as allowed. Choose someone else or a queue; the ticket stays with you.",
                               zh: "接待已满。请选择其他客服或队列；会话仍由您处理。" },
    "422.queue_not_served": { en: "does not serve this ticket's queue. Choose someone who does, or transfer to a queue; the ticket stays with you.",
                              zh: "不负责此会话所在队列。请选择负责该队列的客服或转到队列；会话仍由您处理。" },
    "422.agent_inactive": { en: "was deactivated by an admin. Choose someone else; the ticket stays with you.",
                            zh: "已被管理员停用。请选择其他客服；会话仍由您处理。" },
    "422.unknown_agent": { en: "is not an agent of this shop any more. Choose someone else; the ticket stays with you.",
                           zh: "已不是本店客服。请选择其他客服；会话仍由您处理。" },
    "422.same_agent": { en: "is you: you already hold this ticket.", zh: "就是您本人：会话已由您处理。" },
  });

  const state = {
    held: [],             // the agent's tickets, as GET /v1/agents/me/tickets lists them
    openId: null,
    open: null,           // the open ticket
    older: [],            // earlier messages read through ?before=
    readOnly: false,
    claiming: null,       // AbortController of the running claim loop
    pendingReply: null,   // {text, key}: a reply whose answer never came, retried with the same key
    escalatedSeen: new Set(),
    suggestions: [],
    presence: "offline",  // what this agent set (or a claim made), as the service last answered
    colleagues: [],       // GET /v1/agents/me/colleagues: whom a held ticket may be handed to
  };

  // --- sign in and out -------------------------------------------------------------------------------------
  const session = Triage.page({
    tokenKey: "triage.agent-token", board: "desk", wrong: "signin.wrong", expired: "signin.expired",
    verify: (value) => Triage.api(value, "GET", "/v1/agents/me/tickets"),
    enter(list) {
      state.held = list.tickets;
      renderHeld();
      loadQueues();
      loadColleagues();
      arrive();
      $("claim").focus();
    },
    leave() {
      stopClaiming();
      // Signing out is leaving the console: offline now rather than after the silence timeout.
      const value = session.token();
      if (value && state.presence !== "offline") {
        Triage.api(value, "PUT", "/v1/agents/me/presence", { body: { status: "offline" } }).catch(() => {});
      }
      Object.assign(state, { held: [], openId: null, open: null, older: [], readOnly: false, presence: "offline",
                             colleagues: [] });
      $("presence").textContent = "";
      $("presence-box").hidden = true;
    },
    relabel() {
      showPresence();
      renderColleagues();
      renderHeld();
      if (state.open) renderThread();
      if (state.openId) loadSuggestions(state.openId);
    },
  });
  const call = session.call;

  function explain(error, what) {
    if (error.status === 404 && what === "ticket") return t("404.ticket");
    return Triage.explain(error);
  }

  function notice(text) {
    $("notice").textContent = text;
  }

  // --- presence and claiming -------------------------------------------------------------------------------
  function showPresence() {
    $("presence-box").hidden = false;
    $("presence-set").value = state.presence;
    const line = state.presence === "online" && state.claiming ? "claiming" : state.presence;
    $("presence").textContent = t("presence.line." + line);
    $("claim").querySelector("span").textContent = state.claiming ? t("claim.stop") : t("claim.go");
    $("claim-state").textContent = state.claiming ? t("claim.waiting") : t("claim.idle");
    $("claim").setAttribute("aria-pressed", state.claiming ? "true" : "false");
  }

  async function putPresence(status) {
    const answer = await call("PUT", "/v1/agents/me/presence", { body: { status } });
    state.presence = answer.set;
    showPresence();
  }

  // Signing in is being at the console: online, unless the agent had stepped away and says so still.
  async function arrive() {
    showPresence();
    try {
      const now = await call("GET", "/v1/agents/me/presence");
      await putPresence(now.set === "away" ? "away" : "online");
    } catch (error) {
      if (error.status !== 401) notice(t("presence.failed", { why: explain(error) }));
    }
  }

  async function choosePresence(status) {
    // Away or offline takes no new work: a claim would make the agent online again. A long poll the console gave
    // up on still waits at the service until it sees the connection closed (it checks each second), and the
    // presence call wakes it: said only after that second, the status is not undone by a last look.
    if (status !== "online" && state.claiming) {
      stopClaiming();
      await new Promise((resolve) => setTimeout(resolve, CLAIM_GONE_MS));
    }
    try {
      await putPresence(status);
      notice("");
    } catch (error) {
      showPresence();
      if (error.status !== 401) notice(t("presence.failed", { why: explain(error) }));
    }
  }

  // The service turns a silent agent offline; an open console says its status again well before that.
  function keepPresence() {
    if (!session.signedIn() || state.presence === "offline") return;
    putPresence(state.presence).catch(() => {});
  }

  function stopClaiming() {
    if (state.claiming) state.claiming.abort();
    state.claiming = null;
    showPresence();
  }

  // Long poll: each claim waits up to CLAIM_WAIT seconds and answers the moment work arrives.
  async function claimLoop() {
    if (state.claiming) return;
    const controller = new AbortController();
    state.claiming = controller;
    if (state.presence !== "online") notice(t("presence.claim"));
    state.presence = "online";  // any claim makes the agent online, answered or not
    showPresence();
    try {
      while (!controller.signal.aborted) {
        let ticket;
        try {
          ticket = await call("POST", "/v1/agents/me/claim?wait=" + CLAIM_WAIT, { signal: controller.signal });
        } catch (error) {
          if (error.name === "AbortError" || error.status === 401) break;
          notice(explain(error));
          if (error.status === 409) break;
          await new Promise((resolve) => setTimeout(resolve, 2000));
          continue;
        }
        if (ticket) {
          notice("");
          upsertHeld(ticket);
          if (!state.openId || state.readOnly) openTicket(ticket);
          if (!$("keep").checked) break;
        }
      }
    } finally {
      if (state.claiming === controller) state.claiming = null;
      showPresence();
    }
  }

  // --- the held list ---------------------------------------------------------------------------------------
  function upsertHeld(ticket) {
    const index = state.held.findIndex((item) => item.id === ticket.id);
    if (index >= 0) state.held[index] = ticket;
    else state.held.push(ticket);
    renderHeld();
  }

  function dropHeld(id) {
    state.held = state.held.filter((item) => item.id !== id);
    renderHeld();
  }

  function renderHeld() {
    const list = $("held");
    list.replaceChildren(...state.held.map((ticket) => {
      const nick = (ticket.customer && ticket.customer.nick) || ticket.conversation_id;
      return el("li", {},
        el("button", { type: "button", class: "held-item", "aria-current": ticket.id === state.openId ? "true" : null,
                       dataset: { ticket: ticket.id }, onclick: () => openTicket(ticket) },
          el("span", { class: "tier tier-" + ticket.tier }, ticket.tier),
          el("span", { class: "who" }, nick),
          el("span", { class: "what" }, ticket.primary),
          ticket.unread ? el("span", { class: "unread" }, t("held.unread", { n: ticket.unread })) : null,
          ticket.escalated ? el("span", { class: "escalated" }, "↑ " + t("ticket.escalated")) : null));
    }));
    $("held-count").textContent = state.held.length ? "(" + state.held.length + ")" : "";
    $("held-empty").hidden = state.held.length > 0;
    for (const ticket of state.held) {
      if (ticket.escalated && !state.escalatedSeen.has(ticket.id)) {
        state.escalatedSeen.add(ticket.id);
        notice(t("ticket.escalated.note") + " " + ((ticket.customer && ticket.customer.nick) || ticket.id));
      }
    }
  }

  async function refreshHeld() {
    if (!session.signedIn()) return;
    try {
      const list = await call("GET", "/v1/agents/me/tickets");
      state.held = list.tickets;
      renderHeld();
      const open = state.held.find((ticket) => ticket.id === state.openId);
      if (open) showTicket(open);
      else if (state.openId && !state.readOnly) loseTicket(t("409.ticket_not_held"));
    } catch (error) {
      if (error.status !== 401) notice(explain(error));
    }
  }

  // --- one ticket ------------------------------------------------------------------------------------------
  async function openTicket(ticket) {
    state.openId = ticket.id;
    state.older = [];
    state.readOnly = false;
    state.pendingReply = null;
    $("reply").value = "";
    $("ticket-alert").hidden = true;
    showTicket(ticket);
    renderHeld();
    renderColleagues();
    loadSuggestions(ticket.id);
  }

  function loseTicket(message) {
    state.readOnly = true;
    $("ticket-alert").textContent = message + " " + t("ticket.readonly");
    $("ticket-alert").hidden = false;
    for (const id of ["send", "resolve", "release", "snooze"]) $(id).disabled = true;
    $("transfer-form").querySelector("button").disabled = true;
    dropHeld(state.openId);
  }

  function showTicket(ticket) {
    const changed = !state.open || state.open.id !== ticket.id || state.open.updated_at !== ticket.updated_at ||
      state.open.messages.length !== ticket.messages.length;
    state.open = ticket;
    $("ticket-none").hidden = true;
    $("ticket-body").hidden = false;
    for (const id of ["send", "resolve", "release", "snooze"]) $(id).disabled = state.readOnly;
    $("transfer-form").querySelector("button").disabled = state.readOnly;
    const nick = (ticket.customer && ticket.customer.nick) || ticket.conversation_id;
    $("ticket-title").replaceChildren(
      el("span", { class: "tier tier-" + ticket.tier }, ticket.tier), " ", nick, " · ", ticket.primary,
      ticket.escalated ? el("span", { class: "escalated" }, " ↑ " + t("ticket.escalated")) : "");
    $("ticket-meta").textContent = [ticket.platform, ticket.queue, "priority " + ticket.priority,
      ticket.intents.join(", "), ticket.customer && ticket.customer.vip_level ? "VIP " + ticket.customer.vip_level : ""]
      .filter(Boolean).join(" · ");
    renderLease();
    $("older").hidden = !ticket.messages_before || state.older.length > 0;
    if (changed) renderThread();
  }

  function renderLease() {
    const ticket = state.open;
    if (!ticket || !ticket.lease_expires_at || state.readOnly) {
      $("ticket-lease").textContent = "";
      return;
    }
    const left = (new Date(ticket.lease_expires_at) - Date.now()) / 1000;
    $("ticket-lease").textContent = t("ticket.lease", { s: Triage.seconds(Math.max(0, left)) });
  }

  function renderThread() {
    const thread = $("thread");
    const messages = [...state.older, ...state.open.messages];
    thread.replaceChildren(...messages.map(renderMessage));
    thread.scrollTop = thread.scrollHeight;
  }

  function renderMessage(message) {
    const inbound = message.direction === "inbound";
    const triage = message.triage;
    return el("li", { class: "msg " + (inbound ? "in" : "out"), dataset: { message: message.id } },
      el("p", { class: "who" }, inbound ? t("thread.buyer") : t("thread.agent"), " · ", Triage.time(message.sent_at),
        message.order_id ? " · " + message.order_id : ""),
      el("p", { class: "text" }, inbound && triage ? highlighted(message.text, triage) : message.text),
      inbound && triage ? triageLine(triage) : null);
  }

  // The evidence spans ({start, end} in code points of the original text) as <mark>s naming their rule.
  function highlighted(text, triage) {
    const chars = Array.from(text);
    const spans = [];
    for (const hit of triage.intents || []) {
      for (const ev of hit.evidence || []) {
        if (ev.end > ev.start) spans.push({ start: ev.start, end: ev.end, intent: hit.intent, tier: hit.tier, rule: ev.rule });
      }
    }
    spans.sort((a, b) => a.start - b.start || b.end - a.end);
    const parts = [];
    let at = 0;
    for (const span of spans) {
      if (span.start < at) continue; // overlapping evidence: the earlier, longer span is shown
      if (span.start > at) parts.push(chars.slice(at, span.start).join(""));
      parts.push(el("mark", { class: "ev tier-" + span.tier, title: span.intent + " · " + span.rule,
                              dataset: { rule: span.rule, intent: span.intent } },
        chars.slice(span.start, span.end).join("")));
      at = span.end;
    }
    parts.push(chars.slice(at).join(""));
    return parts;
  }

  function triageLine(triage) {
    const rules = [...new Set((triage.intents || []).flatMap((hit) => (hit.evidence || []).map((ev) => ev.rule)))];
    return el("div", { class: "triage" },
      el("span", { class: "tier tier-" + triage.tier }, triage.tier),
      el("span", { class: "chip" }, "P " + triage.priority),
      ...(triage.intents || []).map((hit, i) => el("span", { class: i === 0 ? "chip primary" : "chip" }, hit.intent)),
      el("span", { class: "chip emo-" + triage.emotion }, triage.emotion),
      triage.urgent ? el("span", { class: "chip urgent" }, t("thread.urgent")) : null,
      el("span", { class: "chip" }, triage.language),
      rules.length ? el("span", { class: "why" }, t("thread.evidence", { rules: rules.join(", ") })) : null);
  }

  async function loadOlder() {
    const before = state.open && state.open.messages_before;
    if (!before) return;
    try {
      const page = await call("GET", "/v1/tickets/" + state.open.id + "/messages?before=" + before + "&limit=200");
      state.older = page.messages;
      $("older").hidden = true;
      renderThread();
    } catch (error) {
      notice(explain(error, "ticket"));
    }
  }

  async function loadSuggestions(id) {
    try {
      const found = await call("GET", "/v1/tickets/" + id + "/suggestions");
      if (state.openId !== id) return;
      state.suggestions = found.suggestions;
      $("suggestions").replaceChildren(...(found.suggestions.length ? found.suggestions.map((s, i) =>
        el("li", {},
          el("button", { type: "button", class: "suggestion" + (s.apology ? " apology" : ""),
                         onclick: () => useSuggestion(i) },
            el("kbd", {}, String(i + 1)), " ", s.text),
          s.missing.length ? el("span", { class: "hint" }, " " + t("suggest.missing", { names: s.missing.join(", ") })) : null))
        : [el("li", { class: "hint" }, t("suggest.none"))]));
    } catch (error) {
      $("suggestions").replaceChildren(el("li", { class: "hint" }, explain(error, "ticket")));
    }
  }

  function useSuggestion(index) {
    const chosen = state.suggestions[index];
    if (!chosen) return;
    $("reply").value = chosen.text;
    $("reply").focus();
  }

  // --- the holder's writes ---------------------------------------------------------------------------------
  // Refusals after which the agent no longer holds the ticket; any other leaves it held (a hand-over's target
  // offline or full, a 422) and is only said.
  const LOST = new Set(["ticket_not_held", "ticket_already_resolved"]);
  const lostBy = (error) => error.status === 404 || (error.status === 409 && LOST.has(error.code));

  async function heldWrite(path, body, done, refused) {
    if (!state.open || state.readOnly) return;
    const id = state.open.id;
    try {
      const answer = await call("POST", "/v1/tickets/" + id + path, { body, headers: { "Idempotency-Key": newKey() } });
      done(answer);
    } catch (error) {
      if (lostBy(error)) loseTicket(explain(error, "ticket"));
      else notice(refused ? refused(error) : explain(error, "ticket"));
    }
  }

  function closeOpen(message) {
    dropHeld(state.openId);
    state.openId = null;
    state.open = null;
    $("ticket-body").hidden = true;
    $("ticket-none").hidden = false;
    notice(message);
    if (state.held.length) openTicket(state.held[0]);
    if ($("keep").checked && !state.claiming) claimLoop();
  }

  async function sendReply(event) {
    if (event) event.preventDefault();
    const text = $("reply").value.trim();
    if (!text || !state.open || state.readOnly) return;
    // One Idempotency-Key per intended reply: a retry of the same text after a lost answer reuses it, so the
    // buyer never gets the reply twice; a new text is a new attempt with a new key.
    if (!state.pendingReply || state.pendingReply.text !== text || state.pendingReply.ticket !== state.open.id) {
      state.pendingReply = { text, key: newKey(), ticket: state.open.id };
    }
    const { key } = state.pendingReply;
    try {
      const answer = await call("POST", "/v1/tickets/" + state.open.id + "/replies",
                                { body: { text }, headers: { "Idempotency-Key": key } });
      state.pendingReply = null;
      $("reply").value = "";
      notice(t("reply.sent"));
      upsertHeld(answer.ticket);
      showTicket(answer.ticket);
    } catch (error) {
      if (lostBy(error)) {
        state.pendingReply = null;
        loseTicket(explain(error, "ticket"));
      } else {
        notice(explain(error, "ticket"));
      }
    }
  }

  const resolve = () => heldWrite("/resolve", undefined, () => closeOpen(t("act.resolved")));
  const release = () => heldWrite("/release", {}, () => closeOpen(t("act.released")));

  // To a queue, or to a named colleague, who holds the ticket from then on.
  function transfer(event) {
    event.preventDefault();
    const queue = $("transfer-queue").value.trim();
    const agentId = $("transfer-agent").value;
    const reason = $("transfer-reason").value.trim();
    if (agentId) {
      const colleague = state.colleagues.find((c) => c.id === agentId);
      const name = colleague ? colleague.name : agentId;
      return heldWrite("/transfer", { agent_id: agentId, reason }, () => {
        $("transfer-reason").value = "";
        $("transfer-agent").value = "";
        closeOpen(t("act.handed", { name }));
      }, (error) => {
        loadColleagues();  // what made it refuse (presence, queues) is likely news
        return name + " " + explain(error);
      });
    }
    if (!queue) {
      notice(t("transfer.choose"));
      return $("transfer-queue").focus();
    }
    heldWrite("/transfer", { queue, reason }, (answer) => {
      $("transfer-reason").value = "";
      // Still held when the agent serves the new queue too; otherwise it left the agent's hands.
      if (answer.assigned_agent_id && answer.status === "assigned") {
        upsertHeld(answer);
        showTicket(answer);
        notice(t("act.transferred", { queue }));
      } else {
        closeOpen(t("act.transferred", { queue }));
      }
    });
  }

  // When a snoozed ticket comes back by itself (the buyer writing brings it back sooner).
  function snoozeUntil() {
    const choice = $("snooze-for").value;
    if (choice === "at") return $("snooze-at").value ? new Date($("snooze-at").value) : null;
    const at = new Date();
    if (choice === "tomorrow") {
      at.setDate(at.getDate() + 1);
      at.setHours(9, 0, 0, 0);
      return at;
    }
    return new Date(at.getTime() + Number(choice) * 60000);
  }

  function snooze(event) {
    event.preventDefault();
    const until = snoozeUntil();
    if (!until || Number.isNaN(until.getTime())) {
      notice(t("snooze.pick"));
      return $("snooze-at").focus();
    }
    const reason = $("snooze-reason").value.trim();
    heldWrite("/snooze", reason ? { until: until.toISOString(), reason } : { until: until.toISOString() }, (answer) => {
      $("snooze-reason").value = "";
      const back = new Date(answer.snoozed_until || until);
      closeOpen(t("act.snoozed", { time: back.toLocaleString(Triage.lang === "zh" ? "zh-CN" : "en-GB",
                                                              { dateStyle: "short", timeStyle: "short" }) }));
    });
  }

  async function loadColleagues() {
    try {
      state.colleagues = (await call("GET", "/v1/agents/me/colleagues")).agents;
      renderColleagues();
    } catch (error) {
      if (error.status !== 401) notice(explain(error));
    }
  }

  // Each colleague with its presence and queues; those serving the open ticket's queue and at the console first.
  function renderColleagues() {
    const queue = state.open && state.open.queue;
    const rank = (c) => (queue && !c.queues.includes(queue) ? 2 : 0) + (c.presence === "offline" ? 1 : 0);
    const chosen = $("transfer-agent").value;
    const options = [...state.colleagues].sort((a, b) => rank(a) - rank(b)).map((c) => el("option", { value: c.id },
      [c.name, t("presence." + c.presence), c.queues.join(", "),
       queue && !c.queues.includes(queue) ? t("transfer.notserving", { queue }) : ""].filter(Boolean).join(" · ")));
    $("transfer-agent").replaceChildren(el("option", { value: "" }, t("transfer.agent.none")), ...options);
    if (state.colleagues.some((c) => c.id === chosen)) $("transfer-agent").value = chosen;
  }

  // Heartbeats keep the lease while the ticket is open: at a third of the lease left at the latest.
  async function heartbeat() {
    const ticket = state.open;
    if (!ticket || state.readOnly || !ticket.lease_expires_at) return;
    const left = (new Date(ticket.lease_expires_at) - Date.now()) / 1000;
    renderLease();
    if (left > 80) return;
    try {
      const answer = await call("POST", "/v1/tickets/" + ticket.id + "/heartbeat");
      if (state.openId === answer.id) showTicket(answer);
      upsertHeld(answer);
    } catch (error) {
      if (lostBy(error)) loseTicket(explain(error, "ticket"));
    }
  }

  async function loadQueues() {
    try {
      const found = await call("GET", "/v1/queues");
      const names = new Set(found.queues.map((q) => q.name));
      names.add("escalations");
      $("queue-names").replaceChildren(...[...names].map((name) => el("option", { value: name })));
    } catch (error) {
      notice(explain(error));
    }
  }

  // --- keyboard --------------------------------------------------------------------------------------------
  function moveOpen(step) {
    if (!state.held.length) return;
    const index = state.held.findIndex((ticket) => ticket.id === state.openId);
    const next = state.held[(index + step + state.held.length) % state.held.length];
    openTicket(next);
  }

  function onKey(event) {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName);
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.id === "reply") {
      event.preventDefault();
      return sendReply();
    }
    if (event.key === "Escape" && typing) return event.target.blur();
    if (typing || event.ctrlKey || event.metaKey || event.altKey || $("desk").hidden) return;
    const actions = {
      c: () => (state.claiming ? stopClaiming() : claimLoop()),
      r: () => $("reply").focus(),
      e: resolve,
      h: release,
      t: () => $("transfer-queue").focus(),
      p: () => $("presence-set").focus(),
      s: () => $("snooze-for").focus(),
      j: () => moveOpen(1),
      k: () => moveOpen(-1),
      "?": () => $("help").showModal(),
    };
    const action = actions[event.key.toLowerCase()] || (/^[1-5]$/.test(event.key) && (() => useSuggestion(Number(event.key) - 1)));
    if (action) {
      event.preventDefault();
      action();
    }
  }

  // --- start -----------------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("help-open").addEventListener("click", () => $("help").showModal());
    $("claim").addEventListener("click", () => (state.claiming ? stopClaiming() : claimLoop()));
    $("keep").addEventListener("change", () => { if ($("keep").checked) claimLoop(); });
    $("reply-form").addEventListener("submit", sendReply);
    $("resolve").addEventListener("click", resolve);
    $("release").addEventListener("click", release);
    $("transfer-form").addEventListener("submit", transfer);
    $("snooze-form").addEventListener("submit", snooze);
    $("snooze-for").addEventListener("change", () => {
      $("snooze-at-box").hidden = $("snooze-for").value !== "at";
      if (!$("snooze-at-box").hidden) $("snooze-at").focus();
    });
    // One target at a time: a queue typed clears the agent chosen, and the other way round.
    $("transfer-queue").addEventListener("input", () => { $("transfer-agent").value = ""; });
    $("transfer-agent").addEventListener("change", () => { if ($("transfer-agent").value) $("transfer-queue").value = ""; });
    $("presence-set").addEventListener("change", () => choosePresence($("presence-set").value));
    $("older").addEventListener("click", loadOlder);
    document.addEventListener("keydown", onKey);
    setInterval(refreshHeld, REFRESH_MS);
    setInterval(heartbeat, 5000);
    setInterval(keepPresence, PRESENCE_MS);
    // Not while the agent is choosing from the list: new options would close it under the pointer.
    setInterval(() => {
      if (session.signedIn() && document.activeElement !== $("transfer-agent")) loadColleagues();
    }, COLLEAGUES_MS);
    session.start();
  });
})();
