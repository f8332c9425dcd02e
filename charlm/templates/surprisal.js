(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);
  var text = document.getElementById("text"), tip = document.getElementById("tip");
  var spans = text.children, index = new Map(), current = null;
  for (var i = 0; i < spans.length; i++) index.set(spans[i], i);
  function show(c) {
    return c === "\n" ? "\u21b5" : c === " " ? "\u2423" : c === "\t" ? "\u21e5" : c;
  }
  function esc(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  function body(i, el) {
    var c = el.textContent, bits = data.bits[i], top = data.top[i];
    var head = '<div class="h">char <span class="ch">' + esc(show(c)) + "</span> ";
    if (bits === null) {
      return head + "</div>" + (el.classList.contains("x")
        ? "not in the model&rsquo;s vocabulary: skipped"
        : "not scored: nothing before it to predict from");
    }
    head += "&nbsp;p = " + Math.pow(2, -bits).toFixed(4) + " &middot; " + bits.toFixed(2) +
      " bits</div><table>";
    var chars = Array.from(top[0]), rows = "", hit = false;
    for (var k = 0; k < chars.length; k++) {
      var p = top[1][k], mine = chars[k] === c;
      hit = hit || mine;
      rows += "<tr" + (mine ? ' class="hit"' : "") + '><td><span class="ch">' +
        esc(show(chars[k])) + '</span></td><td style="width:100%"><div class="bar" style="width:' +
        Math.max(2, Math.round(100 * p / top[1][0])) + '%"></div></td><td class="p">' +
        (100 * p).toFixed(1) + "%</td></tr>";
    }
    return head + rows + "</table>" + (hit ? "" : '<div style="margin-top:4px;opacity:.8">' +
      "the actual character is not in the top " + chars.length + "</div>");
  }
  function place(e) {
    var pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    var x = e.clientX + pad, y = e.clientY + pad;
    if (x + w > window.innerWidth - 4) x = e.clientX - w - pad;
    if (y + h > window.innerHeight - 4) y = e.clientY - h - pad;
    tip.style.left = Math.max(4, x) + "px";
    tip.style.top = Math.max(4, y) + "px";
  }
  text.addEventListener("mouseover", function (e) {
    var i = index.get(e.target);
    if (i === undefined) return;
    if (current) current.classList.remove("on");
    current = e.target;
    current.classList.add("on");
    tip.innerHTML = body(i, current);
    tip.hidden = false;
    place(e);
  });
  text.addEventListener("mousemove", function (e) { if (!tip.hidden) place(e); });
  text.addEventListener("mouseleave", function () {
    tip.hidden = true;
    if (current) current.classList.remove("on");
    current = null;
  });
})();
