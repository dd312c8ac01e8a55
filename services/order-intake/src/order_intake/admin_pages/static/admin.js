// order-intake /admin/: products (create, edit, activate, archive) and users (create staff,
// roles, disable/enable, revoke sessions). Only an admin is offered the actions; the API
// refuses everyone else anyway.
import {
  api, applyI18n, clearProblems, currentUser, formCreated, formKey, formatMoney, initI18n, markReady,
  problemMessage, showProblem, signIn, signOut, t,
} from "/assets/kit/kit.js";

const $ = (id) => document.getElementById(id);
const state = { products: [], users: [], user: null };

function button(label, onClick, cls = "secondary") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function cell(label, content) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  return td;
}

// One row saying there is nothing yet, rather than an empty table.
function nothingYet(rows) {
  if (rows.children.length) return;
  const td = document.createElement("td");
  td.colSpan = 5;
  td.className = "muted";
  td.textContent = t("kit.none");
  const tr = document.createElement("tr");
  tr.append(td);
  rows.append(tr);
}

function say(id, text) {
  $(id).textContent = text;
}

function problemText(error) {
  return error.status === 412 ? t("common.conflict") : problemMessage(error);
}

// --- products -------------------------------------------------------------

function productStatus(p) {
  if (p.archived) return t("products.archived");
  return p.active ? t("products.offered") : t("products.hidden");
}

function renderProducts() {
  const rows = $("product-rows");
  rows.replaceChildren();
  for (const p of state.products) {
    const tr = document.createElement("tr");
    tr.dataset.id = p.id;
    const actions = document.createElement("td");
    actions.className = "actions";
    actions.dataset.label = t("common.actions");
    if (!p.archived) {
      actions.append(
        button(t("common.edit"), () => editProduct(p)),
        button(p.active ? t("products.hide") : t("products.offer"), () => setActive(p, !p.active)),
        button(t("products.archive"), () => archive(p), "danger"),
      );
    }
    tr.append(
      cell(t("products.title"), p.title),
      cell(t("products.category"), p.category),
      cell(t("products.price"), formatMoney(p.price, p.currency)),
      cell(t("products.status"), productStatus(p)),
      actions,
    );
    rows.append(tr);
  }
  nothingYet(rows);
}

async function loadProducts() {
  const page = await api("/products?include_archived=true&limit=100");
  state.products = page.items;
  renderProducts();
}

function resetProductForm() {
  const form = $("product-form");
  form.reset();
  clearProblems(form);
  form.elements.id.value = form.elements.version.value = "";
  $("product-form-heading").textContent = t("products.new");
}

function editProduct(p) {
  const form = $("product-form");
  resetProductForm();
  for (const name of ["id", "version", "title", "description", "category", "price", "currency"]) {
    form.elements[name].value = p[name];
  }
  form.elements.deliverables.value = p.deliverables.join("\n");
  form.elements.active.checked = p.active;
  $("product-form-heading").textContent = t("products.editing", { title: p.title });
  form.elements.title.focus();
}

async function saveProduct(event) {
  event.preventDefault();
  const form = event.target;
  clearProblems(form);
  const f = form.elements;
  const body = {
    title: f.title.value.trim(),
    description: f.description.value.trim(),
    deliverables: f.deliverables.value.split("\n").map((s) => s.trim()).filter(Boolean),
    category: f.category.value.trim(),
    price: f.price.value.trim(),
    currency: f.currency.value.trim().toUpperCase(),
    active: f.active.checked,
  };
  try {
    if (f.id.value) {
      await api(`/products/${f.id.value}`, {
        method: "PATCH", json: body, headers: { "If-Match": `"${f.version.value}"` },
      });
      say("product-status", t("products.saved", { title: body.title }));
    } else {
      await api("/products", { method: "POST", json: body, idempotencyKey: formKey(form) });
      formCreated(form);
      say("product-status", t("products.created", { title: body.title }));
    }
    resetProductForm();
    await loadProducts();
  } catch (error) {
    showProblem(form, error);
    if (error.status === 412) await productConflict(form);
  }
}

// Someone else saved first: show their version in the list and keep what was typed; the next
// save is made knowingly against their version.
async function productConflict(form) {
  form.querySelector("[role=alert]").textContent = t("common.conflict");
  await loadProducts();
  const current = state.products.find((p) => p.id === form.elements.id.value);
  if (current) form.elements.version.value = current.version;
}

async function setActive(p, active) {
  try {
    await api(`/products/${p.id}`, { method: "PATCH", json: { active }, headers: { "If-Match": `"${p.version}"` } });
    say("product-status", t(active ? "products.nowOffered" : "products.nowHidden", { title: p.title }));
  } catch (error) {
    say("product-status", problemText(error));
  }
  await loadProducts();
}

async function archive(p) {
  if (!window.confirm(t("products.confirmArchive", { title: p.title }))) return;
  try {
    await api(`/products/${p.id}`, { method: "DELETE", headers: { "If-Match": `"${p.version}"` } });
    if ($("product-form").elements.id.value === p.id) resetProductForm(); // nothing left to edit
    say("product-status", t("products.nowArchived", { title: p.title }));
  } catch (error) {
    say("product-status", problemText(error));
  }
  await loadProducts();
}

