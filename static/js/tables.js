/* The editor of one configuration table (views/table.tpl): the form adds a row
   (POST /api/tables/<name>) or, after "Edit", saves one (PUT .../<id>); "Delete"
   removes one. After a change the page reloads with ?saved=<id> or ?deleted=<id>;
   a refusal shows the API's messages next to the fields. */
"use strict";

(function () {
  var form = document.getElementById("row-form");
  if (!form) { return; }
  var base = "/api/tables/" + encodeURIComponent(form.dataset.table);
  var title = document.getElementById("form-title");
  var save = document.getElementById("save");
  var cancel = document.getElementById("cancel");
  var editing = null;

  function reloadWith(name, id) {
    MQ.go(window.location.pathname + "?" + name + "=" + encodeURIComponent(id));
  }

  function setMode(id) {
    editing = id;
    MQ.setText(title, id === null ? "Add a row" : "Edit row " + id);
    MQ.setText(save, id === null ? "Add" : "Save");
    cancel.hidden = id === null;
  }

  function fill(row) {
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name) { return; }
      if (field.dataset.secret) {
        field.value = "";
        field.placeholder = "leave empty to keep the stored key";
        return;
      }
      var value = row[field.name];
      field.value = value === null || value === undefined ? "" : String(value);
    });
  }

  function edit(id) {
    MQ.api("GET", base + "/" + encodeURIComponent(id)).then(function (answer) {
      if (!answer.ok) { MQ.showErrors(form, answer); return; }
      MQ.clearErrors(form);
      fill(answer.data);
      setMode(id);
      form.scrollIntoView({block: "start"});
    });
  }

  function remove(id) {
    if (!window.confirm("Delete row " + id + " of " + form.dataset.table + "?")) { return; }
    MQ.api("DELETE", base + "/" + encodeURIComponent(id)).then(function (answer) {
      if (answer.ok) { reloadWith("deleted", id); } else { MQ.showErrors(form, answer); }
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    MQ.clearErrors(form);
    var values = MQ.formValues(form, editing !== null);
    var url = editing === null ? base : base + "/" + encodeURIComponent(editing);
    save.disabled = true;
    MQ.api(editing === null ? "POST" : "PUT", url, values).then(function (answer) {
      save.disabled = false;
      if (answer.ok) { reloadWith("saved", answer.data.id); } else { MQ.showErrors(form, answer); }
    });
  });

  cancel.addEventListener("click", function () {
    form.reset();
    MQ.clearErrors(form);
    setMode(null);
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-id]");
    if (!button) { return; }
    if (button.classList.contains("edit")) { edit(button.dataset.id); }
    if (button.classList.contains("delete")) { remove(button.dataset.id); }
  });
})();
