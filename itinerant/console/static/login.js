// Shows why a login was refused (the server's message, as text, never as HTML).
"use strict";
(function () {
  const why = new URLSearchParams(location.search).get("error");
  if (why) {
    const box = document.getElementById("error");
    box.textContent = why;
    box.hidden = false;
  }
})();
