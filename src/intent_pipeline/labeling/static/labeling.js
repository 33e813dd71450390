// The labeling page: plain JavaScript, no build step. Query texts come from users, so every text goes
// into the page through textContent (never innerHTML).
"use strict";

(function () {
  const TOKEN_KEY = "intentLabelingToken";
  const NAME_KEY = "intentLabelingExpertName";
  const PAGE_SIZE = 50;
  // The API sits beside the page: /expert/labeling -> /api/v1/labeling (also behind a path prefix).
  const API = window.location.pathname.replace(/\/expert\/labeling\/?$/, "") + "/api/v1/labeling";

  const state = { labels: [], items: [], total: 0, selected: 0, busy: false };
  const $ = (id) => document.getElementById(id);

  function token() { return window.sessionStorage.getItem(TOKEN_KEY) || ""; }
  function expertName() { return window.sessionStorage.getItem(NAME_KEY) || ""; }

  function say(text, kind) {
    const message = $("message");
    message.textContent = text;
    message.className = kind || "";
  }

  function detailText(body, fallback) {
    if (!body || body.detail === undefined) return fallback;
    if (typeof body.detail === "string") return body.detail;
    if (body.detail.message) return body.detail.message;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
    return fallback;
  }

  async function api(path, options) {
    const headers = Object.assign({ Authorization: "Bearer " + token() }, (options && options.headers) || {});
    const response = await fetch(API + path, Object.assign({}, options, { headers: headers }));
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => null);
      const error = new Error(detailText(body, "accesso negato"));
      error.status = response.status;
      throw error;
    }
    return response;
  }

  function showLogin(reason) {
    $("workspace").hidden = true;
    $("login").hidden = false;
    $("token").value = "";
    $("expert-name").value = expertName();
    if (reason) say(reason, "error");
    $("token").focus();
  }

  function showWorkspace() {
    $("login").hidden = true;
    $("workspace").hidden = false;
  }

  function percent(confidence) {
    return confidence === null || confidence === undefined ? "n/d" : Math.round(confidence * 100) + "%";
  }

  function button(text, className, onClick) {
    const element = document.createElement("button");
    element.type = "button";
    element.className = className;
    element.textContent = text;
    element.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
    return element;
  }

  function render() {
    const list = $("queue");
    list.replaceChildren();
    state.items.forEach((item, index) => {
      const entry = document.createElement("li");
      entry.className = "item" + (index === state.selected ? " selected" : "");
      entry.dataset.id = String(item.id);
      entry.addEventListener("click", () => { state.selected = index; render(); });

      const text = document.createElement("p");
      text.className = "text";
      text.textContent = item.text;
      const meta = document.createElement("p");
      meta.className = "meta";
      meta.textContent = "Intento previsto: " + (item.predicted_intent || "n/d")
        + " · Confidenza: " + percent(item.confidence)
        + " · Vista " + item.count + (item.count === 1 ? " volta" : " volte");

      const actions = document.createElement("div");
      actions.className = "actions";
      if (item.predicted_intent && state.labels.includes(item.predicted_intent)) {
        actions.append(button("Conferma «" + item.predicted_intent + "» (Invio)", "confirm",
          () => decide(item, { label: item.predicted_intent })));
      }
      state.labels.forEach((label, labelIndex) => {
        const prefix = labelIndex < 9 ? (labelIndex + 1) + " · " : "";
        actions.append(button(prefix + label, "label" + (label === item.predicted_intent ? " predicted" : ""),
          () => decide(item, { label: label })));
      });
      actions.append(button("Salta (S)", "skip", () => decide(item, { skip: true })));

      entry.append(text, meta, actions);
      list.append(entry);
    });
    $("empty").hidden = state.items.length > 0;
    $("summary").textContent = state.total === 0 ? ""
      : "Da etichettare: " + state.total + " (mostrate " + state.items.length + ")";
    const selected = list.children[state.selected];
    if (selected) selected.scrollIntoView({ block: "nearest" });
  }

  async function loadQueue() {
    try {
      const response = await api("/queue?limit=" + PAGE_SIZE + "&order=" + encodeURIComponent($("order").value));
      const body = await response.json().catch(() => null);
      if (!response.ok) { say(detailText(body, "errore " + response.status), "error"); return false; }
      state.labels = body.labels;
      state.items = body.items;
      state.total = body.total;
      state.selected = 0;
      showWorkspace();
      render();
      if (state.labels.length === 0) say("Insieme delle etichette non disponibile: nessun modello caricato.", "error");
      return true;
    } catch (error) {
      if (error.status) {
        window.sessionStorage.removeItem(TOKEN_KEY);
        showLogin(error.status === 401 ? "Inserisci il token di accesso." : "Token non valido.");
      } else {
        say("Server non raggiungibile: " + error.message, "error");
      }
      return false;
    }
  }

  function removeItem(item) {
    const index = state.items.indexOf(item);
    if (index >= 0) {
      state.items.splice(index, 1);
      state.total = Math.max(0, state.total - 1);
      if (state.selected >= state.items.length) state.selected = Math.max(0, state.items.length - 1);
    }
    render();
    if (state.items.length === 0 && state.total > 0) loadQueue();
  }

  async function decide(item, decision) {
    if (state.busy) return;
    state.busy = true;
    const body = Object.assign({}, decision);
    if (expertName()) body.labeled_by = expertName();
    try {
      const response = await api("/items/" + item.id, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const answer = await response.json().catch(() => null);
      if (response.ok) {
        say(decision.skip ? "Domanda saltata." : "Etichettata come «" + decision.label + "».", "ok");
        removeItem(item);
      } else if (response.status === 409) {
        const current = answer && answer.detail ? answer.detail : {};
        say("Già decisa da " + (current.labeled_by || "un altro esperto")
          + (current.label ? " come «" + current.label + "»." : " (saltata)."), "error");
        removeItem(item);
      } else if (response.status === 404) {
        say("Domanda non più presente.", "error");
        removeItem(item);
      } else {
        say(detailText(answer, "Errore " + response.status), "error");
      }
    } catch (error) {
      if (error.status) showLogin("Token non valido per etichettare.");
      else say("Server non raggiungibile: " + error.message, "error");
    } finally {
      state.busy = false;
    }
  }

  async function exportData() {
    const format = $("export-format").value;
    const exportButton = $("export");
    exportButton.disabled = true;
    try {
      const response = await api("/export?format=" + format);
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        say(detailText(body, "Errore " + response.status), "error");
        return;
      }
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = "intent_training_data." + format;
      document.body.append(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      say("Esportazione scaricata (" + format.toUpperCase() + ").", "ok");
    } catch (error) {
      if (error.status === 403) say("L'esportazione richiede il token di amministratore.", "error");
      else if (error.status) showLogin("Token non valido.");
      else say("Server non raggiungibile: " + error.message, "error");
    } finally {
      exportButton.disabled = false;
    }
  }

  function onKey(event) {
    if ($("workspace").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = event.target && event.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    if (tag === "BUTTON" && (event.key === "Enter" || event.key === " ")) return;  // the button's own click
    const item = state.items[state.selected];
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (state.items.length === 0) return;
      const step = event.key === "ArrowDown" ? 1 : -1;
      state.selected = Math.min(state.items.length - 1, Math.max(0, state.selected + step));
      render();
      event.preventDefault();
      return;
    }
    if (!item) return;
    if (/^[1-9]$/.test(event.key)) {
      const label = state.labels[Number(event.key) - 1];
      if (label) { decide(item, { label: label }); event.preventDefault(); }
    } else if (event.key === "Enter") {
      if (item.predicted_intent && state.labels.includes(item.predicted_intent)) {
        decide(item, { label: item.predicted_intent });
      } else {
        say("L'intento previsto non è nell'insieme delle etichette: scegline una.", "error");
      }
      event.preventDefault();
    } else if (event.key === "s" || event.key === "S") {
      decide(item, { skip: true });
      event.preventDefault();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      window.sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      window.sessionStorage.setItem(NAME_KEY, $("expert-name").value.trim());
      say("");
      if (await loadQueue()) $("token").value = "";
    });
    $("refresh").addEventListener("click", () => { say(""); loadQueue(); });
    $("order").addEventListener("change", () => loadQueue());
    $("export").addEventListener("click", exportData);
    $("logout").addEventListener("click", () => {
      window.sessionStorage.removeItem(TOKEN_KEY);
      state.items = [];
      showLogin("");
      say("Sessione chiusa.", "ok");
    });
    document.addEventListener("keydown", onKey);
    if (token()) loadQueue(); else showLogin("");
  });
})();
