// The live connection shared by the pages: one Socket.IO client on /users that keeps
// body[data-socket] and the #connection indicator true. Two ways to follow the users table
// (docs/protocol.md):
// - connectView: the dashboard holds one view (search, filters, sort, page); the server sends the
//   whole window (`users_view`) and then what changed in it (`users_view_changed`);
// - connectLive: the edit page follows the whole table's events exactly once, in seq order
//   ("Client algorithm"): it connects with {since: the last seq applied}, events wait in
//   `pending` until every earlier seq was applied, a gap or a heartbeat ahead asks for `resync`.
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
 * Follow the whole table: call `onSnapshot(snapshot)` and `onEvent(name, payload)`.
 * `initialSeq` is the seq the server-rendered page reflects (null: start from a snapshot).
 */
export function connectLive({ initialSeq, onSnapshot, onEvent, onState }) {
  let lastSeq = initialSeq;
  let resyncing = false;
  const pending = new Map(); // seq -> [name, payload]
  const stats = { snapshots: 0, applied: 0, resyncs: 0 };

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

  socket.on("disconnect", () => {
    resyncing = false;
  });
  socket.on("users_snapshot", (snapshot) => {
    onSnapshot(snapshot);
    lastSeq = snapshot.seq;
    stats.snapshots += 1;
    drain();
  });
  socket.on("heartbeat", (beat) => {
    if (lastSeq !== null && beat.seq > lastSeq) resync();
  });
  for (const name of ["user_added", "user_updated", "user_deleted"]) {
    socket.on(name, (payload) => receive(name, payload));
  }

  // For people's scripts and the tests: the socket, counters and the last applied seq.
  window.userboard = { socket, stats, get lastSeq() { return lastSeq; } };
  return socket;
}
