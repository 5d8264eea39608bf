// History: recorded messages by topic filter and time range (GET /api/v1/history), newest first.
// The server answers the newest `limit` messages of the range (oldest first within the page) and
// a cursor for the older ones: each page is shown reversed, older pages below. A broker without
// [history] answers 404 NOT_ENABLED: say so plainly.

import * as api from "./api.js";
import { h, field, select, show, errorBox, notice, table, when, payloadBytes, hex, utf8 } from "./ui.js";

export const title = "History";

/** A datetime-local input's value for a Date (local time, minutes). */
function local(d) {
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function render(view) {
  const hourAgo = new Date(Date.now() - 3600 * 1000);
  const filter = field("Topic filter", "history-filter", { value: "#", autocomplete: "off", spellcheck: "false" });
  const from = field("From", "history-from", { type: "datetime-local", value: local(hourAgo) });
  const to = field("To (empty: now)", "history-to", { type: "datetime-local" });
  const limit = select("Per page", "history-limit", [["50", "50"], ["100", "100"], ["500", "500"]], "100");
  const form = h("form.inline", { role: "search", "aria-label": "Query the history" }, h("div.field.grow", {}, filter.field), from.field, to.field, limit.field, h("button", { type: "submit", text: "Query" }));
  const out = h("div#history-results", {});
  view.append(h("section.panel", {}, form, out));

  let rows = [];
  const run = async (cursor) => {
    const q = {
      filter: filter.input.value.trim() || "#",
      from: from.input.value ? new Date(from.input.value).toISOString() : "",
      to: to.input.value ? new Date(to.input.value).toISOString() : "",
      limit: limit.input.value,
      cursor: cursor || "",
    };
    try {
      const page = await api.get("/history" + api.query(q));
      const newestFirst = (page.data || []).slice().reverse();
      rows = cursor ? rows.concat(newestFirst) : newestFirst;
      const next = page.meta && page.meta.next_cursor;
      show(
        out,
        rows.length
          ? table(
              `${rows.length} message${rows.length === 1 ? "" : "s"}, newest first${next ? "; older ones can be loaded" : ""}`,
              [{ title: "Time" }, { title: "Topic" }, { title: "QoS", num: true }, { title: "Payload" }, { title: "From" }],
              rows.map((m) => [when(m.time), h("span.mono", { text: m.topic }), String(m.qos) + (m.retain ? " R" : ""), h("span.preview.mono", { text: payload(m) }), m.clientid || "–"]),
            )
          : notice("info", "No message recorded in this range."),
        next ? h("div.pager", {}, h("button.secondary", { type: "button", text: "Load older messages", onclick: () => run(next) })) : null,
      );
    } catch (err) {
      if (err.code === "NOT_ENABLED") {
        show(
          out,
          notice(
            "warn",
            h("strong", { text: "History is not enabled on this broker. " }),
            "Add a [history] table to the configuration (and reload or restart) to record messages; see the README.",
          ),
        );
      } else show(out, errorBox(err));
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run(null);
  });
  run(null);
}

function payload(m) {
  const raw = payloadBytes(m.payload, m.payload_encoding);
  const text = m.payload_encoding === "base64" ? utf8(raw) : m.payload;
  return text === null ? hex(raw.slice(0, 32)) : text;
}
