// The dashboard: one page of a view, kept live. The view lives in the URL (form#view, the sort
// headers and the pager are plain GET links), so the socket only ever holds that one view.
// Rows are reused across updates (a checked box stays checked while its row moves); pushed data
// only ever reaches the page through textContent, attributes and dataset.
import { connectView, strings } from "./live.js";

const FIELDS = ["username", "email", "role", "status", "created_at", "updated_at"];
const TIMES = new Set(["created_at", "updated_at"]);
const table = document.querySelector("table#users");
const tbody = table.tBodies[0];
const template = document.getElementById("user-row-template");
const selectAll = document.getElementById("select-all");
const bulk = document.getElementById("bulk");
const view = JSON.parse(table.dataset.view || "{}"); // the URL's view, `after` included
const filters = { ...view }; // what every page of this view shares
delete filters.after;
const back = new URLSearchParams(view).toString(); // writes come back to this view
const suffix = back ? `?${back}` : "";

const rowOf = (id) => tbody.querySelector(`tr[data-user-id="${Number(id)}"]`);
const pageUrl = (cursor) => `/?${new URLSearchParams({ ...filters, after: cursor })}`;

function setCell(tr, field, value) {
  const cell = tr.querySelector(`td[data-field="${field}"]`);
  if (!cell) return;
  const label = strings.labels?.[field]?.[value];
  if (label !== undefined) {
    cell.dataset.value = value;
    cell.textContent = label;
  } else {
    cell.textContent = TIMES.has(field) ? value.slice(0, 10) : value; // the date; title: all of it
    cell.title = value; // the whole value, where the cell shows less
  }
}

function fill(tr, user) {
  const id = Number(user.id);
  tr.dataset.userId = String(id);
  tr.dataset.version = String(user.version);
  setCell(tr, "id", String(id));
  for (const field of FIELDS) setCell(tr, field, user[field]);
  const box = tr.querySelector("input[name=select]");
  box.value = String(id);
  box.setAttribute("aria-label", (strings.select_row ?? "{name}").replace("{name}", user.username));
  tr.querySelector("a.edit").href = `/users/${id}/edit${suffix}`;
  tr.querySelector("form.delete").action = `/users/${id}/delete${suffix}`;
}

function highlight(tr) {
  tr.classList.remove("changed");
  void tr.offsetWidth; // restart the animation
  tr.classList.add("changed");
}

/** Make the body show `ids` in order: reuse rows, fill the ones `given` has newer data for. */
function render(ids, given) {
  const shown = new Map([...tbody.rows].map((tr) => [Number(tr.dataset.userId), tr]));
  const rows = [];
  let complete = true;
  for (const id of ids) {
    let tr = shown.get(id);
    const user = given.get(id);
    if (user && (!tr || tr.dataset.version !== String(user.version))) {
      tr ??= template.content.firstElementChild.cloneNode(true);
      fill(tr, user);
      highlight(tr);
    }
    if (tr) rows.push(tr);
    else complete = false;
  }
  rows.forEach((tr, i) => {
    if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] ?? null);
  });
  while (tbody.rows.length > rows.length) tbody.rows[rows.length].remove();
  document.getElementById("no-users").hidden = rows.length > 0;
  updateSelectAll();
  return complete;
}

function setPageLink(rel, cursor) {
  const link = document.querySelector(`nav#pager a[rel=${rel}]`);
  if (cursor) {
    link.href = pageUrl(cursor);
    link.removeAttribute("aria-disabled");
  } else {
    link.removeAttribute("href");
    link.setAttribute("aria-disabled", "true");
  }
}

function boxes() {
  return [...tbody.querySelectorAll("input[name=select]")];
}

function updateSelectAll() {
  const all = boxes();
  const checked = all.filter((box) => box.checked).length;
  selectAll.checked = all.length > 0 && checked === all.length;
  selectAll.indeterminate = checked > 0 && checked < all.length;
}

// The write forms need the server: disabled while it stays unreachable.
function setWritable(state) {
  const buttons = document.querySelectorAll(
    "form#add-user button[type=submit], form#bulk button[type=submit], form.delete button");
  for (const button of buttons) button.disabled = state === "offline";
}

selectAll.addEventListener("change", () => {
  for (const box of boxes()) box.checked = selectAll.checked;
  updateSelectAll();
});
tbody.addEventListener("change", (event) => {
  if (event.target.matches("input[name=select]")) updateSelectAll();
});

// Ask before deleting; the forms themselves are plain CSRF-protected POSTs.
tbody.addEventListener("submit", (event) => {
  const form = event.target.closest("form.delete");
  if (!form) return;
  const name = form.closest("tr").querySelector('td[data-field="username"]').textContent;
  const question = (strings.confirm_delete ?? "Delete {name}?").replace("{name}", name);
  if (!window.confirm(question)) event.preventDefault();
});
bulk.addEventListener("submit", (event) => {
  if (bulk.elements.action.value !== "delete") return;
  const count = boxes().filter((box) => box.checked).length;
  const question = (strings.confirm_bulk_delete ?? "Delete {n} users?").replace("{n}", count);
  if (!window.confirm(question)) event.preventDefault();
});

// The view form: leave empty fields out of the URL; a filter applies as soon as it is picked.
const viewForm = document.getElementById("view");
viewForm.addEventListener("formdata", (event) => {
  for (const [key, value] of [...event.formData]) if (value === "") event.formData.delete(key);
});
for (const select of viewForm.querySelectorAll("select")) {
  select.addEventListener("change", () => viewForm.requestSubmit());
}

const live = connectView({
  view,
  initialSeq: Number(table.dataset.seq),
  onWindow(message, whole) {
    const given = new Map(message.users.map((user) => [user.id, user]));
    const ids = whole ? message.users.map((user) => user.id) : message.ids;
    document.getElementById("count-total").textContent = String(message.total);
    setPageLink("next", message.next);
    setPageLink("prev", message.prev);
    if (!render(ids, given)) live.resync();
  },
  onSeq(seq) {
    table.dataset.seq = String(seq);
  },
  onState: setWritable,
});
