// Listeners: each one's bind, protocol, connections, and its TLS certificate's expiry (a warning
// under 30 days, an error once expired); then the gateways (CoAP, bridges, webhooks) with their
// state and counters. Admins can reload the configuration from here.

import * as api from "./api.js";
import { h, show, errorBox, notice, table, num, when, announce } from "./ui.js";

export const title = "Listeners";

/** Days left under which a certificate is flagged. */
const WARN_DAYS = 30;

export function render(view, ctx) {
  const out = h("div#listener-list", {});
  const gateways = h("div#gateway-list", {});
  const result = h("div#reload-result", { role: "status" });
  const reload = h("button.secondary#reload", {
    type: "button",
    text: "Reload configuration",
    onclick: async () => {
      reload.disabled = true;
      try {
        await api.post("/reload");
        show(result, notice("ok", "The configuration was reloaded."));
        announce("Configuration reloaded");
        load();
      } catch (err) {
        show(result, errorBox(err));
      } finally {
        reload.disabled = false;
      }
    },
  });
  // (Element.append would write a null as the text "null".)
  const panels = [
    h("section.panel", {}, out),
    h("section.panel", { "aria-labelledby": "gateways-heading" }, h("h2#gateways-heading", { text: "Gateways" }), gateways),
    ctx.admin
      ? h(
          "section.panel",
          { "aria-labelledby": "reload-heading" },
          h("h2#reload-heading", { text: "Configuration" }),
          h("p.muted.small", { text: "Re-reads the configuration, password, ACL and certificate files, as SIGHUP does. A file with a mistake is refused and the running configuration stays." }),
          reload,
          result,
        )
      : null,
  ];
  view.append(...panels.filter(Boolean));

  let timer = null;
  const load = async () => {
    clearTimeout(timer);
    try {
      const page = await api.get("/listeners");
      const data = (page && page.data) || [];
      const warnings = data.filter((l) => l.certificate && l.certificate.days_left < WARN_DAYS);
      show(
        out,
        warnings.map((l) =>
          notice(
            l.certificate.days_left < 0 ? "error" : "warn",
            h("strong", { text: `${l.name}: ` }),
            l.certificate.days_left < 0
              ? `its certificate expired on ${when(l.certificate.not_after)}. Clients will refuse to connect.`
              : `its certificate expires in ${l.certificate.days_left} day${l.certificate.days_left === 1 ? "" : "s"} (${when(l.certificate.not_after)}). Renew it and reload.`,
          ),
        ),
        table(
          `${data.length} listener${data.length === 1 ? "" : "s"}; refreshed every 10 s`,
          [{ title: "Name" }, { title: "Bind" }, { title: "Protocol" }, { title: "Connections", num: true }, { title: "Certificate" }],
          data.map((l) => [
            h("strong", { text: l.name }),
            h("span.mono", { text: l.bind }),
            h("span.badge" + (/s$/.test(l.protocol) ? ".ok" : ""), { text: l.protocol }),
            num(l.connections) + (l.max_connections ? " / " + num(l.max_connections) : ""),
            certificate(l.certificate),
          ]),
          (i) => ({ "data-listener": data[i].name }),
        ),
      );
    } catch (err) {
      show(out, errorBox(err));
    }
    try {
      const page = await api.get("/gateways");
      showGateways(gateways, (page && page.data) || []);
    } catch (err) {
      show(gateways, errorBox(err));
    }
    timer = setTimeout(load, 10000);
  };
  load();
  return () => clearTimeout(timer);
}

function certificate(c) {
  if (!c) return h("span.muted", { text: "no TLS" });
  const days = c.days_left;
  const badge =
    days < 0
      ? h("span.badge.bad", { text: "expired" })
      : days < WARN_DAYS
        ? h("span.badge.warn", { text: `${days} days left` })
        : h("span.badge.ok", { text: `${days} days left` });
  return h("span", {}, h("span.mono", { text: c.subject }), " ", badge, h("br"), h("span.muted.small", { text: "until " + when(c.not_after) }));
}

/** States that mean a gateway is working as configured. */
const GOOD = new Set(["running", "connected"]);

function showGateways(el, data) {
  if (data.length === 0) {
    show(el, h("p.muted", { text: "No CoAP gateways, bridges or webhooks are configured ([[coap]], [[bridge]], [[webhook]])." }));
    return;
  }
  show(
    el,
    table(
      `${data.length} gateway${data.length === 1 ? "" : "s"}; refreshed every 10 s`,
      [{ title: "Kind" }, { title: "Name" }, { title: "Address" }, { title: "State" }, { title: "Counters" }],
      data.map((g) => [
        g.kind,
        h("strong", { text: g.name }),
        h("span.mono", { text: g.address }),
        h("span.badge" + (GOOD.has(g.state) ? ".ok" : ".warn"), { text: g.state }),
        h(
          "span.small",
          {},
          ...Object.entries(g.metrics).flatMap(([k, v], i) => [i ? ", " : "", h("span.muted", { text: k.replace(/_/g, " ") + " " }), num(v)]),
        ),
      ]),
      (i) => ({ "data-gateway": `${data[i].kind}/${data[i].name}` }),
    ),
  );
}