// --- users ----------------------------------------------------------------

function roleNames(u) {
  const names = u.roles.map((r) => t(`role.${r}`));
  if (u.department) names.push(t(`dept.${u.department}`));
  return names.join(", ");
}

function renderUsers() {
  const rows = $("user-rows");
  rows.replaceChildren();
  const me = state.user;
  for (const u of state.users) {
    const tr = document.createElement("tr");
    tr.dataset.id = u.id;
    tr.dataset.email = u.email;
    const actions = document.createElement("td");
    actions.className = "actions";
    actions.dataset.label = t("common.actions");
    if (!u.roles.includes("customer")) actions.append(button(t("users.editRoles"), () => editRoles(u)));
    if (u.id !== me.subject) {
      actions.append(
        u.active
          ? button(t("users.disable"), () => access(u, "disable"), "danger")
          : button(t("users.enable"), () => access(u, "enable")),
        button(t("users.revoke"), () => access(u, "revoke-sessions")),
      );
    }
    tr.append(
      cell(t("users.name"), u.full_name),
      cell(t("users.email"), u.email),
      cell(t("users.roles"), roleNames(u)),
      cell(t("users.status"), u.active ? t("users.active") : t("users.disabled")),
      actions,
    );
    rows.append(tr);
  }
  nothingYet(rows);
}

// `announce` is false after an action: the action's own outcome stays in the status line
// instead of being replaced at once by the count of users found.
async function loadUsers(announce = true) {
  const form = $("user-search");
  const params = new URLSearchParams({ limit: "100" });
  if (form.elements.q.value.trim()) params.set("q", form.elements.q.value.trim());
  if (form.elements.role.value) params.set("role", form.elements.role.value);
  try {
    const page = await api(`/users?${params}`);
    state.users = page.items;
    renderUsers();
    if (announce) say("user-status", t("users.found", { count: page.total }));
  } catch (error) {
    showProblem(form, error);
  }
}

function rolesOf(form) {
  return [...form.querySelectorAll("input[name=roles]:checked")].map((el) => el.value);
}

function editRoles(u) {
  const form = $("roles-form");
  clearProblems(form);
  form.hidden = false;
  form.elements.id.value = u.id;
  form.elements.version.value = u.version;
  for (const box of form.querySelectorAll("input[name=roles]")) box.checked = u.roles.includes(box.value);
  form.elements.department.value = u.department || "";
  $("roles-form-heading").textContent = t("users.rolesOf", { name: u.full_name });
  form.querySelector("input[name=roles]").focus();
}

async function saveRoles(event) {
  event.preventDefault();
  const form = event.target;
  clearProblems(form);
  const body = { roles: rolesOf(form), department: form.elements.department.value || null };
  try {
    await api(`/users/${form.elements.id.value}/roles`, {
      method: "PUT", json: body, headers: { "If-Match": `"${form.elements.version.value}"` },
    });
    form.hidden = true;
    say("user-status", t("users.rolesSaved"));
    await loadUsers(false);
  } catch (error) {
    showProblem(form, error);
    if (error.status === 412) {
      form.querySelector("[role=alert]").textContent = t("common.conflict");
      await loadUsers();
      const current = state.users.find((u) => u.id === form.elements.id.value);
      if (current) form.elements.version.value = current.version;
    }
  }
}

async function access(u, action) {
  if (action === "disable" && !window.confirm(t("users.confirmDisable", { email: u.email }))) return;
  try {
    await api(`/users/${u.id}/${action}`, { method: "POST" });
    say("user-status", t(`users.done.${action}`, { email: u.email }));
  } catch (error) {
    say("user-status", problemText(error));
  }
  await loadUsers(false);
}

async function createUser(event) {
  event.preventDefault();
  const form = event.target;
  clearProblems(form);
  const f = form.elements;
  const body = {
    email: f.email.value.trim(),
    full_name: f.full_name.value.trim(),
    password: f.password.value,
    roles: rolesOf(form),
    department: f.department.value || null,
  };
  try {
    await api("/users", { method: "POST", json: body, idempotencyKey: formKey(form) });
    formCreated(form);
    form.reset();
    say("user-status", t("users.created", { email: body.email }));
    await loadUsers(false);
  } catch (error) {
    showProblem(form, error);
  }
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
  if (show(user)) await Promise.all([loadProducts(), loadUsers()]);
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
  if (state.user) {
    renderProducts();
    renderUsers();
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
  $("product-form").addEventListener("submit", saveProduct);
  $("product-cancel").addEventListener("click", resetProductForm);
  $("user-search").addEventListener("submit", (e) => {
    e.preventDefault();
    loadUsers();
  });
  $("roles-form").addEventListener("submit", saveRoles);
  $("roles-cancel").addEventListener("click", () => ($("roles-form").hidden = true));
  $("user-form").addEventListener("submit", createUser);
  await start(await currentUser().catch(() => null));
  markReady();
}

main();
