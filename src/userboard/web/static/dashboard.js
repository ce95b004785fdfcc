// The dashboard: patch one row per event, never re-render the table.
// Pushed data only ever reaches the page through textContent and dataset.
import { connectLive, strings } from "./live.js";

const FIELDS = ["username", "email", "role", "status"];
const table = document.querySelector("table#users");
const tbody = table.tBodies[0];
const template = document.getElementById("user-row-template");

const rowOf = (id) => tbody.querySelector(`tr[data-user-id="${Number(id)}"]`);
const versionOf = (tr) => Number(tr.dataset.version);

function setCell(tr, field, value) {
  const cell = tr.querySelector(`td[data-field="${field}"]`);
  if (!cell) return;
  const label = strings.labels?.[field]?.[value];
  if (label !== undefined) cell.dataset.value = value;
  cell.textContent = label ?? value;
}

function fill(tr, user) {
  tr.dataset.userId = String(user.id);
  tr.dataset.version = String(user.version);
  setCell(tr, "id", String(user.id));
  for (const field of FIELDS) setCell(tr, field, user[field]);
  tr.querySelector("a.edit").href = `/users/${Number(user.id)}/edit`;
  tr.querySelector("form.delete").action = `/users/${Number(user.id)}/delete`;
}

function highlight(tr) {
  tr.classList.remove("changed");
  void tr.offsetWidth; // restart the animation
  tr.classList.add("changed");
}

function insert(user) {
  const tr = template.content.firstElementChild.cloneNode(true);
  fill(tr, user);
  const next = [...tbody.rows].find((row) => Number(row.dataset.userId) > user.id);
  tbody.insertBefore(tr, next ?? null);
  highlight(tr);
}

function upsert(user) {
  const tr = rowOf(user.id);
  if (!tr) return insert(user);
  if (versionOf(tr) >= user.version) return;
  fill(tr, user);
  highlight(tr);
}

const handlers = {
  user_added(event) {
    upsert(event.user);
  },
  user_updated(event) {
    const tr = rowOf(event.id);
    if (!tr || versionOf(tr) >= event.version) return;
    for (const [field, value] of Object.entries(event.changes)) {
      if (FIELDS.includes(field)) setCell(tr, field, value);
    }
    tr.dataset.version = String(event.version);
    highlight(tr);
  },
  user_deleted(event) {
    rowOf(event.id)?.remove();
  },
};

function recount() {
  const rows = [...tbody.rows];
  const count = (field, value) =>
    rows.filter((tr) => tr.querySelector(`td[data-field="${field}"]`)?.dataset.value === value).length;
  document.getElementById("count-total").textContent = String(rows.length);
  document.getElementById("count-admins").textContent = String(count("role", "admin"));
  document.getElementById("count-disabled").textContent = String(count("status", "disabled"));
}

function reconcile(snapshot) {
  const ids = new Set(snapshot.users.map((user) => user.id));
  for (const tr of [...tbody.rows]) {
    if (!ids.has(Number(tr.dataset.userId))) tr.remove();
  }
  for (const user of snapshot.users) upsert(user);
  recount();
}

// Ask before deleting; the form itself is a plain CSRF-protected POST.
tbody.addEventListener("submit", (event) => {
  const form = event.target.closest("form.delete");
  if (!form) return;
  const name = form.closest("tr").querySelector('td[data-field="username"]').textContent;
  const question = (strings.confirm_delete ?? "Delete {name}?").replace("{name}", name);
  if (!window.confirm(question)) event.preventDefault();
});

connectLive({
  initialSeq: Number(table.dataset.seq),
  onSnapshot: reconcile,
  onEvent(name, payload) {
    handlers[name]?.(payload);
    recount();
  },
});
