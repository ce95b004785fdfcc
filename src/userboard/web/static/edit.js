// The edit page: say so when the user being edited changes or disappears elsewhere, and keep
// its history (who changed what, when) live. Pushed data only reaches the page through
// textContent, attributes and dataset.
import { connectLive, strings } from "./live.js";

const FIELDS = ["username", "email", "role", "status"];
const form = document.getElementById("edit-user");
const userId = Number(form.dataset.userId);
const notice = document.getElementById("remote-notice");
const history = document.getElementById("history");
const labels = JSON.parse(history.dataset.labels);
const historyMax = Number(history.dataset.max);
// What the page knows of the user now (null once it is gone): the row it was rendered with,
// then every change that reached it. The form keeps what was typed.
let held = JSON.parse(form.dataset.user);

function say(lines) {
  notice.replaceChildren(...lines.map((text) => {
    const p = document.createElement("p");
    p.textContent = text;
    return p;
  }));
  notice.hidden = false;
}

function setWritable(writable) {
  for (const button of form.querySelectorAll("button[type=submit]")) button.disabled = !writable;
}

function changed(changes) {
  const lines = [strings.changed_elsewhere ?? "Changed elsewhere:"];
  for (const [field, value] of Object.entries(changes)) {
    if (field in (strings.fields ?? {})) lines.push(`${strings.fields[field]}: ${value}`);
  }
  say(lines);
  notice.dataset.kind = "changed";
}

function deleted() {
  held = null;
  say([strings.deleted_elsewhere ?? "Deleted elsewhere."]);
  notice.dataset.kind = "deleted";
  setWritable(false);
}

/** A whole copy of the user (a snapshot, a fresh read): it replaces what is held. */
function replace(user) {
  if (!user) return void (held && deleted());
  const differ = FIELDS.filter((field) => user[field] !== held?.[field]);
  const returned = held === null;
  held = user;
  if (returned) setWritable(true); // a database restored from a backup has it again
  if (differ.length) changed(Object.fromEntries(differ.map((field) => [field, user[field]])));
}

/** One user_updated for this user, applied once (its version is newer than what is held). */
function updated(payload) {
  if (!held || payload.version <= held.version) return;
  held = { ...held, ...payload.changes, version: payload.version };
  changed(payload.changes);
}

// -- history ----------------------------------------------------------------------------------

const entryTemplate = document.getElementById("history-entry");
const changeTemplate = document.getElementById("history-change");

function actorText(actor) {
  const kind = labels.kinds[actor?.kind] ?? labels.unknown;
  if (!actor?.name) return kind;
  const parts = { name: actor.name, kind };
  return labels.actor.replace(/\{(name|kind)\}/g, (_, key) => parts[key]);
}

const valueText = (value) => (value == null ? "" : labels.value_labels[value] ?? String(value));

function changeItem(field, from, to) {
  const li = changeTemplate.content.firstElementChild.cloneNode(true);
  li.dataset.change = field;
  li.querySelector("[data-part=field]").textContent = labels.fields[field];
  li.querySelector("[data-part=from]").textContent = valueText(from);
  li.querySelector("[data-part=to]").textContent = valueText(to);
  return li;
}

/** The entry as _macros.html's history_entry renders it. */
function entryItem(entry) {
  const li = entryTemplate.content.firstElementChild.cloneNode(true);
  li.dataset.seq = String(entry.seq);
  li.dataset.event = entry.event;
  const time = li.querySelector("time");
  time.dateTime = entry.committed_at;
  time.textContent = entry.committed_at.slice(0, 19).replace("T", " ");
  const actor = li.querySelector("[data-field=actor]");
  actor.dataset.kind = entry.actor?.kind ?? "";
  actor.textContent = actorText(entry.actor);
  li.querySelector("[data-field=event]").textContent = labels.events[entry.event] ?? entry.event;
  const list = li.querySelector("[data-field=changes]");
  for (const [field, value] of Object.entries(entry.changes ?? {})) {
    if (field in labels.fields) list.append(changeItem(field, entry.previous?.[field], value));
  }
  return li;
}

/**
 * Put one event in the history, in seq order (newest first), at most once per seq. An entry
 * read from the server (`logged`) replaces one shown live: it has the logged commit time.
 */
function record(entry, logged = false) {
  const items = [...history.children];
  const same = items.find((li) => Number(li.dataset.seq) === entry.seq);
  if (same) {
    if (logged) same.replaceWith(entryItem(entry));
    return;
  }
  const after = items.find((li) => Number(li.dataset.seq) < entry.seq) ?? null;
  history.insertBefore(entryItem(entry), after);
  while (history.children.length > historyMax) history.lastElementChild.remove();
  document.getElementById("history-empty").hidden = true;
}

/**
 * Events carry no commit time: a live entry shows when it arrived (milliseconds after the
 * commit, or later for what a reconnection replays). Re-reading the history after a
 * reconnection or a snapshot puts the logged times in, and whatever this page missed.
 */
function event(name, payload) {
  record({ ...payload, event: name, committed_at: new Date().toISOString() });
}

/** GET a JSON URL of the API; null when it fails (offline again: the next connection retries). */
async function read(url) {
  try {
    const answer = await fetch(url, { headers: { Accept: "application/json" } });
    return { status: answer.status, body: answer.ok ? await answer.json() : null };
  } catch {
    return null;
  }
}

async function reloadHistory() {
  const answer = await read(history.dataset.url);
  for (const entry of answer?.body?.events.slice(0, historyMax) ?? []) record(entry, true);
}

/** Too many users for a snapshot: read this one from the API instead (404: it is gone). */
async function reloadUser() {
  const answer = await read(history.dataset.userUrl);
  if (answer?.status === 404) return replace(null);
  const user = answer?.body?.user;
  // Events applied while the answer was on its way may be newer than it.
  if (user && !(held && user.version < held.version)) replace(user);
}

const socket = connectLive({
  initialSeq: Number(form.dataset.seq),
  onSnapshot(snapshot) {
    replace(snapshot.users.find((u) => u.id === userId) ?? null);
    reloadHistory();
  },
  onTooLarge() {
    reloadUser();
    reloadHistory();
  },
  onEvent(name, payload) {
    if (name === "users_reset") return deleted();
    if (name === "user_added" && payload.user.id === userId) {
      replace(payload.user);
      event(name, payload);
    }
    if (name === "user_updated" && payload.id === userId) {
      updated(payload);
      event(name, payload);
    }
    if (name === "user_deleted" && payload.id === userId) {
      deleted();
      event(name, payload);
    }
  },
});
let connections = 0;
socket.on("connect", () => {
  if (connections++) reloadHistory(); // what a reconnection replays arrives with no logged time
});
