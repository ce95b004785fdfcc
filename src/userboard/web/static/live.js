// The live connection shared by the pages: one Socket.IO client on /users that keeps
// body[data-socket] and the #connection indicator true, orders events by seq and hands them
// to the page's handlers. Events that arrive before the snapshot are held until it is applied.
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
 * `initialSeq` is the seq the server-rendered page shows.
 */
export function connectLive({ initialSeq, onSnapshot, onEvent }) {
  let lastSeq = initialSeq;
  let synced = false;
  let held = [];
  const socket = io("/users", { transports: ["websocket", "polling"] });

  const apply = (name, payload) => {
    if (payload.seq <= lastSeq) return; // already reflected
    lastSeq = payload.seq;
    onEvent(name, payload);
  };

  socket.on("connect", () => showState("connected"));
  socket.on("disconnect", () => {
    synced = false;
    showState(socket.active ? "reconnecting" : "offline");
  });
  socket.on("connect_error", () => showState(socket.active ? "reconnecting" : "offline"));
  socket.io.on("reconnect_attempt", () => showState("reconnecting"));
  socket.io.on("reconnect_failed", () => showState("offline"));

  socket.on("users_snapshot", (snapshot) => {
    onSnapshot(snapshot);
    lastSeq = snapshot.seq;
    synced = true;
    const pending = held.sort((a, b) => a[1].seq - b[1].seq);
    held = [];
    for (const [name, payload] of pending) apply(name, payload);
  });
  for (const name of ["user_added", "user_updated", "user_deleted"]) {
    socket.on(name, (payload) => {
      if (!synced) held.push([name, payload]);
      else apply(name, payload);
    });
  }
  return socket;
}
