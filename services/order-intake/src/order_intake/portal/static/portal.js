// The customer portal: one page, client-side routes under real paths (/portal/orders/<id> works
// from an email link). Talks only to order-intake's API, signed in by the browser session
// cookies (the kit adds the CSRF header); no token is ever kept in script-readable storage.
import {
  api,
  signIn,
  signOut,
  currentUser,
  showProblem,
  clearProblems,
  initI18n,
  applyI18n,
  t,
  formatMoney,
  formatDate,
  formatDateTime,
  live,
  watchConnection,
  markReady,
  formKey,
  formCreated,
} from "/assets/kit/kit.js";

const BASE = "/portal/";
const main = document.getElementById("main");
let user = null; // {subject, email, name, roles} or null
let config = { max_file_bytes: 20 * 1024 * 1024, allowed_types: [], files_per_upload: 10 };
let leaveView = () => {}; // closes the live stream of the view being left
let renderedPath = null;

// --- small helpers ---------------------------------------------------------------------

function slot(root, name) {
  return root.querySelector(`[data-slot="${name}"]`);
}

function clone(id) {
  return document.getElementById(id).content.cloneNode(true);
}

function statusLabel(status) {
  return t(`status.${status}`);
}

/** Server-written timeline titles are English; show the customer's language where we know them. */
function timelineText(text) {
  if (!text) return text;
  const key = `timeline.${text}`;
  const translated = t(key);
  return translated === key ? text : translated;
}

function fileSize(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 ? 0 : 1;
  return `${new Intl.NumberFormat(document.documentElement.lang || "en", { maximumFractionDigits: digits }).format(value)} ${units[unit]}`;
}

function shortId(id) {
  return id.slice(0, 8).toUpperCase();
}

function itemsOf(body) {
  if (Array.isArray(body)) return body;
  return (body && body.items) || [];
}

function setTitle(text) {
  document.title = `${text} · ${t("portal.brand")}`;
}

function showNotice(root, text) {
  const notice = slot(root, "notice");
  if (!notice) return;
  notice.textContent = text;
  notice.hidden = !text;
}

