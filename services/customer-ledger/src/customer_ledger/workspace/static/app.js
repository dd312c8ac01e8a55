// The customer-ledger workspace (issue 26 §3): department clerks, the admin's read rights, the
// auditor's trail and the journal's proofs. What the user may not do is not offered (from
// GET /me/permissions); the API still decides every request. Proofs are verified here (verify.js).

import {
  api, ApiError, signIn, signOut, currentUser, showProblem, clearProblems, initI18n, t,
  formatMoney, formatDateTime, watchConnection, el, markReady, problemMessage, formKey, formCreated,
} from "/assets/kit/kit.js";
import {
  fromBase64, leafHash, openCheckpoint, parseVerifierKey, toBase64, verifyConsistency,
  verifyInclusion,
} from "/workspace/verify.js";

const $ = (selector, root = document) => root.querySelector(selector);
const DEPARTMENTS = ["sales", "finance", "process", "technical", "after_sales"];
const TABLES = ["customers", "demands", "associations", "progress", "payments"];
const PINNED_KEY = "casebridge.ledger.verifier-key"; // public, so localStorage is fine
const state = { me: null, view: null, customer: null, trailOffset: 0, trailPage: 25 };

function departmentName(dept) {
  return dept ? t(`dept.${dept}`) : "";
}

function notice(message) {
  $("#notice").textContent = message || "";
}

function formJson(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    const text = String(v).trim();
    if (text !== "") out[k] = text;
  }
  return out;
}

/** A datetime-local value as an ISO time with the browser's offset (the API wants a zone). */
function localToIso(value) {
  return value ? new Date(value).toISOString() : undefined;
}

