// Live messages: a stream of its own (GET /api/v1/events?filter=...) showing the `message`
// events for a filter the caller may read; pause (messages wait, up to a bound), payload as text
// or hex, and the server's `dropped` reports (over its 100 messages/s cap).

import * as api from "./api.js";
import { h, field, show, errorBox, clock, bytes, num, payloadBytes, hex, utf8, announce } from "./ui.js";

export const title = "Live messages";

/** Messages kept on screen (and waiting while paused). */
const KEEP = 300;

const state = { filter: "#", hex: false };

export function render(view) {
  const filter = field("Topic filter", "live-filter", { type: "text", value: state.filter, autocomplete: "off", placeholder: "#", spellcheck: "false" });
  const start = h("button#live-start", { type: "submit", text: "Watch" });
  const pause = h("button.secondary#live-pause", { type: "button", text: "Pause", "aria-pressed": "false", disabled: true });
  const clear = h("button.secondary#live-clear", { type: "button", text: "Clear" });
  const asText = h("input#live-text", { type: "radio", name: "live-mode", value: "text", checked: !state.hex });
  const asHex = h("input#live-hex", { type: "radio", name: "live-mode", value: "hex", checked: state.hex });
  const mode = h(
    "div.field",
    {},
    h("span.label#live-mode-label", { text: "Payload" }),
    h("div.segmented", { role: "radiogroup", "aria-labelledby": "live-mode-label" }, h("label", {}, asText, h("span", { text: "Text" })), h("label", {}, asHex, h("span", { text: "Hex" }))),
  );
  const form = h("form.inline", { "aria-label": "Watch messages" }, h("div.field.grow", {}, filter.field), start, pause, clear, mode);
  // Counts change with every message: shown at once, but not a live region (a screen reader
  // would read it all the time); starting, pausing and errors are announced instead.
  const status = h("p.muted.small#live-status", { text: "Not watching. Enter a topic filter and press Watch." });
  const errors = h("div", {});
  const list = h("ol.messages#live-list", { "aria-label": "Messages, newest first", reversed: true });
  view.append(h("section.panel", {}, form, status, errors, list));

  let close = null;
  let paused = false;
  let waiting = [];
  let shown = 0;
  let dropped = 0;
  let watching = "";

  const describe = () => {
    if (!close) return;
    let s = `Watching ${watching}: ${num(shown)} message${shown === 1 ? "" : "s"}`;
    if (dropped) s += `, ${num(dropped)} not shown (over the stream's rate cap)`;
    if (paused) s += ` — paused, ${num(waiting.length)} waiting`;
    status.textContent = s + ".";
  };
  // At most one status update per animation frame, however fast messages come.
  let pending = false;
  const later = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => ((pending = false), describe()));
  };

  const add = (m) => {
    list.prepend(item(m));
    while (list.children.length > KEEP) list.lastChild.remove();
  };
  const onMessage = (m) => {
    shown++;
    if (paused) {
      waiting.push(m);
      if (waiting.length > KEEP) waiting.shift();
    } else add(m);
    later();
  };
  const onDropped = (d) => {
    dropped += d.count || 0;
    later();
  };

  const watch = () => {
    const f = filter.input.value.trim();
    if (!f) {
      show(errors, errorBox({ code: "MISSING", message: "Enter a topic filter (# for everything you may read)." }));
      filter.input.focus();
      return;
    }
    if (close) close();
    state.filter = f;
    watching = f;
    shown = 0;
    dropped = 0;
    waiting = [];
    list.replaceChildren();
    errors.replaceChildren();
    close = api.events([f], { message: onMessage, dropped: onDropped }, (open, err) => {
      if (err) show(errors, errorBox(err));
      else if (open) errors.replaceChildren();
      if (open) describe();
    });
    announce(`Watching ${f}`);
    start.textContent = "Restart";
    pause.disabled = false;
    status.textContent = `Watching ${f}…`;
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    watch();
  });
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      for (const m of waiting) add(m);
      waiting = [];
    }
    describe();
    announce(paused ? "Paused" : "Resumed");
  });
  clear.addEventListener("click", () => {
    list.replaceChildren();
    waiting = [];
  });
  const redraw = () => {
    state.hex = asHex.checked;
    for (const li of list.children) li.querySelector(".payload").textContent = payloadText(li.message);
  };
  asText.addEventListener("change", redraw);
  asHex.addEventListener("change", redraw);
  if (state.filter) watch();
  return () => {
    if (close) close();
  };
}

function item(m) {
  const flags = [`QoS ${m.qos}`, m.retain ? "retained" : null, bytes(m.size) + (m.truncated ? ", cut to 1 KiB" : "")].filter(Boolean).join(" · ");
  const li = h(
    "li",
    {},
    h("span.time", { text: clock(m.at) }),
    h("span.topic", {}, m.topic, h("span.meta", { text: flags })),
    h("span.payload", { text: payloadText(m) }),
  );
  li.message = m;
  return li;
}

function payloadText(m) {
  const raw = payloadBytes(m.payload, m.payload_encoding);
  if (state.hex) return hex(raw);
  const text = m.payload_encoding === "base64" ? utf8(raw) : m.payload;
  if (text === null) return hex(raw);
  return text === "" ? "(empty)" : text;
}
