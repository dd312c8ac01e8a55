// Casebridge staff app: sign in, see notifications arrive live, mark them read, enable push.
// The live stream is read with fetch() rather than EventSource, because EventSource cannot
// send the Authorization header; it resumes with Last-Event-ID after a drop.

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("casebridge.token"),
  last: null,
  abort: null,
  config: null,
  refreshing: null,
};

async function config() {
  if (!state.config) state.config = await (await fetch("/app/config.json")).json();
  return state.config;
}

// Access tokens are short (5 minutes); on a 401 the refresh token (rotated on every use) gets a
// new pair once. One refresh at a time: a refresh token presented twice revokes the session.
function signedIn(body) {
  state.token = body.access_token;
  sessionStorage.setItem("casebridge.token", state.token);
  if (body.refresh_token) sessionStorage.setItem("casebridge.refresh", body.refresh_token);
}

async function exchangeRefreshToken() {
  const refreshToken = sessionStorage.getItem("casebridge.refresh");
  if (!refreshToken) return false;
  const { token_url: tokenUrl } = await config();
  const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: refreshToken });
  let response;
  try {
    response = await fetch(tokenUrl, { method: "POST", body: form });
  } catch (_) {
    return false;
  }
  if (!response.ok) {
    sessionStorage.removeItem("casebridge.refresh");
    return false;
  }
  signedIn(await response.json());
  return true;
}

function refreshSession() {
  if (!state.refreshing) state.refreshing = exchangeRefreshToken().finally(() => (state.refreshing = null));
  return state.refreshing;
}

async function api(path, options = {}) {
  const send = () => {
    const headers = { ...(options.headers || {}), Authorization: `Bearer ${state.token}` };
    return fetch(path, { ...options, headers });
  };
  const response = await send();
  if (response.status === 401 && (await refreshSession())) return send();
  return response;
}

function status(text) {
  $("status").textContent = text;
}

function showLogin(message = "") {
  $("inbox").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

function render(item, { prepend }) {
  const li = document.createElement("li");
  li.dataset.id = item.id;
  li.dataset.seq = item.seq;
  li.className = item.read_at ? "read" : "unread";
  const title = document.createElement("h3");
  title.textContent = item.title;
  const body = document.createElement("p");
  body.textContent = item.body;
  const meta = document.createElement("small");
  meta.textContent = `${new Date(item.created_at).toLocaleString()} · order ${item.order_id.slice(0, 8)}`;
  li.append(title, body, meta);
  if (!item.read_at) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Mark read";
    button.addEventListener("click", () => markRead(item.id, li, button));
    li.append(" ", button);
  }
  const list = $("notifications");
  if (prepend) list.prepend(li);
  else list.append(li);
  $("empty").hidden = true;
}

function setUnread(n) {
  $("unread").textContent = String(n);
  if (navigator.setAppBadge) navigator.setAppBadge(n).catch(() => {});
}

async function markRead(id, li, button) {
  const response = await api(`/notifications/${id}/read`, { method: "POST" });
  if (response.ok) {
    li.className = "read";
    button.remove();
    setUnread(Math.max(0, Number($("unread").textContent) - 1));
  }
}

async function load() {
  const response = await api("/notifications?limit=100");
  if (response.status === 401) return showLogin("Your session ended; please sign in again.");
  if (response.status === 403) return showLogin("This app is for staff accounts.");
  const page = await response.json();
  $("notifications").replaceChildren();
  $("empty").hidden = page.items.length > 0;
  for (const item of page.items) render(item, { prepend: false });
  setUnread(page.unread);
  state.last = page.stream_position;
  $("login").hidden = true;
  $("login-error").textContent = ""; // an earlier failed attempt is no longer news
  $("inbox").hidden = false;
  stream();
}

async function stream() {
  if (state.abort) state.abort.abort();
  const abort = new AbortController();
  state.abort = abort;
  const headers = { Accept: "text/event-stream" };
  if (state.last !== null) headers["Last-Event-ID"] = String(state.last);
  try {
    const response = await api("/notifications/stream", { headers, signal: abort.signal });
    if (response.status === 401) return showLogin("Your session ended; please sign in again.");
    if (!response.ok) throw new Error(`stream answered ${response.status}`);
    status("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        handle(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  } catch (error) {
    if (abort.signal.aborted) return;
  }
  if (abort.signal.aborted) return;
  status("reconnecting ...");
  setTimeout(stream, 2000); // resumes after the last event seen: nothing is missed
}

function handle(block) {
  let id = null;
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("id: ")) id = line.slice(4);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return; // a comment (heartbeat) or the retry hint
  const item = JSON.parse(data);
  if (document.querySelector(`li[data-id="${item.id}"]`)) return;
  render(item, { prepend: true });
  if (!item.read_at) setUnread(Number($("unread").textContent) + 1);
  if (id !== null) state.last = Number(id);
}

function base64UrlToBytes(text) {
  const padded = (text + "=".repeat((4 - (text.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

async function enablePush() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    $("push-state").textContent = "This browser cannot receive push notifications.";
    return;
  }
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    $("push-state").textContent = "Notifications are blocked for this site.";
    return;
  }
  const registration = await navigator.serviceWorker.ready;
  const { public_key: key } = await (await fetch("/push/vapid-public-key")).json();
  const subscription = await registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: base64UrlToBytes(key),
  });
  const response = await api("/push-subscriptions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(subscription.toJSON()),
  });
  $("push-state").textContent = response.ok ? "This device gets push notifications." : "Could not register this device.";
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const { token_url: tokenUrl } = await config();
  const form = new URLSearchParams({ username: $("email").value, password: $("password").value });
  let response;
  try {
    response = await fetch(tokenUrl, { method: "POST", body: form });
  } catch (_) {
    $("login-error").textContent = "The sign-in service cannot be reached.";
    return;
  }
  if (response.status === 429) {
    // Login throttling (order-intake): the problem body says how long to wait.
    const problem = await response.json().catch(() => ({}));
    const wait = problem.retry_after ? `${problem.retry_after} seconds` : "a few minutes";
    $("login-error").textContent = `Too many failed sign-ins. Try again in ${wait}.`;
    return;
  }
  if (!response.ok) {
    $("login-error").textContent = "Wrong email or password.";
    return;
  }
  signedIn(await response.json());
  $("password").value = "";
  await load();
});

$("read-all").addEventListener("click", async () => {
  const response = await api("/notifications/read-all", { method: "POST" });
  if (!response.ok) return;
  for (const li of document.querySelectorAll("#notifications li.unread")) {
    li.className = "read";
    li.querySelector("button")?.remove();
  }
  setUnread(0);
});

$("enable-push").addEventListener("click", () => enablePush().catch((e) => ($("push-state").textContent = String(e))));

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem("casebridge.token");
  sessionStorage.removeItem("casebridge.refresh");
  state.token = null;
  if (state.abort) state.abort.abort();
  status("");
  showLogin();
});

if ("serviceWorker" in navigator) navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
if (state.token) load();
else showLogin();
