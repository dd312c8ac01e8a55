// notifier /admin/: webhooks (the signing secret shown once), routing rules per category,
// teams, and recent deliveries with their attempts. Only an admin is offered the actions;
// the API refuses everyone else anyway.
import {
  api, applyI18n, clearProblems, currentUser, el, formCreated, formKey, formatDateTime, initI18n, markReady,
  problemMessage, showProblem, signIn, signOut, t,
} from "/assets/kit/kit.js";

const $ = (id) => document.getElementById(id);
const state = { user: null, webhooks: [], editing: null, rules: [], teams: [], deliveries: [], staff: [] };

const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);
const cell = (label, ...content) => el("td", { dataset: { label } }, ...content);
const button = (label, onclick, cls = "secondary") => el("button", { type: "button", class: cls, onclick }, label);
const actions = (...buttons) => el("td", { class: "actions", dataset: { label: t("common.actions") } }, el("div", { class: "row" }, ...buttons));
const say = (id, text) => ($(id).textContent = text);
// A table's rows, or one row saying there is nothing yet (not an empty table).
const fill = (tbody, rows) =>
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, t("kit.none")))]));

// --- webhooks -------------------------------------------------------------

function renderWebhooks() {
  fill(
    $("webhook-rows"),
    state.webhooks.map((w) =>
      el(
        "tr",
        { dataset: { id: w.id } },
        cell(t("webhooks.url"), el("code", {}, w.url)),
        cell(t("webhooks.description"), w.description),
        cell(t("webhooks.events"), w.event_types.length ? w.event_types.join(", ") : t("webhooks.allEvents")),
        cell(
          t("webhooks.status"),
          w.active ? t("webhooks.on") : t("webhooks.off"),
          w.disabled_reason ? el("p", { class: "hint" }, w.disabled_reason) : null,
        ),
        actions(
          w.active
            ? button(t("webhooks.disable"), () => setWebhook(w, false), "danger")
            : button(t("webhooks.enable"), () => setWebhook(w, true)),
          button(t("common.edit"), () => editWebhook(w)),
          button(t("webhooks.rotate"), () => rotateWebhook(w)),
          button(t("webhooks.delete"), () => deleteWebhook(w), "danger"),
        ),
      ),
    ),
  );
}

async function loadWebhooks() {
  state.webhooks = await api("/webhooks");
  renderWebhooks();
}

// The version the page last read: a change made since by someone else is refused (412), not overwritten.
const ifMatch = (w) => ({ "If-Match": `"${w.version}"` });

function showSecret(secret) {
  // The secret is in this answer only: shown once, never stored by the page.
  $("secret").textContent = secret;
  $("secret-box").hidden = false;
  $("secret-done").focus();
}

// The form creates a webhook, or, after "Edit", changes the one being edited.
function stopEditing() {
  state.editing = null;
  $("webhook-form").reset();
  $("webhook-form-heading").textContent = t("webhooks.new");
  $("webhook-submit").textContent = t("webhooks.create");
  $("webhook-cancel").hidden = true;
}

function editWebhook(w) {
  state.editing = w;
  const f = $("webhook-form").elements;
  f.url.value = w.url;
  f.description.value = w.description;
  f.event_types.value = w.event_types.join("\n");
  $("webhook-form-heading").textContent = t("webhooks.editing", { url: w.url });
  $("webhook-submit").textContent = t("webhooks.save");
  $("webhook-cancel").hidden = false;
  f.url.focus();
}

async function createWebhook(event) {
  event.preventDefault();
  const form = event.target;
  clearProblems(form);
  const f = form.elements;
  const body = { url: f.url.value.trim(), description: f.description.value.trim(), event_types: lines(f.event_types.value) };
  try {
    if (state.editing) {
      const w = state.editing;
      await api(`/webhooks/${w.id}`, { method: "PATCH", json: body, headers: ifMatch(w) });
      stopEditing();
      say("webhook-status", t("webhooks.saved", { url: body.url }));
    } else {
      // A retry after a lost answer gets the same webhook and its secret, not a second webhook.
      const created = await api("/webhooks", { method: "POST", json: body, idempotencyKey: formKey(form) });
      formCreated(form);
      form.reset();
      showSecret(created.secret);
    }
    await loadWebhooks();
  } catch (error) {
    showProblem(form, error);
  }
}

async function rotateWebhook(w) {
  if (!window.confirm(t("webhooks.confirmRotate", { url: w.url }))) return;
  try {
    const rotated = await api(`/webhooks/${w.id}/rotate-secret`, { method: "POST", headers: ifMatch(w) });
    showSecret(rotated.secret);
    say(
      "webhook-status",
      rotated.previous_secret_expires_at
        ? t("webhooks.rotated", { url: w.url, until: formatDateTime(rotated.previous_secret_expires_at) })
        : t("webhooks.rotatedNow", { url: w.url }),
    );
  } catch (error) {
    say("webhook-status", problemMessage(error));
  }
  await loadWebhooks();
}

