// The computer's side of QR login (/qr/): opens a hub under a random client_id, shows the phone
// page's URL as a QR code and a short text code, follows the hub, and logs in only after the
// person confirms the account the phone approved with.
import qrcode from "../vendor/qrcode-generator-2.0.4.mjs";
import { $, Hub, Unreachable, api, apiRetrying, renderUser, show } from "./common.js";

// 32 characters nobody confuses when typing (no l, o, 0, 1): a byte & 31 picks one uniformly.
const ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789";
const CODE_LENGTH = 20; // 100 random bits; the hub allows 16-128 characters of A-Za-z0-9_-
const TOKEN_KEY = "chat.token";

let hub = null;
let clientId = null;
let countdown = null;
let pending = null; // {token, user} between the exchange and the person's answer

function newClientId() {
  const bytes = new Uint8Array(CODE_LENGTH);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => ALPHABET[byte & 31]).join("");
}

function approveUrl(id) {
  return `${location.origin}/qr/approve/?client_id=${id}`;
}

function drawQr(container, text) {
  const code = qrcode(0, "M");
  code.addData(text);
  code.make();
  const count = code.getModuleCount();
  const quiet = 4;
  const size = count + quiet * 2;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.setAttribute("role", "img");
  const background = document.createElementNS(ns, "rect");
  background.setAttribute("width", String(size));
  background.setAttribute("height", String(size));
  background.setAttribute("fill", "#fff");
  const modules = [];
  for (let row = 0; row < count; row += 1) {
    for (let col = 0; col < count; col += 1) {
      if (code.isDark(row, col)) modules.push(`M${col + quiet} ${row + quiet}h1v1h-1z`);
    }
  }
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", modules.join(""));
  path.setAttribute("fill", "#000");
  svg.append(background, path);
  container.replaceChildren(svg);
}

function startCountdown(seconds) {
  clearInterval(countdown);
  const end = Date.now() + seconds * 1000;
  const tick = () => {
    const left = Math.max(0, Math.round((end - Date.now()) / 1000));
    $("#countdown").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  };
  tick();
  countdown = setInterval(tick, 1000);
}

function stopHub() {
  clearInterval(countdown);
  if (hub) hub.close();
  hub = null;
}

function newCode() {
  stopHub();
  pending = null;
  clientId = newClientId();
  const url = approveUrl(clientId);
  drawQr($("#qr"), url);
  $("#qr").dataset.url = url;
  const link = $("#approve-link");
  link.href = "/qr/approve/";
  link.textContent = `${location.host}/qr/approve/`;
  $("#text-code").textContent = clientId.match(/.{1,4}/g).join(" ");
  $("#scanned-who").hidden = true;
  show("connecting");
  const mine = new Hub(clientId, { onOp: (message) => onOp(mine, message), onGone: (gone) => onGone(mine, gone) });
  hub = mine;
}

function onOp(source, message) {
  if (source !== hub) return;
  switch (message.op) {
    case "hello":
      startCountdown(Number(message.timeout) || 120);
      show("waiting");
      break;
    case "mobile connected":
      show("scanned");
      break;
    case "mobile identified":
      renderUser($("[data-view=scanned]"), message.user);
      $("#scanned-who").hidden = false;
      show("scanned");
      break;
    case "mobile disconnected":
      $("#scanned-who").hidden = true;
      show("waiting");
      break;
    case "access granted":
      clearInterval(countdown);
      exchange(message.auth_token);
      break;
    case "denied":
      clearInterval(countdown);
      show("denied");
      break;
    case "timeout":
      clearInterval(countdown);
      show("expired");
      break;
    case "clients already in hub":
    case "hub is full":
      // Someone else's hub under the same id (or a malformed one): never ours to use.
      failed("This code could not be used. Make a new one.");
      break;
    default:
      break; // heartbeat_ack, and informational ops added later
  }
}

function onGone(source, { expected }) {
  if (source !== hub) return;
  hub = null;
  clearInterval(countdown);
  if (!expected) show("unreachable");
}

function failed(reason) {
  stopHub();
  $("#failed-reason").textContent = reason;
  show("failed");
}

async function exchange(ticket) {
  const id = clientId;
  show("exchanging");
  try {
    const answer = await apiRetrying(`/auth/qr_auth/?client_id=${encodeURIComponent(id)}`, {
      authorization: ticket,
    });
    if (answer.status !== 200 || !answer.body || typeof answer.body.token !== "string") {
      failed("The server did not accept the approval. Make a new code and try again.");
      return;
    }
    const token = answer.body.token;
    const me = await api("/users/me/", { token });
    if (me.status !== 200) {
      failed("The account could not be read. Make a new code and try again.");
      return;
    }
    pending = { token, user: me.body };
    renderUser($("[data-view=confirm]"), me.body);
    show("confirm");
  } catch (error) {
    if (error instanceof Unreachable) show("unreachable");
    else throw error;
  }
}

function confirmLogin() {
  if (!pending) return;
  sessionStorage.setItem(TOKEN_KEY, pending.token);
  showLoggedIn(pending.user);
  pending = null;
}

async function refuseLogin() {
  if (!pending) return;
  const { token } = pending;
  pending = null;
  try {
    // Ends the session the phone's approval created: nothing of it is kept here.
    await api("/auth/logout/", { method: "POST", token });
  } catch (error) {
    if (!(error instanceof Unreachable)) throw error;
  }
  show("cancelled");
}

function showLoggedIn(user) {
  renderUser($("[data-view=logged-in]"), user);
  show("logged-in");
}

async function logOut() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
  if (token) {
    try {
      await api("/auth/logout/", { method: "POST", token });
    } catch (error) {
      if (!(error instanceof Unreachable)) throw error;
    }
  }
  newCode();
}

function notMe() {
  // The phone in the hub is someone else's: end the hub (the phone is told) and start afresh.
  if (hub) hub.send({ op: "deny" });
  newCode();
}

async function start() {
  for (const button of document.querySelectorAll("[data-new-code]")) {
    button.addEventListener("click", newCode);
  }
  $("#confirm-yes").addEventListener("click", confirmLogin);
  $("#confirm-no").addEventListener("click", refuseLogin);
  $("#log-out").addEventListener("click", logOut);
  $("#not-me-scanned").addEventListener("click", notMe);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    try {
      const me = await api("/users/me/", { token });
      if (me.status === 200) {
        showLoggedIn(me.body);
        return;
      }
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (error) {
      if (error instanceof Unreachable) {
        show("unreachable");
        return;
      }
      throw error;
    }
  }
  newCode();
}

start();
