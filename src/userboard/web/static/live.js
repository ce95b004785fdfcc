// The live connection shared by the pages: one Socket.IO client on /users that keeps
// body[data-socket] and the #connection indicator true. Two ways to follow the users table
// (docs/protocol.md):
// - connectView: the dashboard holds one view (search, filters, sort, page); the server sends the
//   whole window (`users_view`) and then what changed in it (`users_view_changed`);
// - connectLive: the edit page follows the whole table's events exactly once, in seq order
//   ("Client algorithm"): it connects with {since: the last seq applied}, events wait in
//   `pending` until every earlier seq was applied, a gap or a heartbeat ahead asks for `resync`.
//   A snapshot (or a fresh window) is the truth: it replaces what the page holds, whatever the
//   versions say.
// After RECONNECT_ATTEMPTS failed reconnections the page is `offline`; it then keeps trying
// every RETRY_MS (and when the browser comes back online) without leaving `offline` until a
// connection succeeds.
import { io } from "./vendor/socket.io.esm.min.js";

export const strings = JSON.parse(document.body.dataset.i18n || "{}");

const RECONNECT_ATTEMPTS = 5;
const RETRY_MS = 30000;

function showState(state) {
  document.body.dataset.socket = state;
  const indicator = document.getElementById("connection");
  if (indicator) {
    indicator.textContent = strings.connection?.[state] ?? state;
    indicator.dataset.state = state;
  }
}

function openSocket(auth, onState) {
  let offline = false;
  let retry = null;
  const socket = io("/users", {
    transports: ["websocket", "polling"],
    auth,
    reconnectionAttempts: RECONNECT_ATTEMPTS,
  });
  const show = (state) => {
    showState(state);
    onState?.(state);
  };
  const tryAgain = () => {
    clearTimeout(retry);
    if (offline && !socket.connected) socket.connect();
  };

  socket.on("connect", () => {
    offline = false;
    clearTimeout(retry);
    show("connected");
  });
  // Not active: the server ended this socket (its login ended) and it will not come back.
  socket.on("disconnect", () => show(socket.active ? "reconnecting" : "offline"));
  socket.on("connect_error", () => {
    if (!offline) show(socket.active ? "reconnecting" : "offline");
  });
  socket.io.on("reconnect_attempt", () => {
    if (!offline) show("reconnecting");
  });
  socket.io.on("reconnect_failed", () => {
    offline = true;
    show("offline");
    retry = setTimeout(tryAgain, RETRY_MS);
  });
  window.addEventListener("online", tryAgain);
  return socket;
}

/**
 * Hold one view: call `onWindow(message, whole)` for each message of the current view, `whole`
 * being true for `users_view` (the full window) and false for `users_view_changed`, and
 * `onSeq(seq)` whenever the seq the window reflects moves (a message or a heartbeat).
 * `view` is the view's parameters (with `after`); `initialSeq` the seq of the rendered page.
 */
export function connectView({ view, initialSeq, onWindow, onSeq, onState }) {
  let current = 0; // the latest view number of this connection; numbering restarts per socket
  let seq = initialSeq;
  const stats = { views: 0, changes: 0, dropped: 0, resyncs: 0 };
  // A function, so every reconnection subscribes again and gets a fresh window.
  const socket = openSocket((send) => send({ view }), onState);

  socket.on("disconnect", () => {
    current = 0;
  });
  socket.on("users_view", (message) => {
    if (message.view < current) return void (stats.dropped += 1);
    current = message.view;
    seq = message.seq;
    stats.views += 1;
    onWindow(message, true);
    onSeq?.(seq);
  });
  socket.on("users_view_changed", (message) => {
    if (message.view !== current) return void (stats.dropped += 1);
    seq = Math.max(seq, message.seq);
    stats.changes += 1;
    onWindow(message, false);
    onSeq?.(seq);
  });
  socket.on("heartbeat", (beat) => {
    seq = Math.max(seq, beat.seq);
    onSeq?.(seq);
  });

  /** Ask for a fresh window (the page found a row it cannot show). */
  function resync() {
    if (!socket.connected || !current) return;
    stats.resyncs += 1;
    socket.emit("resync", { view: current });
  }

  // For people's scripts and the tests.
  window.userboard = {
    socket, stats, resync,
    get seq() { return seq; },
    get view() { return current; },
  };
  return { socket, resync };
}

