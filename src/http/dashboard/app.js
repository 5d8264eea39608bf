// The dashboard's entry: who is signed in (GET /api/v1/session), the hash router (#/page/arg),
// the one live event stream every page listens to, and the frame (navigation, sign out).

import * as api from "./api.js";
import { h, show, errorBox, announce } from "./ui.js";
import * as login from "./login.js";
import * as overview from "./overview.js";
import * as clients from "./clients.js";
import * as topics from "./topics.js";
import * as retained from "./retained.js";
import * as live from "./live.js";
import * as history from "./history.js";
import * as publish from "./publish.js";
import * as listeners from "./listeners.js";

/** Each page: a module with `title` and `render(view, ctx, arg)` (returns a cleanup, or nothing). */
const PAGES = { overview, clients, topics, retained, live, history, publish, listeners };

/**
 * What the pages share: the session ({username, role, via}), `admin` (may change things), and
 * `bus`, where the stream's events arrive as "stats" and "client" events.
 */
const ctx = { session: null, admin: false, bus: new EventTarget(), lastStats: null };

let cleanup = null;
let closeStream = null;

const $ = (id) => document.getElementById(id);

function liveState(open, err) {
  const el = $("live-state");
  el.classList.toggle("on", open);
  el.classList.toggle("off", !open);
  el.textContent = open ? "live" : err ? "live updates stopped: " + err.message : "reconnecting…";
}

function startStream() {
  if (closeStream) closeStream();
  closeStream = api.events(
    [],
    {
      stats: (d) => {
        ctx.lastStats = d;
        ctx.bus.dispatchEvent(new CustomEvent("stats", { detail: d }));
      },
      client: (d) => ctx.bus.dispatchEvent(new CustomEvent("client", { detail: d })),
    },
    liveState,
  );
}

function signedIn(session) {
  ctx.session = session;
  ctx.admin = session.role === "admin";
  api.setCsrf(session.csrf_token);
  $("nav").hidden = false;
  $("who").hidden = false;
  $("live-state").hidden = false;
  document.querySelector(".shell").classList.remove("bare");
  const who =
    session.via === "open"
      ? "local access (no password file)"
      : (session.username || "api key") + " · " + session.role;
  $("who-name").textContent = who;
  $("logout").hidden = session.via !== "session";
  startStream();
}

function signedOut() {
  ctx.session = null;
  ctx.admin = false;
  api.setCsrf(null);
  if (closeStream) closeStream();
  closeStream = null;
  $("nav").hidden = true;
  $("who").hidden = true;
  $("live-state").hidden = true;
  document.querySelector(".shell").classList.add("bare");
}

/** Shows the page the hash names. */
function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  const view = $("view");
  view.replaceChildren();
  if (!ctx.session) {
    $("title").textContent = "Sign in";
    document.title = "Sign in · mqttd";
    cleanup = login.render(view, async (session) => {
      signedIn(session);
      announce("Signed in as " + (session.username || ""));
      if (!location.hash.startsWith("#/") || location.hash === "#/login") location.hash = "#/overview";
      else route();
    });
    return;
  }
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = PAGES[name];
  if (!page) {
    location.replace("#/overview");
    return;
  }
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  $("title").textContent = page.title;
  document.title = page.title + " · mqttd";
  for (const a of $("nav").querySelectorAll("a")) {
    if (a.getAttribute("href") === "#/" + name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    cleanup = page.render(view, ctx, arg) || null;
  } catch (e) {
    show(view, errorBox(e));
  }
}

async function boot() {
  $("skip").addEventListener("click", (e) => {
    e.preventDefault();
    $("main").focus();
  });
  $("logout").addEventListener("click", async () => {
    try {
      await api.post("/logout");
    } catch (e) {
      if (e.status !== 401) {
        show($("view"), errorBox(e));
        return;
      }
    }
    signedOut();
    announce("Signed out");
    route();
  });
  api.whenUnauthorized(() => {
    if (!ctx.session) return;
    signedOut();
    route();
    show($("view").querySelector(".login-error") || $("view"), h("p.notice.warn", { role: "status", text: "Your session ended; please sign in again." }));
  });
  window.addEventListener("hashchange", () => {
    route();
    $("title").focus();
  });
  try {
    signedIn(await api.get("/session"));
  } catch (e) {
    signedOut();
    if (e.status !== 401) {
      route();
      $("view").prepend(errorBox(e));
      return;
    }
  }
  route();
}

boot();
