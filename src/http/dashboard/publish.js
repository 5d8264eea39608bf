// Publish: a small form -> POST /api/v1/publish, as the signed-in user (the ACL applies).

import * as api from "./api.js";
import { h, field, select, checkbox, show, errorBox, notice, announce } from "./ui.js";

export const title = "Publish";

export function render(view, ctx) {
  const topic = field("Topic", "publish-topic", { required: true, autocomplete: "off", spellcheck: "false", placeholder: "e.g. devices/42/command" });
  const payload = field("Payload", "publish-payload", { spellcheck: "false" }, "textarea");
  const encoding = select("Payload is", "publish-encoding", [["plain", "text"], ["base64", "base64 (binary)"]], "plain");
  const qos = select("QoS", "publish-qos", [["0", "0 · at most once"], ["1", "1 · at least once"], ["2", "2 · exactly once"]], "0");
  const retain = checkbox("Retain (new subscribers get it too)", "publish-retain", false);
  const contentType = field("Content type (MQTT 5)", "publish-content-type", { autocomplete: "off", placeholder: "e.g. application/json" });
  const expiry = field("Expires after, seconds (MQTT 5)", "publish-expiry", { type: "number", min: "1", inputmode: "numeric" });
  const result = h("div#publish-result", { role: "status" });
  // A viewer may not publish: the button is off (the API would answer 403 anyway).
  const button = h("button#publish-submit", { type: "submit", text: "Publish", disabled: ctx.session.role === "viewer" });
  const form = h(
    "form.stack",
    { "aria-label": "Publish a message" },
    topic.field,
    payload.field,
    h("div.row", {}, encoding.field, qos.field),
    retain.field,
    h(
      "details",
      {},
      h("summary", { text: "MQTT 5 properties" }),
      h("div.row", {}, h("div.field.grow", {}, contentType.field), expiry.field),
    ),
    h("div", {}, button),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      topic: topic.input.value,
      payload: payload.input.value,
      payload_encoding: encoding.input.value,
      qos: Number(qos.input.value),
      retain: retain.input.checked,
    };
    const properties = {};
    if (contentType.input.value) properties.content_type = contentType.input.value;
    if (expiry.input.value) properties.message_expiry_interval = Number(expiry.input.value);
    if (Object.keys(properties).length) body.properties = properties;
    if (!body.topic) {
      show(result, errorBox({ code: "MISSING", message: "Enter a topic." }));
      topic.input.focus();
      return;
    }
    button.disabled = true;
    try {
      const { status, data } = await api.request("POST", "/publish", body);
      const id = data && data.id ? ` (id ${data.id})` : "";
      const text =
        status === 202
          ? `Published to “${body.topic}”${id}; no subscriber matched` + (body.retain ? ", the retained message is kept." : ".")
          : `Published to “${body.topic}”${id}.`;
      show(result, notice("ok", text));
      announce(text);
    } catch (err) {
      show(result, errorBox(err));
    } finally {
      button.disabled = ctx.session.role === "viewer";
    }
  });
  const note =
    ctx.session.role === "viewer"
      ? notice("warn", "You are signed in as a viewer: viewers cannot publish.")
      : h("p.muted.small", { text: "The message is published as " + (ctx.session.username ? "user “" + ctx.session.username + "”" : "the local caller") + ", so the ACL's rules for that user apply." });
  view.append(h("section.panel", {}, note, form, result));
}