/** Run an async form action once at a time: the button is disabled meanwhile (no double orders). */
function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.dataset.busy) return;
    form.dataset.busy = "1";
    const buttons = form.querySelectorAll("button[type=submit]");
    buttons.forEach((b) => (b.disabled = true));
    clearProblems(form);
    try {
      await action(new FormData(form));
    } catch (error) {
      if (error && error.problem !== undefined) {
        showProblem(form, error);
      } else {
        showProblem(form, { status: 500, problem: { detail: t("error.title") } });
        throw error; // a bug in the page: shown, and reported to the console
      }
    } finally {
      delete form.dataset.busy;
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

// --- routing ---------------------------------------------------------------------------

const ROUTES = [
  { pattern: /^sign-in$/, view: signInView },
  { pattern: /^register$/, view: registerView },
  { pattern: /^reset-password$/, view: resetPasswordView },
  { pattern: /^profile$/, view: profileView, signedIn: true },
  { pattern: /^catalog$/, view: catalogView },
  { pattern: /^catalog\/([0-9A-Za-z-]{1,36})$/, view: orderProductView, signedIn: true },
  { pattern: /^orders$/, view: ordersView, signedIn: true },
  { pattern: /^orders\/([0-9A-Za-z-]{1,36})$/, view: orderView, signedIn: true },
];

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

function signInFirst() {
  const next = location.pathname + location.search;
  navigate(`${BASE}sign-in?next=${encodeURIComponent(next)}`, { replace: true });
}

async function render() {
  leaveView();
  leaveView = () => {};
  const path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "";
  let route = path.replace(/\/$/, "");
  if (route === "") {
    // The start page: a signed-in customer's orders, everyone else the catalog.
    route = user ? "orders" : "catalog";
    history.replaceState(null, "", `${BASE}${route}`);
  }
  const params = new URLSearchParams(location.search);
  const samePage = renderedPath === location.pathname;
  renderedPath = location.pathname;
  for (const r of ROUTES) {
    const match = route.match(r.pattern);
    if (!match) continue;
    if (r.signedIn && !user) {
      signInFirst();
      return;
    }
    main.replaceChildren();
    main.setAttribute("aria-busy", "true"); // until the view has its data (tests wait on it too)
    try {
      await r.view(params, ...match.slice(1));
    } catch (error) {
      if (error && error.status === 401) return; // session-expired takes the customer to sign in
      showLoadError(error);
    } finally {
      main.removeAttribute("aria-busy");
      for (const button of main.querySelectorAll("button[type=submit]")) button.disabled = false;
    }
    focusHeading(samePage);
    return;
  }
  main.replaceChildren(clone("view-not-found"));
  applyI18n(main);
  setTitle(t("notFound.title"));
  focusHeading(samePage);
}

function showLoadError(error) {
  const notFound = error && error.status === 404;
  const heading = document.createElement("h1");
  heading.tabIndex = -1;
  heading.textContent = t(notFound ? "notFound.title" : "error.title");
  const text = document.createElement("p");
  text.setAttribute("role", "alert");
  text.textContent = notFound ? "" : (error && error.problem && error.problem.detail) || t("error.network");
  main.replaceChildren(heading, text);
  setTitle(heading.textContent);
}

/** After a route change, keyboard and screen-reader users land on the new view's heading. */
function focusHeading(samePage) {
  if (samePage) return; // a re-render (language change) keeps the focus where it is
  const heading = main.querySelector("h1");
  if (heading) heading.focus({ preventScroll: false });
}

function mount(templateId, title) {
  const view = clone(templateId);
  applyI18n(view);
  // Until the view has its data and handlers, a submit must not fall through to a native GET
  // (that would put what was typed, a password even, into the URL).
  for (const form of view.querySelectorAll("form")) {
    form.addEventListener("submit", (event) => event.preventDefault());
  }
  for (const button of view.querySelectorAll("button[type=submit]")) button.disabled = true;
  main.replaceChildren(view);
  if (title) setTitle(title);
  return main;
}

// Links inside the portal change the view without a reload; everything else is left alone.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  if (link.hasAttribute("download") || link.target) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(BASE)) return;
  if (/\.[a-z]+$/i.test(url.pathname)) return; // a file, not a view
  event.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", () => render());

function refreshHeader() {
  for (const el of document.querySelectorAll("[data-when]")) {
    el.hidden = (el.dataset.when === "signed-in") !== Boolean(user);
  }
}

// --- views -----------------------------------------------------------------------------

/** Keep "where the customer was going" on the links between sign-in and register. */
function carryNext(root, params, target) {
  const next = params.get("next");
  const link = root.querySelector(`a[href="${BASE}${target}"]`);
  if (next && link) link.setAttribute("href", `${BASE}${target}?next=${encodeURIComponent(next)}`);
}

function signInView(params) {
  const root = mount("view-sign-in", t("signIn.title"));
  carryNext(root, params, "register");
  if (params.get("expired")) showNotice(root, t("signIn.expired"));
  if (params.get("changed")) showNotice(root, t("signIn.passwordChanged"));
  const form = root.querySelector("#sign-in-form");
  onSubmit(form, async (data) => {
    user = await signIn(String(data.get("email")), String(data.get("password")));
    if (!user) user = await currentUser();
    refreshHeader();
    const next = params.get("next");
    // Only a path inside the portal: never an open redirect.
    navigate(next && next.startsWith(BASE) && !next.startsWith("//") ? next : `${BASE}orders`, {
      replace: true,
    });
  });
}

function registerView(params) {
  const root = mount("view-register", t("register.title"));
  carryNext(root, params, "sign-in");
  const form = root.querySelector("#register-form");
  onSubmit(form, async (data) => {
    const body = {
      email: String(data.get("email")),
      password: String(data.get("password")),
      full_name: String(data.get("full_name")),
    };
    const phone = String(data.get("phone") || "").trim();
    if (phone) body.phone = phone;
    // A retry after a lost answer is answered with the account it created (scoped to the email).
    await api("/auth/register", { method: "POST", json: body, idempotencyKey: formKey(form) });
    formCreated(form);
    user = await signIn(body.email, body.password);
    if (!user) user = await currentUser();
    refreshHeader();
    const next = params.get("next");
    navigate(next && next.startsWith(BASE) && !next.startsWith("//") ? next : `${BASE}catalog`, {
      replace: true,
    });
  });
}

function resetPasswordView(params) {
  const token = params.get("token");
  if (!token) {
    const root = mount("view-forgot-password", t("forgot.title"));
    const form = root.querySelector("#forgot-form");
    onSubmit(form, async (data) => {
      await api("/auth/password-reset", { method: "POST", json: { email: String(data.get("email")) } });
      slot(root, "notice").hidden = false;
      form.hidden = true;
      slot(root, "notice").focus?.();
    });
    return;
  }
  const root = mount("view-reset-password", t("reset.title"));
  const form = root.querySelector("#reset-form");
  onSubmit(form, async (data) => {
    await api("/auth/password-reset/confirm", {
      method: "POST",
      json: { token, new_password: String(data.get("new_password")) },
    });
    form.hidden = true;
    slot(root, "notice").hidden = false;
  });
}

async function profileView() {
  const root = mount("view-profile", t("profile.title"));
  const me = await api("/me");
  slot(root, "email").textContent = me.email;
  const form = root.querySelector("#profile-form");
  form.elements.full_name.value = me.full_name || "";
  form.elements.phone.value = me.phone || "";
  onSubmit(form, async (data) => {
    slot(form, "saved").hidden = true;
    const phone = String(data.get("phone") || "").trim();
    const saved = await api("/me", {
      method: "PATCH",
      json: { full_name: String(data.get("full_name")).trim(), phone: phone || null },
    });
    user = { ...user, name: saved.full_name };
    slot(form, "saved").hidden = false;
  });
  const passwordForm = root.querySelector("#password-form");
  onSubmit(passwordForm, async (data) => {
    await api("/me/password", {
      method: "POST",
      json: {
        current_password: String(data.get("current_password")),
        new_password: String(data.get("new_password")),
      },
    });
    // Changing the password ends every session, this one too: sign in again with the new one.
    await signOut().catch(() => {});
    user = null;
    refreshHeader();
    navigate(`${BASE}sign-in?changed=1`, { replace: true });
  });
}

async function catalogView() {
  const root = mount("view-catalog", t("catalog.title"));
  const page = await api("/products?limit=100");
  const list = slot(root, "products");
  for (const product of itemsOf(page)) {
    const card = clone("product-card");
    applyI18n(card);
    slot(card, "title").textContent = product.title;
    slot(card, "price").textContent = formatMoney(product.price, product.currency);
    slot(card, "description").textContent = product.description;
    const deliverables = slot(card, "deliverables");
    for (const d of product.deliverables || []) {
      const li = document.createElement("li");
      li.textContent = d;
      deliverables.append(li);
    }
    const order = slot(card, "order");
    order.href = `${BASE}catalog/${product.id}`;
    order.setAttribute("aria-label", `${t("catalog.order")}: ${product.title}`);
    list.append(card);
  }
  slot(root, "empty").hidden = list.children.length > 0;
}

async function orderProductView(_params, productId) {
  const root = mount("view-order-product");
  const product = await api(`/products/${encodeURIComponent(productId)}`);
  setTitle(product.title);
  slot(root, "title").textContent = product.title;
  slot(root, "price").textContent = formatMoney(product.price, product.currency);
  slot(root, "description").textContent = product.description;
  const form = root.querySelector("#order-form");
  const picker = filePicker(form);
  // One key per order being placed: a double click or a retry after a lost answer replays it.
  let idempotencyKey = crypto.randomUUID();
  onSubmit(form, async (data) => {
    if (!picker.valid()) {
      showProblem(form, { status: 422, problem: { detail: t("files.fixErrors") } });
      return;
    }
    const order = await api("/orders", {
      method: "POST",
      json: { product_id: product.id, description: String(data.get("description")) },
      idempotencyKey,
    });
    idempotencyKey = crypto.randomUUID();
    let failed = null;
    if (picker.files().length) {
      try {
        await picker.upload(order.id);
      } catch (error) {
        failed = error;
      }
    }
    // The order stands either way; files that did not arrive can be added on the order's page.
    const query = failed ? "?files=failed" : "?placed=1";
    navigate(`${BASE}orders/${order.id}${query}`);
  });
}

/** The file part of a form: several files, drag and drop, per-file checks, upload with progress. */
function filePicker(form) {
  const input = form.querySelector("input[type=file]");
  const dropzone = slot(form, "dropzone");
  const list = slot(form, "file-list");
  const progress = slot(form, "progress");
  const limits = slot(form, "limits");
  let chosen = [];
  let uploadKey = crypto.randomUUID(); // one per upload of the chosen files
  limits.textContent = t("files.limits", {
    size: fileSize(config.max_file_bytes),
    types: t("files.types"),
  });

  function problemOf(file) {
    if (file.size > config.max_file_bytes) {
      return t("files.tooLarge", { size: fileSize(config.max_file_bytes) });
    }
    if (file.size === 0) return t("files.empty");
    if (config.allowed_types.length && !config.allowed_types.includes(file.type)) {
      return t("files.wrongType");
    }
    return "";
  }

  function draw() {
    list.replaceChildren();
    chosen.forEach((entry, index) => {
      const row = clone("file-row");
      applyI18n(row);
      const li = row.querySelector("li");
      li.id = `${input.id}-file-${index}`;
      slot(row, "name").textContent = entry.file.name;
      slot(row, "size").textContent = fileSize(entry.file.size);
      const error = slot(row, "error");
      error.textContent = entry.error;
      if (entry.error) li.classList.add("invalid");
      const remove = slot(row, "remove");
      remove.setAttribute("aria-label", `${t("files.remove")}: ${entry.file.name}`);
      remove.addEventListener("click", () => {
        chosen.splice(index, 1);
        recheck();
        draw();
        input.focus();
      });
      list.append(row);
    });
  }

  function recheck() {
    // Another choice of files is another upload: a key is for retrying the same one.
    uploadKey = crypto.randomUUID();
    chosen = chosen.map((entry, index) => ({
      file: entry.file,
      error:
        index >= config.files_per_upload
          ? t("files.tooMany", { count: config.files_per_upload })
          : problemOf(entry.file),
    }));
  }

  function add(files) {
    for (const file of files) chosen.push({ file, error: "" });
    recheck();
    draw();
  }

  input.addEventListener("change", () => {
    add(input.files);
    input.value = ""; // choosing the same file again adds it again, like a drop
  });
  for (const type of ["dragenter", "dragover"]) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    dropzone.addEventListener(type, () => dropzone.classList.remove("dragging"));
  }
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files) add(event.dataTransfer.files);
  });

  return {
    files: () => chosen.map((entry) => entry.file),
    valid: () => chosen.every((entry) => !entry.error),
    clear: () => {
      chosen = [];
      uploadKey = crypto.randomUUID();
      draw();
      progress.hidden = true;
    },
    async upload(orderId) {
      const body = new FormData();
      for (const entry of chosen) body.append("files", entry.file, entry.file.name);
      progress.hidden = false;
      progress.value = 0;
      try {
        const uploaded = await api(`/orders/${orderId}/files`, {
          method: "POST",
          body,
          idempotencyKey: uploadKey, // a retry of the same files after a lost answer stores them once
          onUploadProgress: (event) => {
            if (event.lengthComputable) progress.value = Math.round((100 * event.loaded) / event.total);
          },
        });
        uploadKey = crypto.randomUUID();
        return uploaded;
      } catch (error) {
        // A problem that names a file ("files[1]" or the file's name) is shown on that file's row.
        for (const e of (error.problem && error.problem.errors) || []) {
          const at = String(e.field || "").match(/(\d+)\]?$/);
          const index = at ? Number(at[1]) : chosen.findIndex((c) => c.file.name === e.field);
          if (index >= 0 && chosen[index]) chosen[index].error = e.reason;
        }
        draw();
        throw error;
      }
    },
  };
}