/**
 * Follow the whole table, calling:
 * - `onSnapshot(snapshot)`: the whole table at `snapshot.seq`; replace everything held with it;
 * - `onEvent(name, payload)` for every event, in seq order, once: `user_added`, `user_updated`,
 *   `user_deleted`, `users_reset` (the table was emptied at once: drop everything held), and
 *   the events of other entities, which a users page ignores;
 * - `onTooLarge(notice)`: the table is over `notice.max` users, so no snapshot comes.
 *
 * On a table that big the whole-table events still come: the socket is admitted at
 * `notice.seq`, so they continue from there. A page that holds only a few rows (the edit page
 * holds one) therefore stays a whole-table client: it re-reads its rows from the API and keeps
 * applying the events, rather than becoming a view client, since a view (a search) cannot
 * name exactly one user.
 * `initialSeq` is the seq the server-rendered page reflects (null: start from a snapshot).
 */
export function connectLive({ initialSeq, onSnapshot, onEvent, onTooLarge, onState }) {
  let lastSeq = initialSeq;
  let resyncing = false;
  const pending = new Map(); // seq -> [name, payload]
  const stats = { snapshots: 0, tooLarge: 0, applied: 0, resyncs: 0 };

  const socket = openSocket((send) => send(lastSeq === null ? {} : { since: lastSeq }), onState);

  function drain() {
    if (lastSeq === null) return;
    for (const seq of pending.keys()) if (seq <= lastSeq) pending.delete(seq);
    while (pending.has(lastSeq + 1)) {
      const [name, payload] = pending.get(lastSeq + 1);
      pending.delete(lastSeq + 1);
      lastSeq = payload.seq;
      stats.applied += 1;
      onEvent(name, payload);
    }
  }

  function resync() {
    if (resyncing || lastSeq === null || !socket.connected) return;
    resyncing = true;
    stats.resyncs += 1;
    socket.timeout(10000).emit("resync", { since: lastSeq }, () => {
      resyncing = false;
      drain();
      if (pending.size) resync();
    });
  }

  function receive(name, payload) {
    if (lastSeq !== null && payload.seq <= lastSeq) return;
    pending.set(payload.seq, [name, payload]);
    drain();
    if (pending.size) resync();
  }

  // What is pending belongs to this connection: the next one replays it from `since`, and a
  // server restored from a backup may number it differently.
  socket.on("disconnect", () => {
    resyncing = false;
    pending.clear();
  });
  // Not "only if newer": the snapshot's seq may be behind ours (a restored database) and its
  // rows may differ at the same version (a write nobody announced).
  socket.on("users_snapshot", (snapshot) => {
    onSnapshot(snapshot);
    lastSeq = snapshot.seq;
    stats.snapshots += 1;
    drain();
  });
  socket.on("users_too_large", (notice) => {
    lastSeq = notice.seq;
    stats.tooLarge += 1;
    onTooLarge?.(notice);
    drain();
  });
  socket.on("heartbeat", (beat) => {
    if (lastSeq !== null && beat.seq > lastSeq) resync();
  });
  // Every other numbered event is a change (of users or another entity): its seq counts, or
  // the page would take it for a gap.
  const CONTROL = new Set(["users_snapshot", "users_too_large", "heartbeat"]);
  socket.onAny((name, payload) => {
    if (!CONTROL.has(name) && Number.isSafeInteger(payload?.seq)) receive(name, payload);
  });

  // For people's scripts and the tests: the socket, counters and the last applied seq.
  window.userboard = { socket, stats, get lastSeq() { return lastSeq; } };
  return socket;
}
