// SLA countdowns: each <time class="countdown" datetime="..."> counts down to its deadline.
(function () {
  function show(el) {
    var left = Math.round((Date.parse(el.getAttribute("datetime")) - Date.now()) / 1000);
    var late = left < 0;
    left = Math.abs(left);
    var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    var text = (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
    el.textContent = late ? "overdue by " + text : "in " + text;
    el.classList.toggle("late", late);
  }
  function tick() { document.querySelectorAll("time.countdown").forEach(show); }
  document.addEventListener("DOMContentLoaded", function () { tick(); setInterval(tick, 1000); });
})();