async function ordersView(params) {
  const root = mount("view-orders", t("orders.title"));
  const filter = root.querySelector("#orders-filter");
  const select = filter.elements.status;
  select.value = params.get("status") || "";
  const rows = slot(root, "rows");
  const more = slot(root, "more");
  let offset = 0;
  const limit = 20;

  async function load(reset) {
    if (reset) {
      offset = 0;
      rows.replaceChildren();
    }
    const query = new URLSearchParams({ limit: String(limit), offset: String(offset) });
    if (select.value) query.set("status", select.value);
    const page = await api(`/orders?${query}`);
    for (const order of itemsOf(page)) {
      const tr = document.createElement("tr");
      const service = document.createElement("td");
      service.dataset.label = t("orders.service");
      const link = document.createElement("a");
      link.href = `${BASE}orders/${order.id}`;
      link.textContent = order.product_title;
      service.append(link);
      const number = document.createElement("td");
      number.dataset.label = t("orders.number");
      number.textContent = shortId(order.id);
      const status = document.createElement("td");
      status.dataset.label = t("orders.status");
      const badge = document.createElement("span");
      badge.className = `status status-${order.status}`;
      badge.textContent = statusLabel(order.status);
      status.append(badge);
      const placed = document.createElement("td");
      placed.dataset.label = t("orders.placed");
      placed.textContent = formatDate(order.created_at);
      tr.append(service, number, status, placed);
      rows.append(tr);
    }
    offset += limit;
    const total = page.total ?? rows.children.length;
    slot(root, "count").textContent = t("orders.count", { count: total });
    slot(root, "empty").hidden = total > 0;
    root.querySelector("table").hidden = total === 0;
    more.hidden = rows.children.length >= total;
  }

  select.addEventListener("change", () => {
    const url = select.value ? `${BASE}orders?status=${select.value}` : `${BASE}orders`;
    history.replaceState(null, "", url);
    load(true);
  });
  filter.addEventListener("submit", (event) => event.preventDefault());
  more.addEventListener("click", () => load(false));
  await load(true);
}

