// Sluicegate console: small progressive enhancements (no inline script anywhere: CSP).
// - [data-copy="id"] buttons copy the text of element #id.
// - forms with [data-confirm] ask before submitting.
// - forms with [data-stash-key] keep the key they send in this tab (sessionStorage) for the
//   playground; the sign-out form ([data-forget-key]) drops it. The server never stores keys.
(function () {
  "use strict";
  var STASH = "sluicegate.key";

  function copyFrom(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) return;
    var text = target.textContent;
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var range = document.createRange();
      range.selectNodeContents(target);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
      done();
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (button) copyFrom(button);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    if (form.hasAttribute("data-stash-key")) {
      var field = form.querySelector("[name=key]");
      if (field && field.value) sessionStorage.setItem(STASH, field.value.trim());
    }
    if (form.hasAttribute("data-forget-key")) sessionStorage.removeItem(STASH);
  });
})();
