// The edit page: say so when the user being edited changes or disappears elsewhere.
import { connectLive, strings } from "./live.js";

const form = document.getElementById("edit-user");
const userId = Number(form.dataset.userId);
const notice = document.getElementById("remote-notice");
let shownVersion = Number(form.dataset.version);

function say(lines) {
  notice.replaceChildren(...lines.map((text) => {
    const p = document.createElement("p");
    p.textContent = text;
    return p;
  }));
  notice.hidden = false;
}

function changed(version, changes) {
  if (version <= shownVersion) return;
  shownVersion = version;
  const lines = [strings.changed_elsewhere ?? "Changed elsewhere:"];
  for (const [field, value] of Object.entries(changes)) {
    if (field in (strings.fields ?? {})) lines.push(`${strings.fields[field]}: ${value}`);
  }
  say(lines);
  notice.dataset.kind = "changed";
}

function deleted() {
  say([strings.deleted_elsewhere ?? "Deleted elsewhere."]);
  notice.dataset.kind = "deleted";
  for (const button of form.querySelectorAll("button[type=submit]")) button.disabled = true;
}

connectLive({
  initialSeq: Number(form.dataset.seq),
  onSnapshot(snapshot) {
    const user = snapshot.users.find((u) => u.id === userId);
    if (!user) return deleted();
    if (user.version > shownVersion) {
      changed(user.version, Object.fromEntries(
        Object.keys(strings.fields ?? {}).map((field) => [field, user[field]])));
    }
  },
  onEvent(name, payload) {
    if (name === "user_updated" && payload.id === userId) changed(payload.version, payload.changes);
    if (name === "user_deleted" && payload.id === userId) deleted();
  },
});