async function orderView(params, orderId) {
  const root = mount("view-order");
  const base = `/orders/${encodeURIComponent(orderId)}`;
  let order = null;
  let solutionReceiptSent = false;

  if (params.get("placed")) showNotice(root, t("order.placed"));
  if (params.get("files") === "failed") showNotice(root, t("files.failedAfterOrder"));

  function drawOrder() {
    setTitle(order.product.title);
    slot(root, "title").textContent = order.product.title;
    slot(root, "number").textContent = shortId(order.id);
    const status = slot(root, "status");
    status.className = `status status-${order.status}`;
    status.textContent = statusLabel(order.status);
    slot(root, "placed").textContent = formatDateTime(order.created_at);
    slot(root, "price").textContent = formatMoney(order.product.price, order.product.currency);
    slot(root, "description").textContent = order.description;

    const timeline = slot(root, "timeline");
    timeline.replaceChildren();
    for (const step of order.progress) {
      const li = document.createElement("li");
      const time = document.createElement("time");
      time.dateTime = step.at;
      time.textContent = formatDateTime(step.at);
      const title = document.createElement("strong");
      title.textContent = timelineText(step.title);
      li.append(time, title);
      if (step.detail) {
        const detail = document.createElement("p");
        detail.textContent = timelineText(step.detail);
        li.append(detail);
      }
      timeline.append(li);
    }

    const solution = slot(root, "solution");
    solution.hidden = !order.solution;
    if (order.solution) {
      slot(root, "solution-summary").textContent = order.solution.summary;
      slot(root, "solution-text").textContent = order.solution.text || order.solution.summary;
    }
    slot(root, "cancel").hidden = order.status !== "submitted";
    slot(root, "attach").hidden = ["completed", "cancelled"].includes(order.status);
  }

  async function loadOrder() {
    order = await api(base);
    drawOrder();
  }

  async function loadDocuments() {
    const list = slot(root, "documents");
    const documents = itemsOf(await api(`${base}/documents`));
    list.replaceChildren();
    for (const doc of documents) {
      const li = document.createElement("li");
      if (doc.status === "available") {
        const link = document.createElement("a");
        link.href = `${base}/documents/${doc.id}`;
        link.setAttribute("download", doc.file_name);
        link.textContent = doc.file_name;
        link.addEventListener("click", () => receipt({ item: "document", document_id: doc.id }));
        li.append(link, ` (${fileSize(doc.size)})`);
      } else {
        li.textContent = `${doc.file_name}: ${t(doc.status === "pending" ? "order.documentPending" : "order.documentRejected")}`;
      }
      list.append(li);
    }
    slot(root, "no-documents").hidden = documents.length > 0;
  }

  async function loadFiles() {
    const list = slot(root, "files");
    let files = [];
    try {
      files = itemsOf(await api(`${base}/files`));
    } catch (error) {
      if (error && error.status === 404) files = [];
      else throw error;
    }
    list.replaceChildren();
    for (const file of files) {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.href = `${base}/files/${file.id}`;
      link.setAttribute("download", file.file_name);
      link.textContent = file.file_name;
      li.append(link, ` (${fileSize(file.size)})`);
      list.append(li);
    }
    slot(root, "no-files").hidden = files.length > 0;
  }

  async function loadMessages() {
    const list = slot(root, "messages");
    let messages = [];
    try {
      messages = itemsOf(await api(`${base}/messages`));
    } catch (error) {
      if (error && error.status === 404) messages = [];
      else throw error;
    }
    list.replaceChildren();
    for (const message of messages) {
      const li = document.createElement("li");
      // On the customer's own order, "customer" is always this customer.
      const mine = message.author === "customer";
      li.className = mine ? "message mine" : "message theirs";
      const who = document.createElement("strong");
      who.textContent = mine ? t("messages.you") : message.author_name || t("messages.team");
      if (message.source === "communication") {
        // A contact staff recorded (a call, a letter) that they chose to show the customer.
        who.textContent += ` · ${t("messages.communication")}`;
      }
      const time = document.createElement("time");
      time.dateTime = message.at;
      time.textContent = formatDateTime(message.at);
      const body = document.createElement("p");
      body.className = "prewrap";
      body.textContent = message.body;
      li.append(who, " ", time, body);
      list.append(li);
    }
    slot(root, "no-messages").hidden = messages.length > 0;
  }

  function receipt(body) {
    // Best effort: a receipt that does not arrive must never stop the customer reading.
    api(`${base}/receipts`, { method: "POST", json: body }).catch(() => {});
  }

  await Promise.all([loadOrder(), loadDocuments(), loadFiles(), loadMessages()]);

  const details = slot(root, "solution-details");
  details.addEventListener("toggle", () => {
    if (details.open && !solutionReceiptSent) {
      solutionReceiptSent = true;
      receipt({ item: "solution" });
    }
  });

  const messageForm = root.querySelector("#message-form");
  let messageKey = crypto.randomUUID(); // a retry of the same message posts it once
  onSubmit(messageForm, async (data) => {
    await api(`${base}/messages`, {
      method: "POST",
      json: { body: String(data.get("body")) },
      idempotencyKey: messageKey,
    });
    messageKey = crypto.randomUUID();
    messageForm.reset();
    await loadMessages();
  });

  const attachForm = root.querySelector("#attach-form");
  const picker = filePicker(attachForm);
  onSubmit(attachForm, async () => {
    if (!picker.files().length || !picker.valid()) {
      showProblem(attachForm, {
        status: 422,
        problem: { detail: t(picker.files().length ? "files.fixErrors" : "files.noneChosen") },
      });
      return;
    }
    await picker.upload(orderId);
    picker.clear();
    await loadFiles();
  });

  const cancelForm = root.querySelector("#cancel-form");
  onSubmit(cancelForm, async (data) => {
    const reason = String(data.get("reason") || "").trim();
    order = await api(`${base}/cancel`, { method: "POST", json: reason ? { reason } : {} });
    drawOrder();
  });

  // Live: each change to the order arrives as an event; re-read what it may have changed.
  let showing = true; // a late event after leaving the page must not touch the next view
  const refresh = () => {
    if (!showing) return;
    loadOrder().catch(() => {});
    loadDocuments().catch(() => {});
    loadMessages().catch(() => {});
    loadFiles().catch(() => {});
  };
  // onOpen: after a lost connection, catch up on what happened meanwhile.
  let opened = false;
  const stream = live(`${base}/stream`, refresh, {
    events: ["order-updated"],
    onOpen: () => {
      if (opened) refresh();
      opened = true;
    },
  });
  leaveView = () => {
    showing = false;
    if (stream && typeof stream.close === "function") stream.close();
  };
}

// --- start -----------------------------------------------------------------------------

async function start() {
  watchConnection();
  // Independent of each other: fetched at once (the first view waits for all three).
  const [, loadedConfig, signedIn] = await Promise.all([
    initI18n(BASE),
    // On failure keep the defaults: the server checks the files again anyway.
    api("/portal/config.json").catch(() => null),
    currentUser().catch(() => null), // unreachable: shown by the connection banner
  ]);
  if (loadedConfig) config = loadedConfig;
  user = signedIn;
  refreshHeader();
  document.getElementById("sign-out").addEventListener("click", async () => {
    await signOut();
    user = null;
    refreshHeader();
    navigate(`${BASE}sign-in`);
  });
  // The kit wires the language picker, translates the static parts and tells us; the view
  // drawn from data is drawn again in the new language.
  window.addEventListener("language-changed", () => render());
  window.addEventListener("session-expired", () => {
    user = null;
    refreshHeader();
    const next = location.pathname + location.search;
    navigate(`${BASE}sign-in?expired=1&next=${encodeURIComponent(next)}`, { replace: true });
  });
  await render();
  markReady();
}

start();