async function submitting(form, work) {
  clearProblems(form);
  const button = $("button[type=submit]", form);
  if (button) button.disabled = true;
  try {
    await work();
    return true;
  } catch (error) {
    if (error instanceof ApiError) showProblem(form, error);
    else {
      const alert = $("[role=alert]", form);
      if (alert) alert.textContent = error.message;
    }
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

// --- session and navigation -----------------------------------------------------------------

async function start() {
  await initI18n("/workspace/");
  for (const select of [$("#grant-department"), $("#trail-department")]) {
    for (const d of DEPARTMENTS) select.append(el("option", { value: d, "data-dept": d, text: departmentName(d) }));
  }
  for (const d of DEPARTMENTS) $("#stage-filter").append(el("option", { value: d, "data-dept": d, text: departmentName(d) }));
  for (const table of TABLES) $("#grant-table").append(el("option", { value: table, "data-table": table, text: t(`table.${table}`) }));
  window.addEventListener("language-changed", relabel);
  watchConnection();
  wire();
  window.addEventListener("session-expired", () => showSignIn(t("sessionExpired")));
  if (await currentUser()) await enter();
  else showSignIn();
  markReady();
}

/** Options and texts made here (not from data-i18n) follow the language too. */
function relabel() {
  for (const o of document.querySelectorAll("option[data-dept]")) o.textContent = departmentName(o.dataset.dept);
  for (const o of document.querySelectorAll("option[data-table]")) o.textContent = t(`table.${o.dataset.table}`);
  if (state.me) describeMe();
  if (state.customer) renderCustomer();
  if (state.trail) renderTrail();
}

function showSignIn(message) {
  state.me = null;
  for (const v of document.querySelectorAll(".ws-view")) v.hidden = true;
  $("#tabs").hidden = true;
  $("#sign-out").hidden = true;
  $("#who").textContent = "";
  $("#signin").hidden = false;
  notice(message);
  $("#signin-email").focus();
}

async function enter() {
  state.me = await api("/me/permissions");
  $("#signin").hidden = true;
  $("#tabs").hidden = false;
  $("#sign-out").hidden = false;
  $("#tab-grants").hidden = !state.me.grants;
  $("#tab-trail").hidden = !state.me.audit;
  // An auditor reads no customer records: the trail and the journal only.
  const records = state.me.admin || !!state.me.department;
  $("#tab-customers").hidden = !records;
  describeMe();
  notice("");
  const wanted = location.hash.slice(1);
  const allowed = [
    ...(records ? ["customers"] : []),
    "journal",
    ...(state.me.grants ? ["grants"] : []),
    ...(state.me.audit ? ["trail"] : []),
  ];
  await show(allowed.includes(wanted) ? wanted : allowed[0]);
}

function describeMe() {
  const me = state.me;
  $("#who").textContent = me.name || me.email || me.subject;
  $("#department-line").textContent = me.department
    ? t("yourDepartment", { department: departmentName(me.department) })
    : me.admin ? t("youAreAdmin") : me.audit ? t("youAreAuditor") : t("noDepartment");
}

async function show(view) {
  if (state.view !== view) notice("");
  state.view = view;
  for (const button of document.querySelectorAll("#tabs button")) {
    if (button.dataset.view === view) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const section of document.querySelectorAll(".ws-view")) section.hidden = section.id !== `view-${view}`;
  if (location.hash.slice(1) !== view) history.replaceState(null, "", `#${view}`);
  try {
    if (view === "customers") await loadCustomers();
    if (view === "grants") await loadGrants();
    if (view === "trail") await loadTrail();
    if (view === "journal") await loadJournal();
  } catch (error) {
    notice(error instanceof ApiError ? (error.problem?.detail || error.problem?.title) : error.message);
  }
}

// --- customers (department clerks and admin) --------------------------------------------------

async function loadCustomers() {
  const me = state.me;
  const mayRead = Boolean(me.read.customers);
  $("#no-read").hidden = mayRead;
  $("#customer-filter").hidden = !mayRead;
  $("#customer-table").hidden = !mayRead;
  $("#register").hidden = !me.write.register_customers;
  if (!mayRead) return;
  const stage = $("#stage-filter").value;
  const query = new URLSearchParams({ limit: "100" });
  if (stage) query.set("stage", stage);
  const page = await api(`/customers?${query}`);
  const body = $("#customer-table tbody");
  body.replaceChildren();
  for (const c of page.items) {
    body.append(el("tr", {},
      el("td", { "data-label": t("name"), text: c.full_name ?? "—" }),
      el("td", { "data-label": t("organisation"), text: c.organisation ?? "" }),
      el("td", { "data-label": t("stage"), text: c.stage ? departmentName(c.stage) : "" }),
      el("td", {}, el("button", {
        type: "button", class: "secondary", text: t("open"),
        "aria-label": t("openCustomer", { name: c.full_name ?? c.id }),
        onclick: () => openCustomer(c.id).catch(reportError),
      })),
    ));
  }
  $("#customer-count").textContent = t("customersShown", { shown: page.items.length, total: page.total });
}

async function openCustomer(id) {
  const me = state.me;
  const customer = await api(`/customers/${encodeURIComponent(id)}`);
  const lists = {};
  for (const table of ["demands", "progress", "payments"]) {
    lists[table] = me.read[table] ? await api(`/customers/${encodeURIComponent(id)}/${table}`) : null;
  }
  state.customer = { ...customer, lists };
  renderCustomer();
  $("#customer").hidden = false;
  $("#customer-name").focus();
}

function renderCustomer() {
  const c = state.customer;
  const me = state.me;
  $("#customer-name").textContent = c.full_name ?? c.id;
  const facts = $("#customer-facts");
  facts.replaceChildren();
  for (const [key, value] of [
    ["stage", c.stage ? departmentName(c.stage) : null], ["email", c.email], ["phone", c.phone],
    ["organisation", c.organisation], ["customerId", c.id],
  ]) {
    if (value) facts.append(el("dt", { text: t(key) }), el("dd", { text: value }));
  }
  const list = (id, rows, render) => {
    const target = $(`#${id}`);
    target.replaceChildren();
    $(`#${id}-none`).hidden = !(rows && rows.length === 0);
    target.hidden = !rows;
    // No read right on the table: neither the list nor its heading (unless its form shows).
    $(`#${id}-heading`).hidden = !rows && !me.write[id];
    for (const row of rows || []) target.append(render(row));
  };
  list("demands", c.lists.demands, (d) => el("li", {},
    el("strong", { text: d.title ?? "" }), " ", el("span", { class: "badge", text: d.status ? t(`status.${d.status}`) : "" }),
    el("p", { text: d.description ?? "" })));
  list("progress", c.lists.progress, (p) => el("li", {},
    el("strong", { text: `${p.project ?? ""} · ${p.stage ?? ""}` }),
    el("p", { text: [p.note, p.department ? departmentName(p.department) : p.recorded_by, p.at ? formatDateTime(p.at) : ""].filter(Boolean).join(" · ") })));
  list("payments", c.lists.payments, (p) => el("li", {},
    el("strong", { text: p.amount != null ? formatMoney(p.amount, p.currency) : "" }), " ",
    el("span", { text: [p.reference, p.received_at ? formatDateTime(p.received_at) : ""].filter(Boolean).join(" · ") })));

  // Offer only what the rules allow: writing needs the table's write right, and the demands,
  // progress and payments of a customer are written by departments associated with it (the
  // customers the department sees under an "associated" grant, and the one it holds).
  $("#demand-box").hidden = !me.write.demands;
  $("#progress-box").hidden = !me.write.progress;
  $("#payment-box").hidden = !me.write.payments;
  const chain = me.hand_off_chain;
  const next = c.stage ? chain[chain.indexOf(c.stage) + 1] : undefined;
  const holds = me.admin || (me.department && c.stage === me.department);
  $("#handoff-form").hidden = !(me.write.hand_off && holds && next);
  if (next) {
    $("#handoff-text").textContent = t("handOffText", { from: departmentName(c.stage), to: departmentName(next) });
    $("#handoff-button").textContent = t("handOffTo", { department: departmentName(next) });
  }
}

async function afterWrite(form, message) {
  form.reset();
  notice(message);
  try {
    await openCustomer(state.customer.id);
    await loadCustomers();
  } catch (error) {
    reportError(error);
  }
}

/** An error outside a form (a list that failed to load) goes to the page's status line. */
function reportError(error) {
  notice(error instanceof ApiError ? problemMessage(error) : error.message);
}

// --- read rights (admin) ---------------------------------------------------------------------

async function loadGrants() {
  const grants = await api("/grants");
  const body = $("#grant-list tbody");
  body.replaceChildren();
  for (const g of grants.filter((x) => x.grantee === "department")) {
    body.append(el("tr", {},
      el("td", { "data-label": t("department"), text: departmentName(g.department) }),
      el("td", { "data-label": t("table"), text: t(`table.${g.table}`) }),
      el("td", { "data-label": t("scope"), text: t(g.scope === "all" ? "scopeAll" : "scopeAssociated") }),
      el("td", { "data-label": t("fields"), text: g.fields ? g.fields.join(", ") : t("allFields") }),
      el("td", { "data-label": t("granted"), text: `${formatDateTime(g.granted_at)} · ${cellText("changed_by", g.granted_by)}` }),
      el("td", {}, el("button", {
        type: "button", class: "danger", text: t("withdraw"),
        "aria-label": t("withdrawGrant", { department: departmentName(g.department), table: t(`table.${g.table}`) }),
        onclick: async () => {
          if (!confirm(t("confirmWithdraw"))) return;
          try {
            await api(`/grants/${encodeURIComponent(g.id)}`, { method: "DELETE" });
            notice(t("withdrawn"));
            await loadGrants();
          } catch (error) {
            notice(error.problem?.detail || error.message);
          }
        },
      })),
    ));
  }
}

// --- access trail (admins and auditors) ----------------------------------------------------------

const TRAIL_COLUMNS = {
  changes: ["journal_index", "at", "changed_by", "department", "table", "operation", "customer_id", "change", "reason"],
  reads: ["journal_index", "at", "reader", "department", "what", "customer_id"],
  logins: ["journal_index", "at", "email", "outcome", "reason", "department", "client_ip"],
};

function trailQuery() {
  const form = $("#trail-form");
  const values = formJson(form);
  const kind = values.kind || "changes";
  delete values.kind;
  if (kind === "logins") delete values.customer_id;
  for (const k of ["since", "until"]) if (values[k]) values[k] = localToIso(values[k]);
  return { kind, query: new URLSearchParams(values) };
}

// Bookkeeping fields every row has: left out of the on-screen change (the CSV keeps all).
const BOOKKEEPING = new Set(["id", "customer_id", "created_at", "updated_at", "version", "recorded_at"]);

/** Before and after as the fields that changed: "stage: sales → finance" (an insert lists its values). */
function changeList(before, after) {
  const list = el("ul", { class: "ws-change" });
  const keys = new Set([...Object.keys(before || {}), ...Object.keys(after || {})]);
  const show = (v) => (v == null ? "∅" : typeof v === "object" ? JSON.stringify(v) : String(v));
  for (const key of keys) {
    if (BOOKKEEPING.has(key)) continue;
    const a = before ? before[key] : undefined;
    const b = after ? after[key] : undefined;
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    if (!before) {
      if (b != null) list.append(el("li", { text: `${key}: ${show(b)}` }));
    } else if (!after) {
      list.append(el("li", { text: `${key}: ${show(a)} → ∅` }));
    } else {
      list.append(el("li", { text: `${key}: ${show(a)} → ${show(b)}` }));
    }
  }
  return list;
}

function cellText(column, value) {
  if (value == null) return "";
  if (column === "at") return formatDateTime(value);
  if (column === "department") return departmentName(value);
  if (column === "customer_id" || column === "changed_by" || column === "reader") {
    return /^[0-9a-f]{8}-[0-9a-f-]{27}$/.test(String(value)) ? String(value).slice(0, 8) : String(value);
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

async function loadTrail() {
  const form = $("#trail-form");
  clearProblems(form);
  const { kind, query } = trailQuery();
  query.set("limit", String(state.trailPage));
  query.set("offset", String(state.trailOffset));
  let page;
  try {
    page = await api(`/audit/${kind}?${query}`);
  } catch (error) {
    if (error instanceof ApiError) showProblem(form, error);
    throw error;
  }
  state.trail = { kind, page };
  renderTrail();
}

function renderTrail() {
  const { kind, page } = state.trail;
  const columns = TRAIL_COLUMNS[kind];
  const head = $("#trail-table thead tr");
  head.replaceChildren(...columns.map((c) => el("th", { scope: "col", text: t(`col.${c}`) })), el("th", { scope: "col", text: t("proof") }));
  const body = $("#trail-table tbody");
  body.replaceChildren();
  for (const item of page.items) {
    const row = el("tr", {}, ...columns.map((c) => c === "change"
      ? el("td", { "data-label": t(`col.${c}`) }, changeList(item.before, item.after))
      : el("td", { "data-label": t(`col.${c}`), text: cellText(c, item[c]) })));
    if (item.corrections?.length) {
      // An access record stays as journaled; its corrections are shown with it.
      row.classList.add("corrected");
      row.firstChild.append(...item.corrections.map((c) => el("p", {
        class: "ws-muted", text: t("correctedBy", { by: c.corrected_by, reason: c.reason, fields: JSON.stringify(c.corrected) }),
      })));
    }
    row.append(el("td", {}, el("button", {
      type: "button", class: "secondary", text: t("verify"),
      "aria-label": t("verifyEntry", { index: item.journal_index }),
      onclick: async () => {
        await show("journal");
        $("#inclusion-index").value = String(item.journal_index);
        $("#inclusion-form").requestSubmit();
      },
    })));
    body.append(row);
  }
  $("#trail-count").textContent = t("trailShown", {
    from: page.total ? page.offset + 1 : 0, to: page.offset + page.items.length, total: page.total,
  });
  $("#trail-prev").disabled = page.offset === 0;
  $("#trail-next").disabled = page.offset + page.items.length >= page.total;
}

function exportCsv() {
  const { kind, query } = trailQuery();
  // A plain download: the browser sends the session cookie with this same-origin GET.
  const link = el("a", { href: `/audit/${kind}.csv?${query}`, download: `${kind}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
  notice(t("exportStarted"));
}

// --- journal proofs, verified here -----------------------------------------------------------

let servedKey = "";

async function loadJournal() {
  servedKey = (await (await fetch("/ledger/public-key", { credentials: "same-origin" })).text()).trim();
  const pinned = localStorage.getItem(PINNED_KEY);
  $("#key-text").value = pinned || servedKey;
  describeKey();
  await checkLatest();
  await loadCheckpointChoices();
}

function describeKey() {
  const pinned = localStorage.getItem(PINNED_KEY);
  const status = $("#key-status");
  if (pinned && pinned !== servedKey) {
    status.textContent = t("keyChanged");
    status.className = "result fail";
  } else if (pinned) {
    status.textContent = t("keyPinned");
    status.className = "result";
  } else {
    status.textContent = t("keyNotPinned");
    status.className = "result";
  }
}

async function verifier() {
  return parseVerifierKey($("#key-text").value);
}

function verdict(target, ok, message) {
  target.textContent = `${ok ? "✓" : "✗"} ${message}`;
  target.className = `result ${ok ? "pass" : "fail"}`;
  target.dataset.outcome = ok ? "pass" : "fail";
}

function step(list, ok, message) {
  list.append(el("li", { class: ok ? "pass" : "fail", text: `${ok ? "✓" : "✗"} ${message}` }));
}

async function text(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.text();
}

/** The latest checkpoint, its signature checked here; returns it (or throws). */
async function signedCheckpoint() {
  const note = await text("/ledger/checkpoint");
  $("#checkpoint-text").textContent = note;
  return openCheckpoint(note, await verifier());
}

async function checkLatest() {
  const target = $("#checkpoint-result");
  try {
    const checkpoint = await signedCheckpoint();
    verdict(target, true, t("checkpointOk", { size: String(checkpoint.size), root: toBase64(checkpoint.root) }));
    return checkpoint;
  } catch (error) {
    verdict(target, false, t("checkpointBad", { reason: error.message }));
    return null;
  }
}

async function verifyEntry(index) {
  const steps = $("#inclusion-steps");
  const result = $("#inclusion-result");
  steps.replaceChildren();
  result.textContent = "";
  delete result.dataset.outcome;
  let checkpoint;
  try {
    checkpoint = await signedCheckpoint();
    step(steps, true, t("stepSignature", { size: String(checkpoint.size) }));
  } catch (error) {
    step(steps, false, t("stepSignatureBad", { reason: error.message }));
    verdict(result, false, t("inclusionBad"));
    return;
  }
  if (BigInt(index) >= checkpoint.size) {
    step(steps, false, t("notYetSigned", { index, size: String(checkpoint.size) }));
    verdict(result, false, t("inclusionBad"));
    return;
  }
  const entry = await api(`/ledger/entries/${index}`);
  $("#inclusion-entry").textContent = entry.entry;
  $("#inclusion-entry").hidden = false;
  // The leaf is hashed here from the entry's exact text; the server's own leaf hash is only compared.
  const leaf = await leafHash(entry.entry);
  const proof = await api(`/ledger/proofs/inclusion?index=${index}&tree_size=${checkpoint.size}`);
  const leafMatches = toBase64(leaf) === entry.leaf_hash && toBase64(leaf) === proof.leaf_hash;
  step(steps, leafMatches, t(leafMatches ? "stepLeaf" : "stepLeafBad", { leaf: toBase64(leaf) }));
  try {
    await verifyInclusion(BigInt(index), checkpoint.size, leaf, proof.hashes.map(fromBase64), checkpoint.root);
    step(steps, true, t("stepPath", { count: proof.hashes.length }));
  } catch (error) {
    step(steps, false, t("stepPathBad", { reason: error.message }));
    verdict(result, false, t("inclusionBad"));
    return;
  }
  verdict(result, leafMatches, t(leafMatches ? "inclusionOk" : "inclusionBad", { index, size: String(checkpoint.size) }));
}

async function loadCheckpointChoices() {
  const all = [];
  let after = 0;
  for (let pageNo = 0; pageNo < 10; pageNo++) {
    const page = await api(`/ledger/checkpoints?after_size=${after}&limit=1000`);
    all.push(...page);
    if (page.length < 1000) break;
    after = page[page.length - 1].tree_size;
  }
  state.checkpoints = all;
  for (const [id, pick] of [["#consistency-first", 0], ["#consistency-second", all.length - 1]]) {
    const select = $(id);
    select.replaceChildren(...all.map((c, i) => el("option", {
      value: String(i), text: t("checkpointChoice", { size: c.tree_size, at: formatDateTime(c.issued_at) }),
    })));
    select.value = String(Math.max(pick, 0));
  }
}

async function verifyGrowth(firstChoice, secondChoice) {
  const steps = $("#consistency-steps");
  const result = $("#consistency-result");
  steps.replaceChildren();
  delete result.dataset.outcome;
  const key = await verifier();
  const opened = [];
  for (const choice of [firstChoice, secondChoice]) {
    try {
      const checkpoint = await openCheckpoint(choice.note, key);
      step(steps, true, t("stepSignature", { size: String(checkpoint.size) }));
      opened.push(checkpoint);
    } catch (error) {
      step(steps, false, t("stepSignatureBad", { reason: error.message }));
      verdict(result, false, t("consistencyBad"));
      return;
    }
  }
  const [a, b] = opened;
  try {
    let hashes = [];
    if (a.size !== b.size && a.size > 0n) {
      hashes = (await api(`/ledger/proofs/consistency?first=${a.size}&second=${b.size}`)).hashes;
    }
    await verifyConsistency(a.size, b.size, a.root, b.root, hashes.map(fromBase64));
    step(steps, true, t("stepConsistency", { first: String(a.size), second: String(b.size), count: hashes.length }));
    verdict(result, true, t("consistencyOk", { first: String(a.size), second: String(b.size) }));
  } catch (error) {
    step(steps, false, t("stepConsistencyBad", { reason: error.message }));
    verdict(result, false, t("consistencyBad"));
  }
}

// --- wiring ----------------------------------------------------------------------------------

function wire() {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => show(button.dataset.view));
  }
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const ok = await submitting(form, () => signIn(form.email.value.trim(), form.password.value));
    if (ok) {
      form.reset();
      await enter();
    }
  });
  $("#sign-out").addEventListener("click", async () => {
    await signOut();
    state.customer = null;
    $("#customer").hidden = true;
    showSignIn(t("signedOut"));
  });
  $("#customer-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadCustomers().catch((error) => notice(error.problem?.detail || error.message));
  });
  $("#register-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    let created;
    const send = async () => {
      created = await api("/customers", { method: "POST", json: formJson(form), idempotencyKey: formKey(form) });
      formCreated(form);
    };
    if (await submitting(form, send)) {
      form.reset();
      notice(t("registered"));
      // Registered customers are the department's, but reading them needs a read grant.
      if (state.me.read.customers) {
        await loadCustomers().catch(reportError);
        await openCustomer(created.id).catch(reportError);
      }
    }
  });
  const customerPost = (formId, table, body, message, creates = true) => {
    $(formId).addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.currentTarget;
      const path = `/customers/${encodeURIComponent(state.customer.id)}/${table}`;
      // A record the form creates carries a key: a double click or a retry records it once.
      const send = async () => {
        await api(path, { method: "POST", json: body(form), idempotencyKey: creates ? formKey(form) : undefined });
        formCreated(form);
      };
      if (await submitting(form, send)) await afterWrite(form, t(message));
    });
  };
  customerPost("#demand-form", "demands", formJson, "demandRecorded");
  customerPost("#progress-form", "progress", formJson, "progressRecorded");
  customerPost("#payment-form", "payments", (form) => {
    const body = formJson(form);
    if (body.currency) body.currency = body.currency.toUpperCase();
    if (body.received_at) body.received_at = localToIso(body.received_at);
    return body;
  }, "paymentRecorded");
  customerPost("#handoff-form", "handoff", formJson, "handedOff", false);

  $("#grant-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const body = formJson(form);
    if (body.fields) body.fields = body.fields.split(",").map((f) => f.trim()).filter(Boolean);
    const send = async () => {
      await api("/grants", { method: "POST", json: body, idempotencyKey: formKey(form) });
      formCreated(form);
    };
    if (await submitting(form, send)) {
      form.reset();
      notice(t("grantDone"));
      await loadGrants();
    }
  });
  $("#trail-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.trailOffset = 0;
    loadTrail().catch(() => {});
  });
  $("#trail-kind").addEventListener("change", () => {
    state.trailOffset = 0;
    loadTrail().catch(() => {});
  });
  $("#trail-prev").addEventListener("click", () => {
    state.trailOffset = Math.max(0, state.trailOffset - state.trailPage);
    loadTrail().catch(() => {});
  });
  $("#trail-next").addEventListener("click", () => {
    state.trailOffset += state.trailPage;
    loadTrail().catch(() => {});
  });
  $("#trail-csv").addEventListener("click", exportCsv);

  $("#key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    if (await submitting(form, async () => {
      try {
        await parseVerifierKey(form.key.value);
      } catch (error) {
        throw new ApiError(422, { detail: t("keyInvalid", { reason: error.message }), errors: [{ field: "key", reason: error.message }] });
      }
    })) {
      localStorage.setItem(PINNED_KEY, form.key.value.trim());
      describeKey();
      await checkLatest();
    }
  });
  $("#checkpoint-refresh").addEventListener("click", () => checkLatest());
  $("#inclusion-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const index = form.index.value.trim();
    await submitting(form, async () => {
      if (!/^(0|[1-9][0-9]*)$/.test(index)) {
        throw new ApiError(422, { detail: t("indexInvalid"), errors: [{ field: "index", reason: t("indexInvalid") }] });
      }
      await verifyEntry(index);
    });
  });
  $("#consistency-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const [first, second] = [Number(form.first.value), Number(form.second.value)].map((i) => state.checkpoints[i]);
    await submitting(form, async () => {
      if (!first || !second) throw new ApiError(422, { detail: t("noCheckpoints"), errors: [] });
      if (first.tree_size > second.tree_size) {
        throw new ApiError(422, { detail: t("orderWrong"), errors: [{ field: "second", reason: t("orderWrong") }] });
      }
      await verifyGrowth(first, second);
    });
  });
}

start().catch((error) => notice(error.message));
