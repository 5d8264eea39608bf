// Overview: live rates (messages in / out / dropped per second), connections and queued bytes,
// updated every second by the stream's `stats` event; the last hour from /api/v1/stats/series.

import * as api from "./api.js";
import { h, show, errorBox, num, rate, bytes, duration, clock } from "./ui.js";
import { LineChart } from "./chart.js";

export const title = "Overview";

/** The cards: id, label, how to read it from a stats body, how to show it, series colour. */
const CARDS = [
  ["rate-in", "Messages in", (s) => s.rates && s.rates.received_per_s, rate, "/s", "primary"],
  ["rate-out", "Messages out", (s) => s.rates && s.rates.sent_per_s, rate, "/s", "secondary-series"],
  ["rate-dropped", "Dropped", (s) => s.rates && s.rates.dropped_per_s, rate, "/s", "third-series"],
  ["connections", "Connections", (s) => s.connections, num, "", ""],
  ["queued", "Queued", (s) => s.queued_bytes, bytes, "", ""],
  ["sessions", "Sessions", (s) => s.sessions, num, "", ""],
  ["subscriptions", "Subscriptions", (s) => s.subscriptions, num, "", ""],
  ["retained-count", "Retained", (s) => s.retained, num, "", ""],
  ["bytes-in", "Bytes in", (s) => s.rates && s.rates.bytes_in_per_s, bytes, "/s", ""],
  ["bytes-out", "Bytes out", (s) => s.rates && s.rates.bytes_out_per_s, bytes, "/s", ""],
  ["uptime", "Uptime", (s) => s.uptime_seconds, duration, "", ""],
  ["memory", "Memory", (s) => s.memory_bytes, bytes, "", ""],
];

export function render(view, ctx) {
  const values = {};
  const cards = h(
    "dl.cards",
    { "aria-label": "Current figures" },
    CARDS.map(([id, label, , , unit, cls]) => {
      values[id] = h("span#" + id, { text: "–" });
      return h(
        "div.card" + (cls ? "." + cls : ""),
        {},
        h("dt", { text: label }),
        h("dd", {}, values[id], unit ? h("span.unit", { text: unit }) : null),
      );
    }),
  );
  const errors = h("div", {});
  const rateCanvas = h("canvas", { "aria-hidden": "true" });
  const connCanvas = h("canvas", { "aria-hidden": "true" });
  const events = h("ul.messages#client-events", { "aria-label": "Recent connects and disconnects" });
  view.append(
    errors,
    cards,
    h(
      "div.charts",
      {},
      h(
        "section.panel",
        { "aria-labelledby": "chart-rates" },
        h("h2#chart-rates", { text: "Messages per second, last hour" }),
        h(
          "ul.legend",
          {},
          h("li.s1", { text: "in" }),
          h("li.s2", { text: "out" }),
          h("li.s3", { text: "dropped" }),
        ),
        h("div.chart-box", {}, rateCanvas),
      ),
      h(
        "section.panel",
        { "aria-labelledby": "chart-conns" },
        h("h2#chart-conns", { text: "Connections, last hour" }),
        h("ul.legend", {}, h("li.s2", { text: "connections" })),
        h("div.chart-box", {}, connCanvas),
      ),
    ),
    h(
      "section.panel",
      { "aria-labelledby": "recent-heading" },
      h("h2#recent-heading", { text: "Recent connects and disconnects" }),
      events,
      h("p.muted.small#no-events", { text: "Nothing yet since this page opened." }),
    ),
  );

  const rates = new LineChart(
    rateCanvas,
    [
      { key: "received_per_s", color: "--series-1" },
      { key: "sent_per_s", color: "--series-2" },
      { key: "dropped_per_s", color: "--series-3" },
    ],
    { format: (n) => rate(n) },
  );
  const conns = new LineChart(connCanvas, [{ key: "connections", color: "--series-2" }], { format: (n) => num(n), integer: true });

  const fill = (stats) => {
    for (const [id, , read, fmt] of CARDS) values[id].textContent = fmt(read(stats));
  };

  const onStats = (e) => {
    fill(e.detail);
    if (e.detail.sample) {
      rates.push(e.detail.sample);
      conns.push(e.detail.sample);
    }
  };
  const onClient = (e) => {
    const d = e.detail;
    view.querySelector("#no-events").hidden = true;
    const verb = d.event === "connected" ? "connected" : "disconnected";
    const who = [d.username && "user " + d.username, d.ip_address, d.listener && "on " + d.listener]
      .filter(Boolean)
      .join(", ");
    events.prepend(
      h(
        "li",
        {},
        h("span.time", { text: clock(d.at) }),
        h(
          "span",
          {},
          h("a.topic", { href: "#/clients/" + api.seg(d.clientid), text: d.clientid }),
          " " + verb,
          who ? h("span.meta", { text: who }) : null,
          d.reason ? h("span.meta", { text: "(" + d.reason + ")" }) : null,
        ),
      ),
    );
    while (events.children.length > 12) events.lastChild.remove();
  };
  ctx.bus.addEventListener("stats", onStats);
  ctx.bus.addEventListener("client", onClient);

  if (ctx.lastStats) fill(ctx.lastStats);
  api.get("/stats").then(fill, (err) => show(errors, errorBox(err)));
  api.get("/stats/series").then(
    (series) => {
      const samples = (series && series.samples) || [];
      rates.set(samples);
      conns.set(samples);
    },
    (err) => errors.append(errorBox(err)),
  );

  return () => {
    ctx.bus.removeEventListener("stats", onStats);
    ctx.bus.removeEventListener("client", onClient);
    rates.destroy();
    conns.destroy();
  };
}
