// Small behaviours of Prunelab's forms; every page works without them, they only save clicks.
"use strict";

// Filters (data-autosubmit) apply as soon as they change: no "apply" button to forget.
function autosubmit(panel) {
  panel.addEventListener("change", () => panel.closest("form").submit());
}

// Dataset choices carry data-fits (the BadNets each set fits, webapp.lab.forms.FitsOptions): offer only
// the sets that fit the chosen BadNet, and say how many were left out. The server checks again.
function fitDatasets(form) {
  const badnet = form.querySelector("select[name=badnet]");
  if (!badnet) return;
  const note = document.createElement("p");
  note.className = "muted";
  note.id = "fit-note";
  badnet.insertAdjacentElement("afterend", note);
  const update = () => {
    let hidden = 0;
    for (const option of form.querySelectorAll("[data-fits]")) {
      const fits = !badnet.value || option.dataset.fits.split(" ").includes(badnet.value);
      const box = option.tagName === "OPTION" ? option : option.closest("div") || option.parentElement;
      box.hidden = !fits;
      if (!fits) {
        hidden += 1;
        if (option.tagName === "OPTION") option.selected = false;
        else option.checked = false;
      }
    }
    note.textContent = hidden
      ? `${hidden} dataset${hidden === 1 ? " is" : "s are"} not offered: their image size or labels do not fit this BadNet.`
      : "";
  };
  badnet.addEventListener("change", update);
  update();
}

// Each defense has its own parameters (data-methods on their fields, webapp.lab.forms.parameter_field): show
// the chosen defense's only. The server checks only those too.
function showDefenseParameters(form) {
  const defense = form.querySelector("select[name=defense]");
  if (!defense) return;
  // a field the user has not typed in takes the chosen defense's own default (FT-SAM: T = 0)
  for (const field of form.querySelectorAll("[data-methods]")) {
    field.dataset.initial = field.value;
    field.addEventListener("input", () => (field.dataset.edited = "true"));
  }
  const update = (takeDefaults) => {
    for (const field of form.querySelectorAll("[data-methods]")) {
      field.closest("p").hidden = !field.dataset.methods.split(" ").includes(defense.value);
      const own = JSON.parse(field.dataset.defaults || "{}");
      if (takeDefaults && !field.dataset.edited) field.value = own[defense.value] ?? field.dataset.initial;
    }
  };
  defense.addEventListener("change", () => update(true));
  update(false);  // what the page came with (a template, the user's last try) stays
}

// Uploads are checked before the page answers: say so while the browser waits.
function busyOnSubmit(form) {
  form.addEventListener("submit", () => {
    const button = form.querySelector("button[type=submit]");
    if (!button) return;
    button.disabled = true;
    button.textContent = form.dataset.busy;
  });
}

// Long work ends while the user looks elsewhere: a live panel (data-finished, data-announce) that finishes
// while the page is open says so in the tab's title and, if the user asked (the opt-in button), in a browser
// notification. Nothing is sent anywhere: the browser shows it.
function announceEnds() {
  const watched = new Set([...document.querySelectorAll('[data-finished="false"][data-announce]')].map((el) => el.id));
  if (!watched.size) return;
  const button = document.getElementById("notify-me");
  if (button && "Notification" in window && Notification.permission !== "denied") {
    button.hidden = Notification.permission === "granted";
    button.addEventListener("click", () =>
      Notification.requestPermission().then((answer) => {
        button.textContent = answer === "granted" ? "You will be notified" : "Notifications are blocked in this browser";
        button.disabled = true;
      }),
    );
  }
  document.addEventListener("htmx:afterSettle", () => {
    for (const id of [...watched]) {
      const panel = document.getElementById(id);
      if (!panel || panel.dataset.finished !== "true") continue;
      watched.delete(id);
      document.title = `Finished · ${document.title}`;
      document.body.dataset.announced = panel.dataset.announce;
      if ("Notification" in window && Notification.permission === "granted") {
        new Notification("Prunelab", {body: panel.dataset.announce});
      }
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  announceEnds();
  document.getElementById("print-report")?.addEventListener("click", () => window.print());
  document.querySelectorAll("[data-autosubmit]").forEach(autosubmit);
  document.querySelectorAll("form").forEach((form) => {
    if (form.querySelector("[data-fits]")) fitDatasets(form);
    if (form.querySelector("[data-methods]")) showDefenseParameters(form);
    if (form.dataset.busy) busyOnSubmit(form);
  });
});
