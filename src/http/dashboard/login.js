// The sign-in form (shown when GET /api/v1/session answers 401): POST /api/v1/login sets the
// session cookie and answers the CSRF token.

import * as api from "./api.js";
import { h, field, show, errorBox } from "./ui.js";

export function render(view, done) {
  const user = field("Username", "login-username", { autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
  const pass = field("Password", "login-password", { type: "password", autocomplete: "current-password", required: true });
  const messages = h("div.login-error", {});
  const button = h("button#login-submit", { type: "submit", text: "Sign in" });
  const form = h(
    "form.stack",
    { "aria-describedby": "login-help", novalidate: true },
    messages,
    user.field,
    pass.field,
    h("div", {}, button),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!user.input.value) {
      show(messages, errorBox({ code: "MISSING", message: "Enter your username." }));
      user.input.focus();
      return;
    }
    button.disabled = true;
    button.textContent = "Signing in…";
    try {
      const answer = await api.post("/login", { username: user.input.value, password: pass.input.value });
      pass.input.value = "";
      // The login answer is the session, as GET /api/v1/session would tell it.
      done({ via: "session", ...answer });
    } catch (err) {
      show(messages, errorBox(err));
      pass.input.select();
      pass.input.focus();
    } finally {
      button.disabled = false;
      button.textContent = "Sign in";
    }
  });
  view.append(
    h(
      "section.login",
      { "aria-labelledby": "login-heading" },
      h("h2#login-heading", { text: "Sign in to mqttd" }),
      h("p.muted.small#login-help", {
        text: "Use a password-file user listed in [http] admins or viewers.",
      }),
      form,
    ),
  );
  user.input.focus();
}
