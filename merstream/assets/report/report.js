// merstream report: a click on a window seeks the player; playing moves the cursor over the timeline.
(function () {
  "use strict";
  var player = document.getElementById("player");
  var track = document.getElementById("track");
  var cursor = document.getElementById("cursor");
  var scroller = document.getElementById("scroller");
  var note = document.getElementById("media-note");
  var pps = parseFloat(track.dataset.pps);
  var wins = Array.prototype.slice.call(track.querySelectorAll(".win"));
  var slotStart = wins.map(function (w) { return parseFloat(w.dataset.s); });
  var current = null;

  function say(msg) {
    if (!note) return;
    note.textContent = msg;
    note.hidden = false;
  }

  function windowAt(t) { // the last slot starting at or before t (slots are sorted)
    var lo = 0, hi = wins.length - 1, found = -1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (slotStart[mid] <= t) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    if (found < 0 || t >= parseFloat(wins[found].dataset.e)) return null;
    return wins[found];
  }

  function place(t) {
    var x = t * pps;
    cursor.style.left = x + "px";
    var w = windowAt(t);
    if (w !== current) {
      if (current) current.classList.remove("now");
      if (w) w.classList.add("now");
      current = w;
    }
    var view = scroller.scrollLeft, width = scroller.clientWidth;
    if (x < view || x > view + width - 20) scroller.scrollLeft = Math.max(0, x - width / 3);
  }

  function seek(w) {
    if (!player) return;
    if (player.error) { say("cannot seek: the player did not load the media"); return; }
    player.currentTime = parseFloat(w.dataset.start);
    place(parseFloat(w.dataset.start));
  }

  wins.forEach(function (w) {
    w.addEventListener("click", function () { seek(w); });
    w.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); seek(w); }
    });
  });

  if (!player) return;
  var frame = null;
  function follow() {
    place(player.currentTime);
    frame = player.paused ? null : window.requestAnimationFrame(follow);
  }
  player.addEventListener("play", function () { if (frame === null) frame = window.requestAnimationFrame(follow); });
  ["timeupdate", "seeked", "pause"].forEach(function (ev) {
    player.addEventListener(ev, function () { place(player.currentTime); });
  });
  player.addEventListener("error", function () {
    var e = player.error;
    var what = player.dataset.name + " (" + (player.dataset.codecs || "unknown codec") + ")";
    if (e && e.code === 4) {
      say(player.dataset.linked ? "cannot load " + what + ": the file was moved, or this browser cannot play its codec"
                                : "this browser cannot play " + what);
    } else {
      say("the player failed on " + what + (e && e.message ? ": " + e.message : ""));
    }
  });
  if (player.dataset.mime && player.canPlayType(player.dataset.mime) === "") {
    say("this browser cannot play " + player.dataset.mime + " (" + (player.dataset.codecs || "unknown codec") + ")");
  }
})();
