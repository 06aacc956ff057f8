// Shared by the desktop page (/qr/) and the phone page (/qr/approve/): the JSON API, the hub
// websocket (API.md 13) and small view helpers. No framework, no build step.

export class Unreachable extends Error {}

// Asks the API through the same nginx that served the page. Resolves to {status, body, headers};
// a network failure (or a 502/503/504 from nginx) rejects with Unreachable.
export async function api(path, { method = "GET", token = null, authorization = null, json } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (authorization) headers.Authorization = authorization;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new Unreachable(String(error));
  }
  if (response.status >= 502 && response.status <= 504) {
    throw new Unreachable(`HTTP ${response.status}`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { status: response.status, body, headers: response.headers };
}

// A 429 (the QR exchange shares the log-in rate limit) is waited out a few times.
export async function apiRetrying(path, options) {
  for (let attempt = 0; ; attempt += 1) {
    const answer = await api(path, options);
    if (answer.status !== 429 || attempt >= 5) return answer;
    const wait = Number(answer.headers.get("Retry-After")) || 1;
    await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 10) * 1000));
  }
}

export function hubUrl(clientId) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/auth_events/qr_auth/?client_id=${encodeURIComponent(clientId)}`;
}

// One hub connection: `onOp(message)` for every message, `onGone({expected})` once when the
// socket is gone (expected: after a message that ends the hub, or after close()).
export class Hub {
  constructor(clientId, { onOp, onGone }) {
    this.ended = false;
    this.closedByUs = false;
    this.socket = new WebSocket(hubUrl(clientId));
    this.heartbeat = null;
    this.socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!message || typeof message.op !== "string") return;
      if (message.op === "hello") this.startHeartbeat(message.heartbeat_timeout);
      if (ENDING_OPS.has(message.op)) this.ended = true;
      onOp(message);
    });
    this.socket.addEventListener("close", () => {
      clearInterval(this.heartbeat);
      onGone({ expected: this.ended || this.closedByUs });
    });
  }

  startHeartbeat(timeoutSeconds) {
    const every = Math.max(1, Math.min(15, (Number(timeoutSeconds) || 45) / 3)) * 1000;
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.send({ op: "heartbeat" }), every);
  }

  send(message) {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  close() {
    this.closedByUs = true;
    clearInterval(this.heartbeat);
    if (this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000);
  }
}

// After these the server closes the socket itself. ("try again later" is not one: it also answers
// a ticket the server could not check yet, and the hub stays open.)
const ENDING_OPS = new Set(["access granted", "timeout", "denied", "clients already in hub", "hub is full"]);

// Shows the one view named `state` (elements with data-view) and records it on <body>.
export function show(state) {
  document.body.dataset.state = state;
  for (const view of document.querySelectorAll("[data-view]")) {
    view.hidden = view.dataset.view !== state;
  }
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

// Fills every element marked data-user inside `root` with the user's avatar and name.
export function renderUser(root, user) {
  for (const box of root.querySelectorAll("[data-user]")) {
    box.replaceChildren(userBadge(user));
  }
  for (const name of root.querySelectorAll("[data-username]")) {
    name.textContent = user ? user.username : "";
  }
}

function userBadge(user) {
  const badge = document.createElement("span");
  badge.className = "user";
  const initial = document.createElement("span");
  initial.className = "avatar avatar-initial";
  initial.textContent = user ? user.username.slice(0, 1).toUpperCase() : "?";
  if (user && user.avatar_url) {
    const image = document.createElement("img");
    image.className = "avatar";
    image.alt = "";
    image.src = user.avatar_url;
    image.addEventListener("error", () => image.replaceWith(initial));
    badge.append(image);
  } else {
    badge.append(initial);
  }
  const name = document.createElement("span");
  name.className = "user-name";
  name.textContent = user ? user.username : "";
  badge.append(name);
  return badge;
}
