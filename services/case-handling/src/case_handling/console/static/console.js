// The staff case console (issue 26, section 2): the queue and a page per case.
// Everything the page may offer comes from the API: the case body's `allowed_actions` says what
// the signed-in person may do now, so no state rule is repeated here. docs/case-handling.md.
import {
  ApiError,
  api,
  applyI18n,
  clearProblems,
  currentUser,
  el,
  formCreated,
  formKey,
  formatDateTime,
  formatMoney,
  initI18n,
  live,
  markReady,
  problemMessage,
  showProblem,
  signIn,
  signOut,
  t,
  watchConnection,
} from "/assets/kit/kit.js";

const BASE = "/console/";
const QUEUES = ["open", "unassigned", "mine", "team", "overdue"];
const $ = (id) => document.getElementById(id);

const state = {
  user: null,
  queue: "open",
  q: "",
  caseId: null,
  case: null, // the case as last read: its version goes with every write (If-Match)
  feed: null,
  reloadTimer: null,
  pendingFiles: [],
  writing: 0, // writes in flight: their own changes may come back on the feed before their answer
  seenVersion: 0, // the newest version the feed told of while writing
  customerPending: false, // the customer wrote while a write was in flight: the thread is read after it
};

// ---- routing: /console/ is the queue, /console/cases/<id> a case -----------------------------

function route() {
  const match = location.pathname.match(/^\/console\/cases\/([^/]+)\/?$/);
  return match ? { page: "case", id: decodeURIComponent(match[1]) } : { page: "queue" };
}

function go(path) {
  history.pushState({}, "", path);
  show();
}

function showOnly(id) {
  for (const section of ["loading", "signin", "queue", "case"]) $(section).hidden = section !== id;
}

async function show() {
  if (!state.user) {
    showOnly("signin");
    markReady();
    return;
  }
  const where = route();
  if (where.page === "case") {
    state.caseId = where.id;
    // Until this case is read, nothing of the one shown before may pass for it.
    if (!state.case || state.case.id !== where.id) {
      state.case = null;
      $("case-title").textContent = t("kit.loading");
    }
    $("case").setAttribute("aria-busy", "true");
    showOnly("case");
    await loadCase({ keepNotice: false });
    $("case").setAttribute("aria-busy", "false");
  } else {
    state.caseId = null;
    state.case = null;
    showOnly("queue");
    await loadQueue();
  }
  markReady();
}

// ---- signing in ------------------------------------------------------------------------------

function signedIn(user) {
  state.user = user;
  $("who").textContent = user ? user.name || user.email : "";
  $("sign-out").hidden = !user;
  if (user) startFeed();
  else if (state.feed) {
    state.feed.close();
    state.feed = null;
  }
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearProblems(form);
  try {
    const user = await signIn(form.elements.email.value.trim(), form.elements.password.value);
    if (!user.roles.some((r) => ["staff", "supervisor", "admin"].includes(r))) {
      await signOut();
      form.querySelector("[role=alert]").textContent = t("console.staff_only");
      return;
    }
    form.reset();
    signedIn(user);
    await show();
  } catch (error) {
    showProblem(form, error);
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await signOut();
  } finally {
    signedIn(null);
    go(BASE);
  }
});

window.addEventListener("session-expired", () => {
  signedIn(null);
  showOnly("signin");
  $("signin-form").querySelector("[role=alert]").textContent = t("kit.session_expired");
});

// ---- the live feed: the queue reads itself again; a case page learns it is stale -------------

