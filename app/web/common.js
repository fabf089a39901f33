// Shared by /console and /ops: the API client, the interface language, small DOM helpers. No library, no build.
"use strict";

const Triage = (() => {
  const LANG_KEY = "triage.lang";
  let lang = localStorage.getItem(LANG_KEY) || ((navigator.language || "").startsWith("zh") ? "zh" : "en");
  let strings = {};

  function t(key, vars) {
    const entry = strings[key];
    let text = entry ? (entry[lang] || entry.en) : key;
    for (const [name, value] of Object.entries(vars || {})) text = text.split("{" + name + "}").join(String(value));
    return text;
  }

  function translate(root) {
    for (const node of (root || document).querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
    for (const node of (root || document).querySelectorAll("[data-t-placeholder]")) {
      node.placeholder = t(node.dataset.tPlaceholder);
    }
    for (const node of (root || document).querySelectorAll("[data-t-title]")) node.title = t(node.dataset.tTitle);
    document.documentElement.lang = lang === "zh" ? "zh-Hans" : "en";
  }

  function setLanguage(next) {
    lang = next;
    localStorage.setItem(LANG_KEY, next);
    translate();
  }

  // An error the API answered, with its status and code, or a network failure (status 0).
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  // Tokens live for the tab only (sessionStorage), never in localStorage or a cookie.
  function tokenStore(key) {
    return {
      get: () => sessionStorage.getItem(key),
      set: (value) => sessionStorage.setItem(key, value),
      clear: () => sessionStorage.removeItem(key),
    };
  }

  async function api(token, method, path, { body, headers, signal } = {}) {
    const init = { method, signal, headers: { Authorization: "Bearer " + token, ...(headers || {}) } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", t("err.network"));
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(response.status, err.code || "http_" + response.status, err.message || response.statusText,
                         err.details);
    }
    return data;
  }

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // el("li", {class: "x", onclick: f}, "text", child) builds a node; text is always set as text, never HTML.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    const whole = Math.round(value);
    if (whole < 60) return whole + " s";
    if (whole < 3600) return Math.floor(whole / 60) + " min " + (whole % 60) + " s";
    return Math.floor(whole / 3600) + " h " + Math.floor((whole % 3600) / 60) + " min";
  }

  function time(iso) {
    return iso ? new Date(iso).toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB") : "";
  }

  function register(table) {
    Object.assign(strings, table);
  }

  const $ = (id) => document.getElementById(id);

  // The sign-in both pages share: the token form, the board it opens, sign-out, and a 401 on any later call.
  // verify(token) reads what the board needs (an ApiError with status 401 for a token that does not open it);
  // enter(data) shows the board, leave() forgets it (the token is still there to say goodbye with), relabel() redraws what JavaScript wrote after a language switch.
  function page({ tokenKey, board, wrong, expired, verify, enter, leave, relabel }) {
    const token = tokenStore(tokenKey);

    function signOut(message) {
      leave();
      token.clear();
      $(board).hidden = true;
      $("signin").hidden = false;
      $("signout").hidden = true;
      $("signin-error").textContent = message || "";
      $("token").value = "";
      $("token").focus();
    }

    async function signIn(value) {
      let data;
      try {
        data = await verify(value);
      } catch (error) {
        $("signin-error").textContent = error.status === 401 ? t(wrong) : error.message;
        $("token").focus();
        return;
      }
      token.set(value);
      $("signin").hidden = true;
      $(board).hidden = false;
      $("signout").hidden = false;
      enter(data);
    }

    const call = (method, path, options) => api(token.get(), method, path, options).catch((error) => {
      if (error.status === 401) signOut(t(expired));
      throw error;
    });

    // Called by the page once its own handlers are in place.
    function start() {
      translate();
      $("lang").addEventListener("click", () => {
        setLanguage(lang === "zh" ? "en" : "zh");
        if (!$(board).hidden) relabel();
      });
      $("signin-form").addEventListener("submit", (event) => {
        event.preventDefault();
        signIn($("token").value.trim());
      });
      $("signout").addEventListener("click", () => signOut(""));
      if (token.get()) signIn(token.get());
      else $("token").focus();
    }

    return { call, signOut, start, token: () => token.get(), signedIn: () => token.get() !== null && !$(board).hidden };
  }

  // An API refusal in the page's words when it has some ("<status>.<code>", or "<status>.<type>" of the first
  // detail for a 422), else the service's own message.
  function explain(error) {
    const detail = error.details && error.details[0];
    for (const key of [error.status + "." + error.code, detail && detail.type && error.status + "." + detail.type]) {
      if (key && strings[key]) return t(key);
    }
    return error.message;
  }

  // A whole number as a share ("97 %"), or a dash for nothing measured.
  function percent(value) {
    return value === null || value === undefined ? "–" : Math.round(value * 100) + " %";
  }

  register({
    "err.network": { en: "The service did not answer. Check your connection; the action was not confirmed.",
                     zh: "服务没有响应，请检查网络；该操作未被确认。" },
    "lang.switch": { en: "中文", zh: "English" },
    "signout": { en: "Sign out", zh: "退出" },
    "signin.hint": { en: "Kept for this tab only; closing the tab signs you out.",
                     zh: "只保存在当前标签页，关闭标签页即退出。" },
    "signin.go": { en: "Sign in", zh: "登录" },
  });

  return { t, translate, setLanguage, get lang() { return lang; }, api, ApiError, newKey, el, seconds, time, register,
           $, page, explain, percent };
})();
