// Clients: search by client id, username or address; a client's detail with its subscriptions
// and counters; kick (DELETE /api/v1/clients/{id}) and discard its session.

import * as api from "./api.js";
import { h, field, select, checkbox, show, errorBox, notice, table, num, bytes, when, announce, confirm, debounce } from "./ui.js";

export const title = "Clients";

/** The search survives going to a client and back. */
const search = { by: "like_clientid", text: "", connected: true, page: 1 };

const PER_PAGE = 50;

export function render(view, ctx, id) {
  if (id !== null) return detail(view, ctx, id);
  const text = field("Search", "client-search", { type: "search", value: search.text, placeholder: "part of a client id", autocomplete: "off" });
  const by = select(
    "Search by",
    "client-search-by",
    [
      ["like_clientid", "Client id (contains)"],
      ["username", "Username (exact)"],
      ["ip_address", "Address (exact)"],
    ],
    search.by,
  );
  const connected = checkbox("Connected only", "client-connected", search.connected);
  const results = h("div#client-results", { "aria-live": "polite", "aria-busy": "false" });
  const form = h(
    "form.inline",
    { role: "search", "aria-label": "Find clients" },
    h("div.field.grow", {}, text.field),
    by.field,
    connected.field,
    h("button", { type: "submit", text: "Search" }),
  );
  const placeholders = { like_clientid: "part of a client id", username: "a username", ip_address: "an IP address" };

  let seq = 0;
  const load = async () => {
    search.text = text.input.value.trim();
    search.by = by.input.value;
    search.connected = connected.input.checked;
    const mine = ++seq;
    results.setAttribute("aria-busy", "true");
    try {
      const q = { page: search.page, limit: PER_PAGE, connected: search.connected ? "true" : "" };
      if (search.text) q[search.by] = search.text;
      const page = await api.get("/clients" + api.query(q));
      if (mine !== seq) return;
      show(results, list(page, load));
    } catch (err) {
      if (mine === seq) show(results, errorBox(err));
    } finally {
      results.setAttribute("aria-busy", "false");
    }
  };
  const again = () => {
    search.page = 1;
    load();
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    again();
  });
  text.input.addEventListener("input", debounce(again, 250));
  by.input.addEventListener("change", () => {
    text.input.placeholder = placeholders[by.input.value];
    again();
  });
  connected.input.addEventListener("change", again);
  view.append(h("div.panel", {}, form, results));
  load();
  // Clients coming and going (the event stream) refresh the list, at most once a second.
  const onClient = debounce(load, 1000);
  ctx.bus.addEventListener("client", onClient);
  return () => ctx.bus.removeEventListener("client", onClient);
}

function list(page, reload) {
  const rows = page.data.map((c) => [
    h("a.mono", { href: "#/clients/" + api.seg(c.clientid), text: c.clientid }),
    c.username || h("span.muted", { text: "–" }),
    c.connected ? (c.ip_address || "") + (c.port ? ":" + c.port : "") : h("span.badge", { text: "offline" }),
    c.proto_ver ? protocol(c.proto_ver) : "–",
    c.connected_at ? when(c.connected_at) : "–",
    num(c.subscriptions_cnt),
    num(c.mqueue_len),
    num(c.recv_pkt),
    num(c.send_pkt),
  ]);
  const meta = page.meta;
  const pager = h(
    "div.pager",
    {},
    h("button.secondary.small", {
      type: "button",
      text: "Previous",
      disabled: meta.page <= 1,
      onclick: () => {
        search.page--;
        reload();
      },
    }),
    h("span.muted.small", { text: `page ${meta.page}` }),
    h("button.secondary.small", {
      type: "button",
      text: "Next",
      disabled: !meta.hasnext,
      onclick: () => {
        search.page++;
        reload();
      },
    }),
  );
  if (!rows.length) return notice("info", "No client matches.");
  return [
    table(
      `${num(meta.count)} client${meta.count === 1 ? "" : "s"}`,
      [
        { title: "Client id" },
        { title: "Username" },
        { title: "Address" },
        { title: "MQTT" },
        { title: "Connected since" },
        { title: "Subs", num: true },
        { title: "Queued", num: true },
        { title: "Pkts in", num: true },
        { title: "Pkts out", num: true },
      ],
      rows,
      (i) => ({ "data-clientid": page.data[i].clientid }),
    ),
    meta.hasnext || meta.page > 1 ? pager : null,
  ];
}

function protocol(v) {
  return { 3: "3.1", 4: "3.1.1", 5: "5.0" }[v] || String(v);
}