async function deleteWebhook(w) {
  if (!window.confirm(t("webhooks.confirmDelete", { url: w.url }))) return;
  try {
    await api(`/webhooks/${w.id}`, { method: "DELETE", headers: ifMatch(w) });
    if (state.editing && state.editing.id === w.id) stopEditing();
    say("webhook-status", t("webhooks.deleted", { url: w.url }));
  } catch (error) {
    say("webhook-status", problemMessage(error));
  }
  await loadWebhooks();
}

async function setWebhook(w, active) {
  try {
    await api(`/webhooks/${w.id}`, { method: "PATCH", json: { active }, headers: ifMatch(w) });
    say("webhook-status", t(active ? "webhooks.nowOn" : "webhooks.nowOff", { url: w.url }));
  } catch (error) {
    say("webhook-status", problemMessage(error));
  }
  await loadWebhooks();
}

// --- routing rules and teams ---------------------------------------------

function renderRules() {
  fill(
    $("rule-rows"),
    state.rules.map((r) =>
      el(
        "tr",
        { dataset: { category: r.product_category } },
        cell(t("rules.category"), r.product_category),
        cell(t("rules.team"), r.team),
        cell(t("rules.claim"), String(r.claim_within_minutes)),
        cell(t("rules.again"), String(r.escalate_again_after_minutes)),
        actions(button(t("common.edit"), () => editRule(r)), button(t("common.remove"), () => removeRule(r), "danger")),
      ),
    ),
  );
}

// A member by name (the directory is the notifier's copy of order-intake's users).
function personName(userId) {
  const person = state.staff.find((p) => p.user_id === userId);
  if (!person) return userId;
  const name = person.full_name || person.email;
  return person.active ? name : `${name} (${t("teams.disabled")})`;
}

function renderStaffChoices() {
  const box = $("team-members");
  const chosen = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren(
    el("legend", {}, t("teams.members")),
    ...state.staff.map((p) =>
      el(
        "label",
        { class: "inline" },
        el("input", { type: "checkbox", name: "members", value: p.user_id, checked: chosen.has(p.user_id) }),
        el("span", {}, `${personName(p.user_id)} · ${p.email}`),
      ),
    ),
  );
  if (!state.staff.length) box.append(el("p", { class: "hint" }, t("teams.noStaff")));
}

function renderTeams() {
  renderStaffChoices();
  fill(
    $("team-rows"),
    state.teams.map((team) =>
      el(
        "tr",
        { dataset: { name: team.name } },
        cell(t("teams.name"), team.name),
        cell(t("teams.members"), team.members.length ? team.members.map(personName).join(", ") : t("teams.empty")),
        actions(button(t("common.edit"), () => editTeam(team)), button(t("common.remove"), () => removeTeam(team), "danger")),
      ),
    ),
  );
  const select = $("rule-form").elements.team;
  const chosen = select.value;
  select.replaceChildren(...state.teams.map((team) => el("option", { value: team.name }, team.name)));
  if (chosen) select.value = chosen;
}

async function loadRouting() {
  [state.rules, state.teams, state.staff] = await Promise.all([api("/routing-rules"), api("/teams"), api("/staff")]);
  renderRules();
  renderTeams();
}

function editRule(r) {
  const f = $("rule-form").elements;
  f.category.value = r.product_category;
  f.team.value = r.team;
  f.claim_within_minutes.value = r.claim_within_minutes;
  f.escalate_again_after_minutes.value = r.escalate_again_after_minutes;
  f.category.focus();
}

async function saveRule(event) {
  event.preventDefault();
  const form = event.target;
  clearProblems(form);
  const f = form.elements;
  const category = f.category.value.trim();
  const body = {
    team: f.team.value,
    claim_within_minutes: Number(f.claim_within_minutes.value),
    escalate_again_after_minutes: Number(f.escalate_again_after_minutes.value),
  };
  if (!category) {
    showProblem(form, { status: 422, problem: { detail: t("rules.needCategory"), errors: [{ field: "path.category", reason: t("rules.needCategory") }] } });
    return;
  }
  try {
    await api(`/routing-rules/${encodeURIComponent(category)}`, { method: "PUT", json: body });
    say("rule-status", t("rules.saved", { category }));
    await loadRouting();
  } catch (error) {
    showProblem(form, error);
  }
}

async function removeRule(r) {
  if (!window.confirm(t("rules.confirmRemove", { category: r.product_category }))) return;
  try {
    await api(`/routing-rules/${encodeURIComponent(r.product_category)}`, { method: "DELETE" });
    say("rule-status", t("rules.removed", { category: r.product_category }));
  } catch (error) {
    say("rule-status", problemMessage(error));
  }
  await loadRouting();
}