function startFeed() {
  if (state.feed) return;
  state.feed = live(
    "/cases/stream",
    (message) => {
      let change = null;
      try {
        change = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      onChange(change);
    },
    {
      events: ["case"],
      onOpen: () => {
        $("live-state").textContent = t("console.live");
        // Reconnected: whatever happened meanwhile is read again.
        if (!$("queue").hidden) scheduleQueueReload();
      },
    },
  );
}

// What the customer does (a message, a file fetched from order-intake) leaves the case's version
// as it was: nobody's work is stale, the page just reads the case and its thread again.
const FROM_CUSTOMER = new Set(["customer_message", "customer_file"]);

function onChange(change) {
  if (!$("queue").hidden) {
    scheduleQueueReload();
  } else if (state.case && change.case_id === state.case.id && FROM_CUSTOMER.has(change.kind)) {
    if (state.writing) state.customerPending = true;
    else loadCase();
  } else if (state.case && change.case_id === state.case.id && change.version > state.case.version) {
    if (state.writing) {
      // Perhaps our own write, told by the feed before its answer came: decided afterwards.
      state.seenVersion = Math.max(state.seenVersion, change.version);
      state.seenAuthor = change.author_name;
      return;
    }
    staleNotice(change.author_name);
  }
}

// Someone else changed the case: say so, keep everything typed, let the person choose.
function staleNotice(author) {
  $("notice-text").textContent = t("console.changed_by", { name: author || t("console.someone") });
  $("notice").hidden = false;
}

// Around every write, including taking in its answer: afterwards, a change the feed told of
// that is newer than the case now on screen was someone else's.
async function writing(work) {
  state.writing += 1;
  try {
    return await work();
  } finally {
    state.writing -= 1;
    if (!state.writing) {
      if (state.case && state.seenVersion > state.case.version) staleNotice(state.seenAuthor);
      state.seenVersion = 0;
      if (state.customerPending) {
        state.customerPending = false;
        loadThread().catch(() => {}); // the case itself came with the write's answer
      }
    }
  }
}

function scheduleQueueReload() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(loadQueue, 150); // a burst of changes: one read
}

// ---- the queue -------------------------------------------------------------------------------

function renderQueueButtons(counts) {
  const list = $("queues");
  list.replaceChildren(
    ...QUEUES.map((name) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: name === state.queue ? "queue current" : "queue secondary",
            "aria-pressed": String(name === state.queue),
            dataset: { queue: name },
            onclick: () => {
              state.queue = name;
              loadQueue();
            },
          },
          el("span", { text: t(`console.queue_${name}`) }),
          el("span", { class: "count", text: counts ? String(counts[name]) : "…" }),
        ),
      ),
    ),
  );
}

function dueCell(item) {
  const due = formatDateTime(item.sla_due_at);
  if (!item.overdue) return el("span", { text: due });
  return el("span", {}, el("span", { class: "badge danger", text: t("console.overdue") }), " ", due);
}

function row(item) {
  const link = el("a", { href: `${BASE}cases/${encodeURIComponent(item.id)}`, text: item.order_id.slice(0, 8) });
  link.addEventListener("click", (event) => {
    if (event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    go(link.getAttribute("href"));
  });
  return el(
    "tr",
    { dataset: { caseId: item.id } },
    el("td", { "data-label": t("console.col_order") }, link),
    el("td", { "data-label": t("console.col_product"), text: item.product_title }),
    el("td", { "data-label": t("console.col_customer"), text: item.customer_name || "" }),
    el("td", { "data-label": t("console.col_status") }, statusBadge(item.status)),
    el("td", { "data-label": t("console.col_assignee"), text: item.assignee_name || item.assignee_id || t("console.nobody") }),
    el("td", { "data-label": t("console.col_due") }, dueCell(item)),
  );
}

function statusBadge(status) {
  const tone = { new: "warn", closed: "ok", cancelled: "" }[status] ?? "";
  return el("span", { class: `badge ${tone}`.trim(), dataset: { status }, text: t(`status.${status}`) });
}

async function loadQueue() {
  if ($("queue").hidden || !state.user) return;
  const form = $("search-form");
  const params = new URLSearchParams({ queue: state.queue, limit: "50", sort: "-created_at" });
  const countParams = new URLSearchParams();
  if (state.q) {
    params.set("q", state.q);
    countParams.set("q", state.q);
  }
  try {
    const [page, counts] = await Promise.all([
      api(`/cases?${params}`),
      api(`/cases/queues${state.q ? `?${countParams}` : ""}`),
    ]);
    clearProblems(form);
    renderQueueButtons(counts);
    $("cases").tBodies[0].replaceChildren(...page.items.map(row));
    $("cases-caption").textContent = t(`console.queue_${state.queue}`);
    $("empty").hidden = page.items.length > 0;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    showProblem(form, error);
  }
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.q = $("q").value.trim();
  loadQueue();
});

