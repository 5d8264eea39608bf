// Topics: the tree of topics seen in published traffic (GET /api/v1/topics), with message rates
// summed up each branch; refreshed every 5 seconds while open. Branches keep their open state.

import * as api from "./api.js";
import { h, field, show, errorBox, notice, num, rate, when, debounce } from "./ui.js";

export const title = "Topics";

/** Branches the user opened or closed (by path); the rest are open while the tree is small. */
const opened = new Set();
const closed = new Set();
const SMALL = 40;

export function render(view) {
  const like = field("Topics containing", "topic-like", { type: "search", autocomplete: "off", placeholder: "e.g. sensors/" });
  const out = h("div#topic-tree", {});
  const since = h("p.muted.small", {});
  const form = h("form.inline", { role: "search", "aria-label": "Filter topics" }, h("div.field.grow", {}, like.field), h("button", { type: "submit", text: "Filter" }));
  view.append(h("section.panel", {}, form, since, out));

  let timer = null;
  let small = true;
  const load = async () => {
    clearTimeout(timer);
    try {
      const page = await api.get("/topics" + api.query({ like: like.input.value.trim(), limit: 1000 }));
      const data = (page && page.data) || [];
      const meta = (page && page.meta) || {};
      const total = meta.count !== undefined ? meta.count : data.length;
      small = data.length <= SMALL;
      since.textContent =
        (meta.tracking_since ? "Rates counted since " + when(meta.tracking_since) + ". " : "") +
        `${num(total)} topic${total === 1 ? "" : "s"}` +
        (meta.hasnext ? " (the first 1000 shown)" : "") +
        (meta.untracked ? `; ${num(meta.untracked)} messages on topics beyond the ${num(total)} followed` : "") +
        "; refreshed every 5 s.";
      if (!data.length) show(out, notice("info", "No topic has been published to since tracking started."));
      else show(out, h("ul.tree", { role: "list", "aria-label": "Topic tree" }, branch(build(data), null, small)));
    } catch (err) {
      show(out, errorBox(err));
    }
    timer = setTimeout(load, 5000);
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load();
  });
  like.input.addEventListener("input", debounce(load, 300));
  load();
  return () => clearTimeout(timer);
}

/** Topics -> a tree of {children: Map, topic?: row, rate, messages} with rates summed upwards. */
function build(rows) {
  const root = { children: new Map(), rate: 0, messages: 0, subs: 0 };
  for (const row of rows) {
    let node = root;
    node.rate += row.messages_per_s || 0;
    node.messages += row.messages || 0;
    for (const level of row.topic.split("/")) {
      if (!node.children.has(level)) node.children.set(level, { children: new Map(), rate: 0, messages: 0, subs: 0 });
      node = node.children.get(level);
      node.rate += row.messages_per_s || 0;
      node.messages += row.messages || 0;
    }
    node.topic = row;
  }
  return root;
}

function branch(node, path, small) {
  const names = [...node.children.keys()].sort((a, b) => a.localeCompare(b));
  return names.map((name) => {
    const child = node.children.get(name);
    const here = path === null ? name : path + "/" + name;
    const stats = h(
      "span.stats",
      {},
      child.topic && child.topic.retained ? h("a.badge.ok", { href: "#/retained/" + api.seg(child.topic.topic), text: "retained" }) : null,
      child.topic && child.topic.subscriptions ? h("span", { text: num(child.topic.subscriptions) + (child.topic.subscriptions === 1 ? " sub" : " subs") }) : null,
      h("span", { text: num(child.messages) + (child.messages === 1 ? " msg" : " msgs") }),
      h("span.rate", { text: rate(child.rate) + " /s" }),
    );
    const label = h("span.name", { text: name === "" ? "(empty level)" : name });
    if (!child.children.size) {
      return h("li", {}, h("div.leaf", { title: here }, label, stats));
    }
    const isOpen = opened.has(here) || (small && !closed.has(here));
    const details = h("details", { open: isOpen }, h("summary", { title: here }, label, stats), h("ul", { role: "list" }, branch(child, here, small)));
    details.addEventListener("toggle", () => {
      if (details.open) {
        opened.add(here);
        closed.delete(here);
      } else {
        closed.add(here);
        opened.delete(here);
      }
    });
    return h("li", {}, details);
  });
}
