/* The DKIM page (views/dkim.tpl): generate a key (POST /api/dkim/generate) or
   upload one (POST /api/tables/dkim_keys), then reload with ?created=<id>, where
   the page shows the DNS TXT record to publish; delete a key. The private key
   goes to the server only, and nothing sent back contains it. */
"use strict";

(function () {
  function send(form, url) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      MQ.clearErrors(form);
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      MQ.api("POST", url, MQ.formValues(form, false)).then(function (answer) {
        button.disabled = false;
        if (answer.ok) {
          MQ.go("/dkim?created=" + encodeURIComponent(answer.data.id) + "#new-key");
        } else {
          MQ.showErrors(form, answer);
        }
      });
    });
  }

  function remove(id) {
    if (!window.confirm("Delete DKIM key " + id + "? Mail is no longer signed with it.")) { return; }
    MQ.api("DELETE", "/api/tables/dkim_keys/" + encodeURIComponent(id)).then(function (answer) {
      if (answer.ok) { MQ.go("/dkim?deleted=" + encodeURIComponent(id)); return; }
      var box = document.getElementById("keys-error");
      MQ.setText(box, MQ.refusal(answer) || answer.data.error || "Not deleted.");
      box.hidden = false;
    });
  }

  var generate = document.getElementById("generate-form");
  var upload = document.getElementById("upload-form");
  if (generate) { send(generate, "/api/dkim/generate"); }
  if (upload) { send(upload, "/api/tables/dkim_keys"); }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.delete[data-id]");
    if (button) { remove(button.dataset.id); }
  });
})();
