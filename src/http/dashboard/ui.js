// Small DOM and formatting helpers shared by the pages. Text always goes in as text
// (textContent), never as HTML: topics, payloads and client ids are untrusted.

/**
 * h("tag.class#id", {attr: value, onclick: fn, text: "..."}, ...children)
 * Attributes named on* become event listeners; `text` sets textContent; false/null leave it out.
 */
export function h(spec, attrs, ...children) {
  const [, tag, rest] = /^([a-z0-9]+)(.*)$/i.exec(spec);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "style") throw new Error("no inline styles (Content-Security-Policy)");
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A labelled input: returns {field, input}. */
export function field(label, id, attrs = {}, tag = "input") {
  const input = h(tag + "#" + id, { type: tag === "input" ? "text" : null, ...attrs });
  const f = h("div.field", {}, h("label", { for: id, text: label }), input);
  return { field: f, input };
}

/** A <select> with a label: options as [value, text] pairs. */
export function select(label, id, options, value) {
  const s = h("select#" + id, {});
  for (const [v, t] of options) s.append(h("option", { value: v, text: t, selected: v === value }));
  return { field: h("div.field", {}, h("label", { for: id, text: label }), s), input: s };
}

/** A checkbox with its label. */
export function checkbox(label, id, checked) {
  const input = h("input#" + id, { type: "checkbox", checked: !!checked });
  return { field: h("div.check", {}, input, h("label", { for: id, text: label })), input };
}

/** An error box with the API's code and message, plainly. */
export function errorBox(err) {
  const code = err && err.code ? err.code : "ERROR";
  const message = err && err.message ? err.message : String(err);
  return h("div.notice.error", { role: "alert" }, h("span.code", { text: code }), message);
}

export function notice(kind, ...content) {
  return h("div.notice." + kind, { role: kind === "error" ? "alert" : "status" }, ...content);
}

/** Replaces what `el` shows. */
export function show(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Says something to screen readers (the page's polite live region). */
export function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => (region.textContent = text), 30);
}

/** Asks in a modal dialog; resolves true when confirmed. `action`: the confirm button's text. */
export function confirm(message, action = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = message;
  document.getElementById("confirm-ok").textContent = action;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

/** A table: columns [{title, num?}], rows of cells (Node or text); `rowAttrs(i)` per row. */
export function table(caption, columns, rows, rowAttrs) {
  const head = h("tr", {}, columns.map((c) => h("th" + (c.num ? ".num" : ""), { scope: "col", text: c.title })));
  const body = rows.map((cells, i) =>
    h(
      "tr",
      rowAttrs ? rowAttrs(i) : {},
      // A null cell is a column left out for this table.
      cells.filter((cell) => cell !== null).map((cell, j) => h("td" + (columns[j].num ? ".num" : ""), {}, cell)),
    ),
  );
  return h(
    "div.table-wrap",
    {},
    h("table", {}, caption ? h("caption", { text: caption }) : null, h("thead", {}, head), h("tbody", {}, body)),
  );
}

// ---- formatting ----

const int = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const dec = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export function num(n) {
  return n === undefined || n === null ? "–" : int.format(n);
}

export function rate(n) {
  if (n === undefined || n === null) return "–";
  return n >= 100 ? int.format(n) : dec.format(n);
}

export function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? int.format(n) : dec.format(n)) + " " + units[i];
}

export function duration(seconds) {
  if (seconds === undefined || seconds === null) return "–";
  const d = Math.floor(seconds / 86400);
  const hrs = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  if (d) return `${d} d ${hrs} h`;
  if (hrs) return `${hrs} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

/** An RFC 3339 time (or unix seconds) as local date and time. */
export function when(t) {
  if (t === undefined || t === null || t === "") return "–";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  if (isNaN(d)) return String(t);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function clock(t) {
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t || Date.now());
  if (isNaN(d)) return String(t);
  return d.toLocaleTimeString(undefined, { hour12: false });
}

/** Bytes of a payload given as text or base64. */
export function payloadBytes(payload, encoding) {
  if (encoding === "base64") {
    try {
      return Uint8Array.from(atob(payload || ""), (c) => c.charCodeAt(0));
    } catch {
      return new Uint8Array();
    }
  }
  return new TextEncoder().encode(payload || "");
}

/** Hex dump: 16 bytes a line, offset, hex, and the printable ASCII. */
export function hex(bytesArr) {
  const lines = [];
  for (let i = 0; i < bytesArr.length; i += 16) {
    const chunk = Array.from(bytesArr.slice(i, i + 16));
    const hx = chunk.map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = chunk.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(i.toString(16).padStart(6, "0") + "  " + hx.padEnd(48) + "  " + ascii);
  }
  return lines.join("\n") || "(empty)";
}

/** Text if the bytes are UTF-8, else null. */
export function utf8(bytesArr) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytesArr);
  } catch {
    return null;
  }
}

/** Runs `fn` at most once per `ms` (the last call wins). */
export function debounce(fn, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}