// ---- a case ----------------------------------------------------------------------------------

function fact(list, label, value) {
  list.append(el("dt", { text: label }), el("dd", {}, value));
}

function allowed(action) {
  return Boolean(state.case && state.case.allowed_actions.includes(action));
}

// Reads the case again. Forms are never reset here: what a person typed stays.
async function loadCase({ keepNotice = true } = {}) {
  const id = state.caseId;
  try {
    const found = await api(`/cases/${encodeURIComponent(id)}`);
    if (id !== state.caseId) return;
    state.case = found;
    if (!keepNotice) {
      $("notice").hidden = true;
      for (const form of document.querySelectorAll("#case form")) clearProblems(form);
    } else {
      $("notice").hidden = true; // the latest is on screen now
    }
    renderCase();
    await loadThread();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    $("case-title").textContent = t("console.case_unavailable");
    $("action-error").textContent = problemMessage(error);
  }
}

function renderCase() {
  const c = state.case;
  document.title = `${c.product_title} · ${t("console.title")}`;
  $("case-title").textContent = c.product_title;
  $("case-status").replaceWith(Object.assign(statusBadge(c.status), { id: "case-status" }));
  const facts = $("case-facts");
  facts.replaceChildren();
  fact(facts, t("console.col_order"), el("code", { text: c.order_id }));
  fact(facts, t("console.col_customer"), `${c.customer.full_name || ""} <${c.customer.email || ""}>${c.customer.phone ? ` · ${c.customer.phone}` : ""}`);
  fact(facts, t("console.col_assignee"), c.assignee_name || c.assignee_id || t("console.nobody"));
  fact(facts, t("console.col_due"), dueCell(c));
  fact(facts, t("console.opened"), formatDateTime(c.created_at));

  $("do-claim").hidden = !allowed("claim");
  $("do-start").hidden = !allowed("start");
  $("do-close").hidden = !allowed("close");
  $("assign-form").hidden = !allowed("assign");
  $("cancel-form").hidden = !allowed("cancel");
  $("message-form").hidden = !allowed("communication");
  $("analysis-form").hidden = !allowed("analysis");
  $("communication-form").hidden = !allowed("communication");
  $("upload-form").hidden = !allowed("attach");
  $("solution-form").hidden = !allowed("solution");
  $("action-error").textContent = "";

  const product = c.product || {};
  const order = $("order-facts");
  order.replaceChildren();
  fact(order, t("console.product"), product.title || c.product_title);
  fact(order, t("console.price"), formatMoney(c.price, c.currency));
  fact(order, t("console.category"), c.product_category);
  if (product.description) fact(order, t("console.product_description"), product.description);
  if (product.deliverables && product.deliverables.length) {
    fact(order, t("console.deliverables"), el("ul", {}, ...product.deliverables.map((d) => el("li", { text: d }))));
  }
  fact(order, t("console.placed_at"), formatDateTime(c.order_placed_at));
  $("need").textContent = c.description;

  const fromCustomer = c.attachments.filter((a) => a.origin === "customer");
  const fromStaff = c.attachments.filter((a) => a.origin !== "customer");
  $("customer-files").replaceChildren(
    ...(fromCustomer.length ? fromCustomer.map(fileItem) : [el("li", { class: "muted", text: t("console.no_files") })]),
  );
  $("files").replaceChildren(
    ...(fromStaff.length ? fromStaff.map(fileItem) : [el("li", { class: "muted", text: t("console.no_files") })]),
  );

  $("solution-current").hidden = !c.solution_summary;
  $("solution-summary").textContent = c.solution_summary || "";
  $("solution-text").textContent = c.solution_text || "";

  $("timeline").replaceChildren(...c.timeline.slice().reverse().map(timelineItem));
}

