// Retained messages: browse by filter (GET /api/v1/retained), view one (payload as text or hex,
// its properties), delete one (DELETE /api/v1/retained/{topic}).

import * as api from "./api.js";
import { h, field, show, errorBox, notice, table, num, bytes, when, announce, confirm, payloadBytes, hex, utf8 } from "./ui.js";

export const title = "Retained messages";

const state = { filter: "#", page: 1 };

export function render(view, ctx, topic) {
  if (topic !== null) return one(view, ctx, topic);
  const filter = field("Topic filter", "retained-filter", { type: "search", value: state.filter, autocomplete: "off", placeholder: "#" });
  const status = h("div#retained-status", { role: "status" });
  const out = h("div#retained-list", {});
  const form = h("form.inline", { role: "search", "aria-label": "Filter retained messages" }, h("div.field.grow", {}, filter.field), h("button", { type: "submit", text: "Show" }));
  view.append(h("section.panel", {}, form, status, out));

  const load = async () => {
    state.filter = filter.input.value.trim() || "#";
    try {
      const page = await api.get("/retained" + api.query({ filter: state.filter, page: state.page, limit: 100 }));
      show(out, rows(page, ctx, load, status));
    } catch (err) {
      show(out, errorBox(err));
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    state.page = 1;
    status.replaceChildren();
    load();
  });
  load();
}

function rows(page, ctx, reload, status) {
  const data = page.data || [];
  if (!data.length) return notice("info", "No retained message matches this filter.");
  const remove = async (topic) => {
    if (!(await confirm(`Delete the retained message on “${topic}”? New subscribers will no longer receive it.`, "Delete"))) return;
    try {
      await api.del("/retained/" + api.seg(topic));
      show(status, notice("ok", `The retained message on “${topic}” was deleted.`));
      announce(`Retained message on ${topic} deleted`);
      reload();
    } catch (err) {
      show(status, errorBox(err));
    }
  };
  const meta = page.meta || {};
  const count = meta.count !== undefined ? meta.count : data.length;
  // "Since" only when the broker tells it.
  const since = data.some((r) => r.publish_at);
  const columns = [{ title: "Topic" }, { title: "QoS", num: true }, { title: "Size", num: true }, { title: "Payload" }];
  if (since) columns.push({ title: "Since" });
  columns.push({ title: "Actions" });
  return [
    table(
      `${num(count)} retained message${count === 1 ? "" : "s"}`,
      columns,
      data.map((r) => [
        h("a.mono", { href: "#/retained/" + api.seg(r.topic), text: r.topic }),
        String(r.qos),
        bytes(r.payload_size),
        h("span.preview.mono", {
          text: (r.payload_encoding === "base64" ? "base64: " : "") + (r.payload_preview || ""),
          title: r.payload_preview || "",
        }),
        since ? (r.publish_at ? when(r.publish_at) : "–") : null,
        ctx.admin
          ? h("button.secondary.small.delete", { type: "button", text: "Delete", "aria-label": "Delete the retained message on " + r.topic, onclick: () => remove(r.topic) })
          : "–",
      ]),
      (i) => ({ "data-topic": data[i].topic }),
    ),
    meta.hasnext || meta.page > 1
      ? h(
          "div.pager",
          {},
          h("button.secondary.small", { type: "button", text: "Previous", disabled: meta.page <= 1, onclick: () => (state.page--, reload()) }),
          h("span.muted.small", { text: "page " + meta.page }),
          h("button.secondary.small", { type: "button", text: "Next", disabled: !meta.hasnext, onclick: () => (state.page++, reload()) }),
        )
      : null,
  ];
}

function one(view, ctx, topic) {
  const status = h("div", { role: "status" });
  const body = h("div", {});
  view.append(h("p", {}, h("a", { href: "#/retained", text: "← All retained messages" })), status, body);
  (async () => {
    let m;
    try {
      m = await api.get("/retained/" + api.seg(topic));
    } catch (err) {
      show(body, err.status === 404 ? notice("info", `No message is retained on “${topic}”.`) : errorBox(err));
      return;
    }
    const raw = payloadBytes(m.payload, "base64");
    const text = m.payload_text !== undefined && m.payload_text !== null ? m.payload_text : utf8(raw);
    const pre = h("pre.payload-view#retained-payload", {});
    const mode = (asHex) => (pre.textContent = asHex || text === null ? hex(raw) : text || "(empty)");
    const toggle = h(
      "div.segmented",
      { role: "radiogroup", "aria-label": "Show payload as" },
      h("label", {}, h("input", { type: "radio", name: "payload-mode", value: "text", checked: text !== null, disabled: text === null, onchange: () => mode(false) }), h("span", { text: "Text" })),
      h("label", {}, h("input", { type: "radio", name: "payload-mode", value: "hex", checked: text === null, onchange: () => mode(true) }), h("span", { text: "Hex" })),
    );
    mode(text === null);
    const del = h("button.danger#retained-delete", {
      type: "button",
      text: "Delete",
      onclick: async () => {
        if (!(await confirm(`Delete the retained message on “${topic}”?`, "Delete"))) return;
        try {
          await api.del("/retained/" + api.seg(topic));
          show(body, notice("ok", `The retained message on “${topic}” was deleted.`));
          announce(`Retained message on ${topic} deleted`);
        } catch (err) {
          show(status, errorBox(err));
        }
      },
    });
    const props = m.properties && Object.keys(m.properties).length ? m.properties : null;
    show(
      body,
      h(
        "section.panel",
        { "aria-labelledby": "retained-heading" },
        h("h2#retained-heading.mono", { text: m.topic }),
        h(
          "dl.facts",
          {},
          h("dt", { text: "QoS" }),
          h("dd", { text: String(m.qos) }),
          h("dt", { text: "Size" }),
          h("dd", { text: bytes(m.payload_size) }),
          h("dt", { text: "Retained since" }),
          h("dd", { text: m.publish_at ? when(m.publish_at) : "–" }),
        ),
        h("h3", { text: "Payload" }),
        toggle,
        pre,
        props ? [h("h3", { text: "Properties" }), h("pre.payload-view", { text: JSON.stringify(props, null, 2) })] : null,
        ctx.admin ? h("div.toolbar", {}, del) : null,
      ),
    );
  })();
}
