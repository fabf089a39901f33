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

  register({
    "err.network": { en: "The service did not answer. Check your connection; the action was not confirmed.",
                     zh: "服务没有响应，请检查网络；该操作未被确认。" },
    "lang.switch": { en: "中文", zh: "English" },
    "signout": { en: "Sign out", zh: "退出" },
  });

  return { t, translate, setLanguage, get lang() { return lang; }, api, ApiError, tokenStore, newKey, el, seconds,
           time, register };
})();
