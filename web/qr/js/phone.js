// The phone's side of QR login (/qr/approve/?client_id=...): logs in when it holds no token,
// joins the hub, proves its account (identify), shows what is asking, and approves (a ticket from
// GET /auth/encrypt_user_data/ sent as pending_ticket) or denies.
import { $, Hub, Unreachable, api, renderUser, show } from "./common.js";

const CLIENT_ID = /^[A-Za-z0-9_-]{16,128}$/;
const TOKEN_KEY = "chat.token";
// Views after which the hub is over for this page: a late socket close changes nothing.
const FINAL_VIEWS = new Set(["approved", "denied", "taken", "expired", "inactive", "no-code", "login"]);

let clientId = null;
let token = null;
let me = null;
let hub = null;

function currentView() {
  return document.body.dataset.state;
}

function leaveHub() {
  if (hub) hub.close();
  hub = null;
}

function askForCode(error = "") {
  leaveHub();
  $("#code-error").textContent = error;
  show("no-code");
}

function askToLogIn(error = "") {
  leaveHub();
  token = null;
  me = null;
  localStorage.removeItem(TOKEN_KEY);
  $("#login-error").textContent = error;
  show("login");
}

function unreachable() {
  leaveHub();
  show("unreachable");
}

async function proceed() {
  token = localStorage.getItem(TOKEN_KEY);
  if (!token) {
    askToLogIn();
    return;
  }
  show("connecting");
  try {
    const answer = await api("/users/me/", { token });
    if (answer.status === 401) {
      askToLogIn("Your session on this phone has ended. Log in again.");
      return;
    }
    if (answer.status !== 200) {
      unreachable();
      return;
    }
    me = answer.body;
  } catch (error) {
    if (error instanceof Unreachable) {
      unreachable();
      return;
    }
    throw error;
  }
  join();
}

function join() {
  leaveHub();
  renderUser(document, me);
  show("connecting");
  const mine = new Hub(clientId, { onOp: (message) => onOp(mine, message), onGone: (gone) => onGone(mine, gone) });
  hub = mine;
}

function onOp(source, message) {
  if (source !== hub) return;
  switch (message.op) {
    case "hello":
      if (message.role === "browser") {
        // The hub did not exist: this code is no longer shown on any computer.
        leaveHub();
        show("inactive");
      } else {
        hub.send({ op: "identify", token });
      }
      break;
    case "login request":
      showRequest(message);
      break;
    case "identified":
      me = message.user;
      renderUser(document, me);
      break;
    case "bad token":
      askToLogIn("Your session on this phone has ended. Log in again.");
      break;
    case "clients already in hub":
      show("taken");
      break;
    case "hub is full":
      askForCode("That code is not valid. Check it on the computer.");
      break;
    case "access granted":
      show("approved");
      break;
    case "denied":
      show("denied");
      break;
    case "timeout":
      show("expired");
      break;
    case "browser disconnected":
      leaveHub();
      show("inactive");
      break;
    case "bad ticket":
      $("#request-error").textContent = "The approval was not accepted. Try again.";
      show("request");
      break;
    case "try again later":
      if (currentView() === "approving") {
        $("#request-error").textContent = "The server is busy. Try again in a moment.";
        show("request");
      }
      break;
    default:
      break; // heartbeat_ack, mobile connected, and informational ops added later
  }
}

function onGone(source, { expected }) {
  if (source !== hub) return;
  hub = null;
  if (!expected && !FINAL_VIEWS.has(currentView())) show("unreachable");
}

function showRequest(request) {
  $("#req-browser").textContent = request.browser || "Unknown browser";
  $("#req-os").textContent = request.os || "Unknown system";
  $("#req-address").textContent = request.address || "unknown";
  const opened = new Date(request.opened_at);
  $("#req-time").textContent = Number.isNaN(opened.getTime()) ? "unknown" : opened.toLocaleString();
  $("#request-error").textContent = "";
  show("request");
}

async function approve() {
  if (!hub) return;
  show("approving");
  try {
    const answer = await api("/auth/encrypt_user_data/", { token });
    if (answer.status === 401) {
      askToLogIn("Your session on this phone has ended. Log in again.");
      return;
    }
    if (answer.status !== 200 || !answer.body || typeof answer.body.token !== "string") {
      const busy = answer.status === 429;
      $("#request-error").textContent = busy
        ? "Too many approvals are waiting. Try again in a couple of minutes."
        : "The approval could not be made. Try again.";
      show("request");
      return;
    }
    if (!hub) return; // the hub ended while the ticket was being made
    hub.send({ op: "pending_ticket", encrypted_user_payload: answer.body.token });
  } catch (error) {
    if (error instanceof Unreachable) unreachable();
    else throw error;
  }
}

function deny() {
  if (hub) hub.send({ op: "deny" });
}

async function switchAccount() {
  const old = token;
  askToLogIn();
  if (old) {
    try {
      await api("/auth/logout/", { method: "POST", token: old });
    } catch (error) {
      if (!(error instanceof Unreachable)) throw error;
    }
  }
}

async function logIn(event) {
  event.preventDefault();
  const email = $("#email").value.trim();
  const password = $("#password").value;
  const error = $("#login-error");
  error.textContent = "";
  $("#login-submit").disabled = true;
  try {
    const answer = await api("/auth/login/", { method: "POST", json: { email, password } });
    if (answer.status === 200 && answer.body && typeof answer.body.token === "string") {
      localStorage.setItem(TOKEN_KEY, answer.body.token);
      $("#password").value = "";
      await proceed();
    } else if (answer.status === 401) {
      error.textContent = "Wrong email or password.";
    } else if (answer.status === 422) {
      error.textContent = "Enter your email and your password (at least 8 characters).";
    } else if (answer.status === 429) {
      error.textContent = "Too many attempts. Wait a little and try again.";
    } else {
      error.textContent = "Could not log in. Try again.";
    }
  } catch (failure) {
    if (failure instanceof Unreachable) error.textContent = "Cannot reach the server. Try again.";
    else throw failure;
  } finally {
    $("#login-submit").disabled = false;
  }
}

function enterCode(event) {
  event.preventDefault();
  const code = $("#code").value.replace(/\s+/g, "").toLowerCase();
  if (!CLIENT_ID.test(code)) {
    $("#code-error").textContent = "That code is not valid. Check it on the computer.";
    return;
  }
  clientId = code;
  history.replaceState(null, "", `?client_id=${encodeURIComponent(code)}`);
  proceed();
}

function start() {
  $("#code-form").addEventListener("submit", enterCode);
  $("#login-form").addEventListener("submit", logIn);
  $("#approve").addEventListener("click", approve);
  $("#deny").addEventListener("click", deny);
  $("#switch-account").addEventListener("click", switchAccount);
  $("#retry").addEventListener("click", proceed);
  const given = new URLSearchParams(location.search).get("client_id");
  if (!given) {
    askForCode();
  } else if (!CLIENT_ID.test(given)) {
    askForCode("That code is not valid. Check it on the computer.");
  } else {
    clientId = given;
    proceed();
  }
}

start();
