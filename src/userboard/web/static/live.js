// The live connection shared by the pages: one Socket.IO client on /users that keeps
// body[data-socket] and the #connection indicator true, and hands each change event to the
// page exactly once, in seq order (docs/protocol.md, "Client algorithm"):
// - it connects with {since: the last seq applied}, so the server replays what was missed;
// - events wait in `pending` until every earlier seq was applied; a gap asks for `resync`;
// - a heartbeat ahead of the last applied seq also asks for `resync`;
// - a duplicate or an older event (seq <= last) is dropped.
import { io } from "./vendor/socket.io.esm.min.js";

export const strings = JSON.parse(document.body.dataset.i18n || "{}");

function showState(state) {
  document.body.dataset.socket = state;
  const indicator = document.getElementById("connection");
  if (indicator) {
    indicator.textContent = strings.connection?.[state] ?? state;
    indicator.dataset.state = state;
  }
}

/**
 * Connect and call `onSnapshot(snapshot)` and `onEvent(name, payload)`.
 * `initialSeq` is the seq the server-rendered page reflects (null: start from a snapshot).
 */
export function connectLive({ initialSeq, onSnapshot, onEvent }) {
  let lastSeq = initialSeq;
  let resyncing = false;
  const pending = new Map(); // seq -> [name, payload]
  const stats = { snapshots: 0, applied: 0, resyncs: 0 };

  const socket = io("/users", {
    transports: ["websocket", "polling"],
    auth: (send) => send(lastSeq === null ? {} : { since: lastSeq }),
  });

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

  socket.on("connect", () => showState("connected"));
  socket.on("disconnect", () => {
    resyncing = false;
    showState(socket.active ? "reconnecting" : "offline");
  });
  socket.on("connect_error", () => showState(socket.active ? "reconnecting" : "offline"));
  socket.io.on("reconnect_attempt", () => showState("reconnecting"));
  socket.io.on("reconnect_failed", () => showState("offline"));

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
