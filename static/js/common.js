/* Shared helpers of the console's scripts (no framework, no inline code: the
   Content-Security-Policy allows only these files).

   MQ.api(method, url, body)   fetch with the CSRF token (X-CSRF-Token, read from
                               <meta name="csrf-token">) and a JSON body; resolves to
                               {status, ok, data} whatever the status
   MQ.formValues(form, edit)   a form's fields as a JSON object: data-kind="int" fields
                               become numbers (empty: null); on an edit, an empty
                               write-only field (data-secret) is left out
   MQ.showErrors(form, answer) the API's {"errors": {field: text}} next to the fields,
                               {"error": text} (and other fields) at the form's top
   MQ.setText(element, text)   text goes into the page only as textContent, never as HTML
*/
"use strict";

window.MQ = (function () {
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function parse(text) {
    if (!text) { return {}; }
    try { return JSON.parse(text); } catch (e) { return {error: text.slice(0, 200)}; }
  }

  function api(method, url, body) {
    var options = {method: method, credentials: "same-origin",
                   headers: {"Accept": "application/json", "X-CSRF-Token": csrf()}};
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        return {status: response.status, ok: response.ok, data: parse(text) || {}};
      });
    }, function () {
      return {status: 0, ok: false, data: {error: "The console did not answer."}};
    });
  }

  function setText(element, text) {
    if (element) { element.textContent = text === null || text === undefined ? "" : String(text); }
  }

  function fieldValue(field) {
    var text = field.value;
    if (field.dataset.kind !== "int") { return text; }
    if (field.validity && field.validity.badInput) { return "not a number"; }
    if (text.trim() === "") { return null; }
    return /^\s*-?\d+\s*$/.test(text) ? parseInt(text, 10) : text;
  }

  function formValues(form, editing) {
    var values = {};
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name || field.name === "csrf") { return; }
      if (editing && field.dataset.secret && field.value.trim() === "") { return; }
      values[field.name] = fieldValue(field);
    });
    return values;
  }

  function general(form) {
    return form.querySelector(".form-error");
  }

  function clearErrors(form) {
    Array.prototype.forEach.call(form.querySelectorAll(".field-error"), function (span) {
      setText(span, "");
    });
    var top = general(form);
    if (top) { setText(top, ""); top.hidden = true; }
  }

  function refusal(answer) {
    if (answer.status === 401) { return "Your session has ended: log in again."; }
    if (answer.status === 403) { return (answer.data.error || "Refused") + ": reload the page."; }
    return answer.data.error || "";
  }

  function showErrors(form, answer) {
    clearErrors(form);
    var messages = [], errors = answer.data.errors || {};
    Object.keys(errors).forEach(function (name) {
      var span = form.querySelector('.field-error[data-for="' + CSS.escape(name) + '"]');
      if (span) { setText(span, errors[name]); } else { messages.push(name + ": " + errors[name]); }
    });
    var text = refusal(answer);
    if (text) { messages.unshift(text); }
    if (!messages.length && !Object.keys(errors).length) {
      messages.push("Not saved (HTTP " + answer.status + ").");
    }
    var top = general(form);
    if (top && messages.length) { setText(top, messages.join(" ")); top.hidden = false; }
  }

  function go(url) { window.location.assign(url); }

  return {api: api, csrf: csrf, setText: setText, formValues: formValues,
          clearErrors: clearErrors, showErrors: showErrors, refusal: refusal, go: go};
})();