function visibilityBadge(customerVisible) {
  return customerVisible
    ? el("span", { class: "badge ok visible", text: t("console.customer_sees") })
    : el("span", { class: "badge internal", text: t("console.internal") });
}

function fileItem(file) {
  const href = `/cases/${encodeURIComponent(file.case_id)}/attachments/${encodeURIComponent(file.id)}/content`;
  return el(
    "li",
    { class: "file", dataset: { attachmentId: file.id } },
    el("a", { href, download: file.file_name, text: file.file_name }),
    " ",
    visibilityBadge(file.visibility === "customer"),
    el("span", { class: "muted", text: ` ${Math.max(1, Math.round(file.size / 1024))} KB · ${formatDateTime(file.uploaded_at)}` }),
    readReceipt(file.id),
  );
}

function readReceipt(attachmentId) {
  const receipts = state.case && state.case.receipts;
  const found = receipts && (receipts.documents || []).find((d) => d.attachment_id === attachmentId);
  return found && found.read_at
    ? el("span", { class: "badge ok", text: t("console.read_by_customer", { at: formatDateTime(found.read_at) }) })
    : null;
}

function describe(entry) {
  const d = entry.data || {};
  switch (entry.kind) {
    case "analysis":
      return d.text;
    case "communication":
      return `${t(`console.channel_${d.channel}`)} · ${t(d.direction === "inbound" ? "console.inbound" : "console.outbound")}: ${d.summary}`;
    case "solution":
      return d.summary;
    case "attachment":
    case "customer_file":
      return d.file_name;
    case "cancelled":
      return d.reason;
    case "status_changed":
      return t(`status.${entry.status}`);
    default:
      return "";
  }
}

function timelineItem(entry) {
  return el(
    "li",
    { class: entry.customer_visible ? "visible" : "internal", dataset: { kind: entry.kind } },
    el("strong", { text: t(`entry.${entry.kind}`) }),
    " ",
    visibilityBadge(entry.customer_visible),
    el("time", { datetime: entry.at, text: `${formatDateTime(entry.at)} · ${entry.author_name || t("console.customer")}` }),
    el("p", { class: "prewrap", text: describe(entry) || "" }),
  );
}

async function loadThread() {
  const list = $("thread");
  let messages = [];
  try {
    const found = await api(`/cases/${encodeURIComponent(state.case.id)}/messages`);
    messages = Array.isArray(found) ? found : found.items || [];
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    messages = null; // no thread on this server (yet): the communications below are the record
  }
  if (messages === null) {
    list.replaceChildren(el("li", { class: "muted", text: t("console.thread_unavailable") }));
    return;
  }
  list.replaceChildren(
    ...(messages.length
      ? messages.map((m) =>
          el(
            "li",
            { class: `message ${m.author}` },
            el("p", { class: "who" }, el("strong", { text: m.author_name || t(`console.author_${m.author}`) }), " ",
              el("time", { datetime: m.at, text: formatDateTime(m.at) })),
            el("p", { class: "prewrap", text: m.body }),
          ),
        )
      : [el("li", { class: "muted", text: t("console.no_messages") })]),
  );
}

