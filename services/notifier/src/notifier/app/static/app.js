// Casebridge staff alerts: sign in, see alerts arrive live, mark them read, enable push, and
// open an alert's case in the staff console. The session is this service's cookie session
// (/session, through the screen kit): no token is ever visible to this script.
import {
  ApiError,
  api,
  clearProblems,
  currentUser,
  el,
  formatDateTime,
  initI18n,
  live,
  markReady,
  showProblem,
  signIn,
  signOut,
  t,
  watchConnection,
} from "/assets/kit/kit.js";

const $ = (id) => document.getElementById(id);
const state = { user: null, last: null, stream: null, config: null, unread: 0 };

async function config() {
  if (!state.config) state.config = await api("/app/config.json");
  return state.config;
}

function status(key) {
  $("status").dataset.key = key || "";
  $("status").textContent = key ? t(key) : "";
}

function stopStream() {
  if (state.stream) state.stream.close();
  state.stream = null;
}

function showLogin(message = "") {
  stopStream();
  state.user = null;
  status("");
  $("inbox").hidden = true;
  $("login").hidden = false;
  clearProblems($("login"));
  $("login-error").textContent = message;
}

function setUnread(n) {
  state.unread = Math.max(0, n);
  $("unread").textContent = String(state.unread);
  if (navigator.setAppBadge) navigator.setAppBadge(state.unread).catch(() => {});
}

function caseLink(item) {
  const url = `${state.config.case_console_url}/cases/${encodeURIComponent(item.case_id)}`;
  return el("a", { href: url, class: "button secondary", "data-i18n": "app.open_case" }, t("app.open_case"));
}

function meta(createdAt, orderId) {
  return `${formatDateTime(createdAt)} · ${t("app.order", { id: orderId.slice(0, 8) })}`;
}

function render(item, { prepend }) {
  const actions = el("div", { class: "actions" }, caseLink(item));
  const li = el(
    "li",
    { id: `case-${item.case_id}-${item.id}`, class: item.read_at ? "read" : "unread", dataset: { id: item.id, seq: item.seq, case: item.case_id } },
    el("h3", { text: item.title }),
    el("p", { text: item.body }),
    el("small", { dataset: { created: item.created_at, order: item.order_id } }, meta(item.created_at, item.order_id)),
    actions,
  );
  if (!item.read_at) {
    const button = el("button", { type: "button", class: "secondary", "data-i18n": "app.mark_read" }, t("app.mark_read"));
    button.addEventListener("click", () => markRead(item.id, li, button));
    actions.append(button);
  }
  const list = $("notifications");
  if (prepend) list.prepend(li);
  else list.append(li);
  $("empty").hidden = true;
}

async function markRead(id, li, button) {
  try {
    await api(`/notifications/${id}/read`, { method: "POST" });
  } catch (_) {
    return; // the banner or the sign-in form says why
  }
  li.className = "read";
  button.remove();
  setUnread(state.unread - 1);
}

// An alert opened from a push notification (/app/#case-<id>): its card is marked and in view.
function showTarget() {
  const match = /^#case-(.+)$/.exec(location.hash);
  if (!match) return;
  const card = document.querySelector(`#notifications li[data-case="${CSS.escape(decodeURIComponent(match[1]))}"]`);
  if (!card) return;
  for (const old of document.querySelectorAll("#notifications li.target")) old.classList.remove("target");
  card.classList.add("target");
  card.scrollIntoView({ block: "center" });
}

function onEvent(event) {
  const item = JSON.parse(event.data);
  if (event.lastEventId) state.last = Number(event.lastEventId);
  if (document.querySelector(`#notifications li[data-id="${item.id}"]`)) return;
  render(item, { prepend: true });
  if (!item.read_at) setUnread(state.unread + 1);
}

function startStream() {
  stopStream();
  // Resumes after the last alert seen (also after the kit re-opens the stream): nothing is missed.
  state.stream = live(() => `/notifications/stream${state.last === null ? "" : `?after=${state.last}`}`, onEvent, {
    events: ["notification"],
    onOpen: () => status("app.live"),
  });
}

async function load() {
  await config();
  let page;
  try {
    page = await api("/notifications?limit=100");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return showLogin(t("kit.session_expired"));
    if (error instanceof ApiError && error.status === 403) return showLogin(t("app.staff_only"));
    throw error;
  }
  $("notifications").replaceChildren();
  $("empty").hidden = page.items.length > 0;
  for (const item of page.items) render(item, { prepend: false });
  setUnread(page.unread);
  state.last = page.stream_position;
  $("login").hidden = true;
  clearProblems($("login")); // an earlier failed attempt is no longer news
  $("who").textContent = t("app.signed_in_as", { name: state.user.name || state.user.email });
  $("inbox").hidden = false;
  startStream();
  showTarget();
}

function base64UrlToBytes(text) {
  const padded = (text + "=".repeat((4 - (text.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

async function enablePush() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    $("push-state").textContent = t("app.push_unsupported");
    return;
  }
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    $("push-state").textContent = t("app.push_blocked");
    return;
  }
  const registration = await navigator.serviceWorker.ready;
  const { public_key: key } = await api("/push/vapid-public-key");
  const subscription = await registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: base64UrlToBytes(key),
  });
  try {
    await api("/push-subscriptions", { method: "POST", json: subscription.toJSON() });
    $("push-state").textContent = t("app.push_on");
  } catch (_) {
    $("push-state").textContent = t("app.push_failed");
  }
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = $("login");
  clearProblems(form);
  try {
    state.user = await signIn($("email").value, $("password").value);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      $("login-error").textContent = t("app.wrong_password");
    } else if (error instanceof ApiError && error.status === 429) {
      // Login throttling (order-intake): the problem says how long to wait.
      $("login-error").textContent = t("app.throttled", { seconds: error.problem.retry_after || 60 });
    } else {
      showProblem(form, error);
    }
    return;
  }
  $("password").value = "";
  await load();
});

$("read-all").addEventListener("click", async () => {
  try {
    await api("/notifications/read-all", { method: "POST" });
  } catch (_) {
    return;
  }
  for (const li of document.querySelectorAll("#notifications li.unread")) {
    li.className = "read";
    li.querySelector("button")?.remove();
  }
  setUnread(0);
});

$("enable-push").addEventListener("click", () => enablePush().catch((e) => ($("push-state").textContent = String(e))));

$("sign-out").addEventListener("click", async () => {
  stopStream();
  try {
    await signOut();
  } finally {
    showLogin();
  }
});

window.addEventListener("session-expired", () => showLogin(t("kit.session_expired")));
window.addEventListener("hashchange", showTarget);
window.addEventListener("language-changed", () => {
  // Texts made by this script follow the language too.
  if ($("status").dataset.key) status($("status").dataset.key);
  if (state.user) $("who").textContent = t("app.signed_in_as", { name: state.user.name || state.user.email });
  for (const small of document.querySelectorAll("#notifications li small")) {
    small.textContent = meta(small.dataset.created, small.dataset.order);
  }
});

if ("serviceWorker" in navigator) navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
// The texts and the session are fetched side by side: one round trip less before the page is usable.
const [, user] = await Promise.all([initI18n("/app/"), currentUser().catch(() => null)]);
watchConnection();
state.user = user;
if (state.user) await load();
else showLogin();
markReady();
