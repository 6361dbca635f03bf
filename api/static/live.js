// The dashboard's live parts, without a build step. An element with an id and data-live="URL" is
// refreshed from that URL (an HTML fragment: the same element, as it is now) every data-every
// seconds while the page is visible; a form inside it marked data-live-submit posts in the
// background and shows the fragment its answer holds. Without this script every page still works
// by plain links and forms.
"use strict";
(function () {
  const LIVE = { "X-Live": "1" };

  function swap(id, html) {
    // The element stays (so a screen reader announces what changed inside it); its content is new.
    const element = document.getElementById(id);
    const holder = document.createElement("div");
    holder.innerHTML = html.trim();
    const fresh = holder.firstElementChild;
    if (!element || !fresh || fresh.id !== id || fresh.innerHTML === element.innerHTML) return;
    element.innerHTML = fresh.innerHTML;
    watchForms(element);
  }

  async function refresh(id, url, options) {
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", headers: LIVE, ...options });
    } catch (error) {
      return;  // offline for a moment: the next refresh tries again
    }
    if (response.redirected || response.status === 401) {
      window.location.reload();  // signed out meanwhile: the page shows the sign-in
      return;
    }
    if (response.ok) swap(id, await response.text());
  }

  function watchForms(element) {
    element.querySelectorAll("form[data-live-submit]").forEach((form) => {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        form.querySelectorAll("button").forEach((button) => { button.disabled = true; });
        refresh(element.id, form.action, { method: "POST", body: new FormData(form) });
      });
    });
  }

  function start(element) {
    const id = element.id;
    const url = element.dataset.live;
    const every = Math.max(1, Number(element.dataset.every || 5)) * 1000;
    watchForms(element);
    setInterval(() => {
      if (document.visibilityState === "visible") refresh(id, url, {});
    }, every);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-live][id]").forEach(start);
  });
})();
