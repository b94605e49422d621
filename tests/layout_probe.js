// Injected by tests/test_book.py at the top of every page it serves (the built files are
// not changed). Once the page has loaded, every fold is open and MathJax is done, it
// writes what the page fetched and how its equations and figures sit in the window, as
// JSON, into a <pre> element with the id "layout-probe" (in the page that frames it, if
// any: Chromium's --dump-dom writes out the top page only).
(function () {
  "use strict";
  performance.setResourceTimingBufferSize(100000);

  // The nearest element from `element` up to `stop` that scrolls sideways.
  function scroller(element, stop) {
    for (var e = element; e && e !== stop.parentElement; e = e.parentElement) {
      var overflow = getComputedStyle(e).overflowX;
      if (overflow === "auto" || overflow === "scroll") return e;
    }
    return null;
  }

  function measure() {
    var report = {
      viewport: document.documentElement.clientWidth,
      pageWidth: document.documentElement.scrollWidth,
      // Failed requests are listed too (to another host, for one).
      resources: performance.getEntriesByType("resource").map(function (e) { return e.name; }),
      figures: [],
      equations: [],
      outputs: [],
    };
    // What cells print: wider than its box, a line is cut (the book wraps outputs).
    document.querySelectorAll("div.cell_output pre").forEach(function (pre) {
      if (pre.scrollWidth > pre.clientWidth + 1) {
        report.outputs.push({
          text: pre.textContent.slice(0, 80), width: pre.clientWidth, content: pre.scrollWidth,
        });
      }
    });
    document.querySelectorAll(".plotly-graph-div").forEach(function (div) {
      var svg = div.querySelector(".main-svg");
      var box = (svg || div).getBoundingClientRect();
      report.figures.push({
        id: div.id, drawn: !!svg, left: box.left, right: box.right, top: box.top + scrollY,
      });
    });
    document.querySelectorAll("div.math").forEach(function (math) {
      var tex = math.querySelector("script");
      // MathJax 2 (HTML-CSS output) draws an equation in a span.math of its own width.
      var content = math.querySelector(".MathJax_Display > .MathJax span.math");
      var entry = { tex: tex ? tex.textContent.trim().slice(0, 80) : "", rendered: !!content };
      if (content) {
        var box = scroller(content, math);
        var frame = (box || math).getBoundingClientRect();
        var drawn = content.getBoundingClientRect();
        // A span.math that clips its own content (overflow: hidden) draws narrower than it is.
        entry.width = Math.max(drawn.width, content.scrollWidth); // the whole equation
        entry.start = drawn.left - frame.left; // below 0: cut off on the left, out of reach
        entry.shown = frame.width; // what the column shows at once
        entry.reach = box ? box.scrollWidth : frame.width; // what scrolling brings into view
        entry.left = frame.left;
        entry.right = frame.right;
        entry.top = frame.top + scrollY;
      }
      report.equations.push(entry);
    });
    var top = window.parent.document;
    var pre = top.createElement("pre");
    pre.id = "layout-probe";
    pre.textContent = JSON.stringify(report);
    top.body.appendChild(pre);
  }

  window.addEventListener("load", function () {
    document.querySelectorAll("details").forEach(function (fold) { fold.open = true; });
    var hub = window.MathJax && window.MathJax.Hub;
    var settle = function () { setTimeout(measure, 1500); };
    // MathJax 2 signals "End" once it has typeset the page.
    if (hub && hub.Register) hub.Register.StartupHook("End", settle);
    else settle();
  });
})();