// One write to the case: sent with the version on screen. If someone else changed the case
// meanwhile (412, or 409 for a state that moved on), the person is told so, the case is read
// again and the form keeps everything typed, ready to send again.
async function write(form, path, json, { creates = false } = {}) {
  clearProblems(form);
  const button = form.querySelector("button[type=submit]");
  if (button) button.disabled = true;
  try {
    // The answer is taken in before the write counts as done (see writing()).
    await writing(async () => {
      state.case = await api(path, {
        method: "POST",
        json,
        headers: { "If-Match": `"${state.case.version}"` },
        // An entry the form adds (a communication, the solution) is recorded once per submission.
        idempotencyKey: creates ? formKey(form) : undefined,
      });
      if (creates) formCreated(form);
    });
    renderCase();
    return true;
  } catch (error) {
    if (error instanceof ApiError && (error.status === 412 || error.status === 409)) {
      await loadCase();
      form.querySelector("[role=alert]").textContent = t("console.conflict");
      $("notice").hidden = true;
      const first = form.querySelector("textarea, input:not([type=hidden])");
      if (first) first.focus();
    } else {
      showProblem(form, error);
    }
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

function actionButton(id, action) {
  $(id).addEventListener("click", async () => {
    $("action-error").textContent = "";
    try {
      await writing(async () => {
        state.case = await api(`/cases/${encodeURIComponent(state.case.id)}/${action}`, {
          method: "POST",
          headers: { "If-Match": `"${state.case.version}"` },
        });
      });
      renderCase();
    } catch (error) {
      if (error instanceof ApiError && (error.status === 412 || error.status === 409)) {
        await loadCase();
        $("action-error").textContent = t("console.conflict");
      } else {
        $("action-error").textContent = problemMessage(error);
      }
    }
  });
}
actionButton("do-claim", "claim");
actionButton("do-start", "start");
actionButton("do-close", "close");

$("assign-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const name = form.elements.assignee_name.value.trim();
  if (await write(form, `/cases/${encodeURIComponent(state.case.id)}/assign`, {
    assignee_id: form.elements.assignee_id.value.trim(),
    ...(name ? { assignee_name: name } : {}),
  })) form.reset();
});

$("cancel-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  if (await write(form, `/cases/${encodeURIComponent(state.case.id)}/cancel`, { reason: form.elements.reason.value.trim() })) form.reset();
});

$("analysis-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  if (await write(form, `/cases/${encodeURIComponent(state.case.id)}/analysis`, { text: form.elements.text.value })) form.reset();
});

function localNow() {
  const now = new Date();
  now.setMinutes(now.getMinutes() - now.getTimezoneOffset());
  return now.toISOString().slice(0, 16);
}

$("communication-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const when = form.elements.occurred_at.value;
  const occurred = when ? new Date(when) : null;
  const body = {
    channel: form.elements.channel.value,
    direction: form.elements.direction.value,
    summary: form.elements.summary.value,
    // An empty or unreadable date goes as typed: the API names the field in its answer.
    occurred_at: occurred && !Number.isNaN(occurred.getTime()) ? occurred.toISOString() : when,
    customer_visible: form.elements.customer_visible.value === "true",
  };
  if (await write(form, `/cases/${encodeURIComponent(state.case.id)}/communications`, body, { creates: true })) {
    form.reset();
    form.elements.occurred_at.value = localNow();
    await loadThread();
  }
});

$("solution-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  if (await write(form, `/cases/${encodeURIComponent(state.case.id)}/solution`, {
    summary: form.elements.summary.value,
    text: form.elements.text.value,
  }, { creates: true })) form.reset();
});

$("message-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearProblems(form);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await writing(async () => {
      await api(`/cases/${encodeURIComponent(state.case.id)}/messages`, {
        method: "POST",
        json: { body: form.elements.body.value },
        idempotencyKey: form.dataset.key || (form.dataset.key = crypto.randomUUID()), // a double click sends once
      });
      form.reset();
      delete form.dataset.key;
      await loadCase();
    });
  } catch (error) {
    showProblem(form, error);
  } finally {
    button.disabled = false;
  }
});