function editTeam(team) {
  const f = $("team-form").elements;
  f.name.value = team.name;
  for (const box of $("team-members").querySelectorAll("input")) box.checked = team.members.includes(box.value);
  f.name.focus();
}

async function saveTeam(event) {
  event.preventDefault();
  const form = event.target;
  clearProblems(form);
  const name = form.elements.name.value.trim();
  try {
    const members = [...$("team-members").querySelectorAll("input:checked")].map((i) => i.value);
    await api(`/teams/${encodeURIComponent(name)}`, { method: "PUT", json: { members } });
    form.reset();
    say("team-status", t("teams.saved", { name }));
    await loadRouting();
  } catch (error) {
    showProblem(form, error);
  }
}

async function removeTeam(team) {
  if (!window.confirm(t("teams.confirmRemove", { name: team.name }))) return;
  try {
    await api(`/teams/${encodeURIComponent(team.name)}`, { method: "DELETE" });
    say("team-status", t("teams.removed", { name: team.name }));
  } catch (error) {
    say("team-status", problemMessage(error));
  }
  await loadRouting();
}

// --- deliveries -----------------------------------------------------------

function renderDeliveries() {
  fill(
    $("delivery-rows"),
    state.deliveries.map((d) => {
      const attempts = el("ol", { class: "attempts", hidden: true });
      const show = async () => {
        const rows = await api(`/deliveries/${d.id}/attempts`);
        attempts.replaceChildren(
          ...rows.map((a) => el("li", {}, `${formatDateTime(a.at)} · ${t(`deliveries.${a.status}`)}${a.error ? ` · ${a.error}` : ""}`)),
        );
        if (!rows.length) attempts.append(el("li", {}, t("deliveries.noAttempts")));
        attempts.hidden = false;
      };
      return el(
        "tr",
        { dataset: { id: d.id } },
        cell(t("deliveries.when"), formatDateTime(d.created_at)),
        cell(t("deliveries.channel"), d.channel),
        cell(t("deliveries.status"), t(`deliveries.${d.status}`)),
        cell(t("deliveries.attempts"), String(d.attempts), attempts),
        cell(t("deliveries.error"), d.last_error || ""),
        actions(
          button(t("deliveries.showAttempts"), show),
          d.status === "failed" ? button(t("deliveries.redeliver"), () => redeliver(d)) : null,
        ),
      );
    }),
  );
}

async function redeliver(d) {
  try {
    await api(`/deliveries/${d.id}/redeliver`, { method: "POST" });
    say("delivery-status", t("deliveries.redelivering"));
  } catch (error) {
    say("delivery-status", problemMessage(error));
    return;
  }
  await loadDeliveries();
}

async function loadDeliveries() {
  const status = $("delivery-filter").elements.status.value;
  const page = await api(`/deliveries?limit=50${status ? `&status=${status}` : ""}`);
  state.deliveries = page.items;
  renderDeliveries();
  say("delivery-status", t("deliveries.count", { shown: page.items.length, total: page.total }));
}

// --- sign-in --------------------------------------------------------------

function show(user) {
  state.user = user;
  $("login").hidden = !!user;
  $("sign-out").hidden = !user;
  $("who").textContent = user ? user.name || user.email : "";
  const admin = !!user && user.roles.includes("admin");
  $("denied").hidden = !user || admin;
  $("admin").hidden = $("nav").hidden = !admin;
  return admin;
}

async function start(user) {
  if (show(user)) await Promise.all([loadWebhooks(), loadRouting(), loadDeliveries()]);
}

async function onSignIn(event) {
  event.preventDefault();
  const form = event.target;
  clearProblems(form);
  try {
    const user = await signIn(form.elements.email.value.trim(), form.elements.password.value);
    form.reset();
    await start(user);
  } catch (error) {
    showProblem(form, error);
  }
}

function rerender() {
  applyI18n();
  if (state.user && state.user.roles.includes("admin")) {
    renderWebhooks();
    renderRules();
    renderTeams();
    renderDeliveries();
  }
}

async function main() {
  await initI18n("/admin/");
  window.addEventListener("language-changed", rerender);
  $("login-form").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", async () => {
    await signOut().catch(() => {});
    show(null);
  });
  window.addEventListener("session-expired", () => show(null));
  $("webhook-form").addEventListener("submit", createWebhook);
  $("webhook-cancel").addEventListener("click", stopEditing);
  $("secret-done").addEventListener("click", () => {
    $("secret").textContent = "";
    $("secret-box").hidden = true;
  });
  $("rule-form").addEventListener("submit", saveRule);
  $("team-form").addEventListener("submit", saveTeam);
  $("delivery-filter").addEventListener("submit", (e) => {
    e.preventDefault();
    loadDeliveries();
  });
  await start(await currentUser().catch(() => null));
  markReady();
}

main();
