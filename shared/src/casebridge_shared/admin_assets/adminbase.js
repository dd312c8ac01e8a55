// The admin pages' plumbing (order-intake and notifier /admin/): sign-in, API calls with
// problem+json, i18n, locale formats. It keeps to the screen kit's names (api, ApiError,
// showProblem, clearProblems, t, formatMoney, formatDateTime) so the pages can move onto
// /assets/kit/kit.js once that is in every service. The access token lives in this module's
// memory only (never localStorage/sessionStorage): a reload asks to sign in again.

const session = { token: null, refresh: null, tokenUrl: null, claims: null };
let dict = {};
let lang = "en";
const LANGS = ["en", "zh-CN"];

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function t(key, vars = {}) {
  const text = dict[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

export function language() {
  return lang;
}

export function applyI18n(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(",")) {
      const [attr, key] = pair.split(":");
      el.setAttribute(attr.trim(), t(key.trim()));
    }
  }
}

async function loadDictionary(base, wanted) {
  const response = await fetch(`${base}i18n/${wanted}.json`, { credentials: "same-origin" });
  dict = response.ok ? await response.json() : {};
  lang = wanted;
  document.documentElement.lang = wanted;
  applyI18n();
}

// The choice is a preference, not a secret: remembered like the kit does.
export async function initI18n(base, onChange = () => {}) {
  const stored = localStorage.getItem("casebridge.lang");
  const browser = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
  await loadDictionary(base, LANGS.includes(stored) ? stored : browser);
  for (const picker of document.querySelectorAll("select[data-language-picker]")) {
    picker.value = lang;
    picker.addEventListener("change", async () => {
      localStorage.setItem("casebridge.lang", picker.value);
      await loadDictionary(base, picker.value);
      onChange();
    });
  }
}

export function formatMoney(amount, currency) {
  try {
    return new Intl.NumberFormat(lang, { style: "currency", currency }).format(Number(amount));
  } catch (_) {
    return `${amount} ${currency}`;
  }
}

export function formatDateTime(iso) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
}

function claimsOf(token) {
  // Only to choose what to show; every call is still checked by the server.
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(decodeURIComponent(escape(atob(part))));
}

function keep(body) {
  session.token = body.access_token;
  session.refresh = body.refresh_token || session.refresh;
  session.claims = claimsOf(body.access_token);
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  return { title: response.statusText, status: response.status };
}

export async function signIn(tokenUrl, email, password) {
  session.tokenUrl = tokenUrl;
  const form = new URLSearchParams({ username: email, password });
  const response = await fetch(tokenUrl, { method: "POST", body: form });
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  keep(await response.json());
  return currentUser();
}

export function signOut() {
  session.token = session.refresh = session.claims = null;
}

export function currentUser() {
  if (!session.claims) return null;
  const roles = session.claims.roles || [];
  return { subject: session.claims.sub, email: session.claims.email, roles };
}

async function refreshOnce() {
  if (!session.refresh || !session.tokenUrl) return false;
  const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: session.refresh });
  const response = await fetch(session.tokenUrl, { method: "POST", body: form });
  if (!response.ok) return false;
  keep(await response.json());
  return true;
}

export async function api(path, { method = "GET", json, headers = {} } = {}) {
  const send = () => {
    const all = { ...headers, Accept: "application/json" };
    if (session.token) all.Authorization = `Bearer ${session.token}`;
    const init = { method, headers: all };
    if (json !== undefined) {
      all["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    return fetch(path, init);
  };
  let response;
  try {
    response = await send();
    if (response.status === 401 && (await refreshOnce())) response = await send();
  } catch (_) {
    throw new ApiError(0, { title: t("common.offline"), detail: t("common.offline") });
  }
  if (response.status === 401) window.dispatchEvent(new Event("session-expired"));
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  return response.status === 204 ? null : response.json();
}

export function clearProblems(form) {
  for (const el of form.querySelectorAll(".field-error")) el.remove();
  for (const el of form.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
    el.removeAttribute("aria-describedby");
  }
  const alert = form.querySelector("[role=alert]");
  if (alert) alert.textContent = "";
}

// Each errors[].reason goes next to the input its field names (last path segment, or the
// segment before a list index); the problem's detail goes into the form's alert.
export function showProblem(form, error) {
  clearProblems(form);
  const problem = (error && error.problem) || {};
  for (const item of problem.errors || []) {
    const parts = String(item.field || "").split(".").filter((p) => !/^\d+$/.test(p));
    const name = parts[parts.length - 1];
    const input = name && form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (!input) continue;
    const note = document.createElement("p");
    note.className = "field-error";
    note.id = `${form.id}-${name}-error`;
    note.textContent = item.reason;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", note.id);
    input.closest("label, fieldset, .field")?.append(note) ?? input.after(note);
  }
  const alert = form.querySelector("[role=alert]");
  if (alert) alert.textContent = problem.detail || problem.title || String(error);
}