// Uploads: several files at once, each with its own visibility and progress.
$("file-input").addEventListener("change", (event) => {
  state.pendingFiles = [...event.target.files];
  $("upload-list").replaceChildren(
    ...state.pendingFiles.map((file, index) => {
      const id = `visibility-${index}`;
      return el(
        "li",
        { class: "upload", dataset: { index: String(index) } },
        el("span", { class: "name", text: file.name }),
        el("label", { for: id, class: "inline" }, t("console.visibility_for", { name: file.name })),
        el(
          "select",
          { id, name: `visibility-${index}`, dataset: { visibility: file.name } },
          el("option", { value: "internal", text: t("console.internal_only") }),
          el("option", { value: "customer", text: t("console.customer_visible") }),
        ),
        el("progress", { max: "1", value: "0", "aria-label": t("console.progress_for", { name: file.name }) }),
        el("span", { class: "result", role: "status" }),
      );
    }),
  );
});

// One Idempotency-Key per chosen file until it is uploaded: a retry of a failed one (whose
// answer may have been lost, not the upload) stores it once.
const uploadKeys = new WeakMap();
function uploadKey(file) {
  if (!uploadKeys.has(file)) uploadKeys.set(file, crypto.randomUUID());
  return uploadKeys.get(file);
}

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearProblems(form);
  if (!state.pendingFiles.length) {
    form.querySelector("[role=alert]").textContent = t("console.choose_first");
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  const items = [...$("upload-list").children];
  let failed = 0;
  await writing(async () => { await Promise.all(
    state.pendingFiles.map(async (file, index) => {
      const item = items[index];
      const progress = item.querySelector("progress");
      const result = item.querySelector(".result");
      const body = new FormData();
      body.append("file", file, file.name);
      body.append("visibility", item.querySelector("select").value);
      try {
        await api(`/cases/${encodeURIComponent(state.case.id)}/attachments`, {
          method: "POST",
          body,
          idempotencyKey: uploadKey(file), // a failed file sent again is stored once
          onUploadProgress: (p) => {
            if (p.fraction !== null) progress.value = p.fraction;
          },
        });
        uploadKeys.delete(file);
        progress.value = 1;
        result.textContent = t("console.uploaded");
        item.classList.add("done");
      } catch (error) {
        failed += 1;
        result.textContent = problemMessage(error);
        item.classList.add("failed");
      }
    }),
  );
  await loadCase();
  });
  button.disabled = false;
  // Uploaded files leave the list of choices (their line says so); failed ones stay to retry.
  const kept = [];
  state.pendingFiles.forEach((file, index) => {
    const item = items[index];
    const select = item.querySelector("select");
    if (item.classList.contains("done")) {
      select.replaceWith(el("span", { class: "muted", text: select.selectedOptions[0].textContent }));
    } else kept.push(file);
  });
  state.pendingFiles = kept;
  if (failed) form.querySelector("[role=alert]").textContent = t("console.some_failed");
  else $("file-input").value = "";
});

$("notice-reload").addEventListener("click", () => loadCase());

// ---- start -------------------------------------------------------------------------------------

window.addEventListener("popstate", show);
// Back to the console's tab: the thread is read again (a customer's message changes no case
// version, so the live feed does not carry it).
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.case && !$("case").hidden) loadThread().catch(() => {});
});
window.addEventListener("language-changed", () => {
  applyI18n(document);
  if (!$("queue").hidden) loadQueue();
  if (!$("case").hidden && state.case) renderCase();
});

async function main() {
  watchConnection();
  await initI18n(BASE);
  $("communication-form").elements.occurred_at.value = localNow();
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/console/sw.js", { scope: BASE }).catch(() => {});
  }
  let user = null;
  try {
    user = await currentUser();
  } catch (_) {
    user = null; // unreachable: the sign-in form, and the banner says why
  }
  signedIn(user);
  await show();
}

main();