function expiry(seconds) {
  if (seconds === 4294967295) return "never";
  if (!seconds) return "at disconnect";
  return num(seconds) + " s after disconnect";
}

function detail(view, ctx, id) {
  const status = h("div#client-status", { role: "status" });
  const body = h("div", {});
  view.append(h("p", {}, h("a", { href: "#/clients", text: "← All clients" })), status, body);

  const load = async () => {
    let c;
    try {
      c = await api.get("/clients/" + api.seg(id));
    } catch (err) {
      show(body, err.status === 404 ? notice("info", `There is no session for client “${id}” (any more).`) : errorBox(err));
      return;
    }
    let subs = (c.subscriptions || []).map((s) => ({ topic: s.topic, qos: s.qos }));
    try {
      const page = await api.get("/subscriptions" + api.query({ clientid: id, limit: 1000 }));
      if (page && Array.isArray(page.data)) subs = page.data;
    } catch {
      // Older brokers: the detail's own list is enough.
    }
    const kick = h("button.danger#kick", {
      type: "button",
      text: "Disconnect",
      disabled: !c.connected,
      onclick: async () => {
        if (!(await confirm(`Disconnect client “${id}”? It may reconnect by itself.`, "Disconnect"))) return;
        try {
          await api.del("/clients/" + api.seg(id));
          show(status, notice("ok", `Client “${id}” was disconnected.`));
          announce(`Client ${id} disconnected`);
          load();
        } catch (err) {
          show(status, errorBox(err));
        }
      },
    });
    const discard = h("button.secondary#discard-session", {
      type: "button",
      text: "Discard session",
      onclick: async () => {
        if (!(await confirm(`Discard the session of “${id}”? Its subscriptions and queued messages are lost.`, "Discard"))) return;
        try {
          await api.del("/sessions/" + api.seg(id));
          show(status, notice("ok", `The session of “${id}” was discarded.`));
          announce(`Session of ${id} discarded`);
          load();
        } catch (err) {
          show(status, errorBox(err));
        }
      },
    });
    show(
      body,
      h(
        "section.panel",
        { "aria-labelledby": "client-heading" },
        h("h2#client-heading.mono", {}, c.clientid, " ", h("span.badge" + (c.connected ? ".ok" : ""), { text: c.connected ? "connected" : "offline" })),
        ctx.admin ? h("div.toolbar", {}, kick, discard) : h("p.muted.small", { text: "Viewers cannot disconnect clients." }),
        h(
          "dl.facts",
          {},
          fact("Username", c.username || "–"),
          fact("Address", c.ip_address ? c.ip_address + ":" + c.port : "–"),
          fact("Listener", c.listener || "–"),
          fact("MQTT version", c.proto_ver ? protocol(c.proto_ver) : "–"),
          fact("Keep alive", c.keepalive !== undefined ? c.keepalive + " s" : "–"),
          fact("Clean start", c.clean_start === undefined ? "–" : c.clean_start ? "yes" : "no"),
          fact("Connected since", when(c.connected_at)),
          fact("Session expires", expiry(c.expiry_interval)),
          fact("In flight", num(c.inflight_cnt)),
          fact("Queued", num(c.mqueue_len)),
          fact("Dropped from queue", num(c.mqueue_dropped)),
          fact("Packets in / out", num(c.recv_pkt) + " / " + num(c.send_pkt)),
          fact("Bytes in / out", bytes(c.recv_oct) + " / " + bytes(c.send_oct)),
        ),
      ),
      h(
        "section.panel",
        { "aria-labelledby": "subs-heading" },
        h("h2#subs-heading", { text: "Subscriptions" }),
        subs.length
          ? table(
              null,
              [{ title: "Filter" }, { title: "QoS", num: true }, { title: "Options" }],
              subs.map((s) => [h("span.mono", { text: s.topic }), String(s.qos), options(s)]),
            )
          : h("p.muted", { text: "No subscriptions." }),
      ),
    );
  };
  load();
  // This client connecting or leaving (the event stream) refreshes the detail.
  const onClient = (e) => {
    if (e.detail && e.detail.clientid === id) load();
  };
  ctx.bus.addEventListener("client", onClient);
  return () => ctx.bus.removeEventListener("client", onClient);
}

function fact(label, value) {
  return [h("dt", { text: label }), h("dd", {}, value)];
}

function options(s) {
  const parts = [];
  if (s.nl) parts.push("no local");
  if (s.rap) parts.push("retain as published");
  if (s.rh !== undefined && s.rh !== 0) parts.push("retain handling " + s.rh);
  return parts.join(", ") || "–";
}
