// Plotly figures are drawn at a fixed size (560-800 px wide), wider than a phone's column.
// A figure wider than its column is redrawn at the column's width, with tighter margins and
// smaller text; it gets its own size back when the column is wide enough again.
(function () {
  "use strict";

  var MIN_HEIGHT = 320; // a narrowed figure keeps at least this height (px)...
  var MIN_TEXT = 0.8; // ...and at least this fraction of its text size
  var MARGIN = { l: 10, r: 10, t: 80, b: 10 }; // axes then take what their labels need

  var designs = new WeakMap();

  // The figure as its author laid it out, read once, before any redrawing.
  function design(div) {
    var found = designs.get(div);
    if (found) return found;
    var layout = div.layout, full = div._fullLayout;
    var axes = Object.keys(full).filter(function (key) { return /^[xy]axis\d*$/.test(key); });
    found = {
      width: layout.width,
      height: layout.height,
      margin: layout.margin || null,
      font: (layout.font && layout.font.size) || null,
      fullFont: full.font.size,
      title: (layout.title && layout.title.font && layout.title.font.size) || null,
      legend: full.showlegend && !layout.legend,
      annotations: (full.annotations || []).map(function (a) { return a.font.size; }),
      axes: axes.map(function (key) { return [key, layout[key] && layout[key].automargin]; }),
    };
    designs.set(div, found);
    return found;
  }

  // plotly's HTML puts each figure in a frame, <div style="height: H px; width: W px">,
  // inside the cell's output: the column.
  function room(div) {
    var column = div.parentElement.parentElement;
    var style = getComputedStyle(column);
    var width = column.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return Math.floor(width);
  }

  function fit(div) {
    if (!window.Plotly || !div.layout || !div._fullLayout) return; // not drawn yet
    var own = design(div);
    var width = room(div);
    if (!own.width || !own.height || width <= 0) return; // sized by plotly, or folded away
    width = Math.min(width, own.width);
    if (width === div.layout.width) return;
    var ratio = width / own.width;
    var narrow = ratio < 1;
    var text = Math.max(ratio, MIN_TEXT);
    var height = Math.round(Math.max(own.height * ratio, Math.min(own.height, MIN_HEIGHT)));
    var update = {
      width: width,
      height: height,
      margin: narrow ? MARGIN : own.margin,
      "font.size": narrow ? Math.round(own.fullFont * text) : own.font,
      "title.font.size": own.title,
    };
    // A legend beside a narrow plot squeezes it: put the legend under it.
    if (own.legend) {
      update["legend.orientation"] = narrow ? "h" : null;
      update["legend.yref"] = narrow ? "container" : null;
      update["legend.y"] = narrow ? 0 : null;
      update["legend.yanchor"] = narrow ? "bottom" : null;
      if (narrow) update.margin = Object.assign({}, MARGIN, { b: 60 });
    }
    own.annotations.forEach(function (size, i) {
      update["annotations[" + i + "].font.size"] = narrow ? Math.round(size * text) : size;
    });
    own.axes.forEach(function (axis) {
      update[axis[0] + ".automargin"] = narrow ? true : axis[1] === undefined ? null : axis[1];
    });
    div.parentElement.style.width = width + "px";
    div.parentElement.style.height = height + "px";
    window.Plotly.relayout(div, update).then(function () {
      if (narrow) fitText(div, width);
    });
  }

  // Text that is still too wide gets smaller: the title until it fits the figure, and each
  // annotation (a subplot's title, say) until it clears its neighbours.
  function fitText(div, width) {
    var update = {};
    var title = div.querySelector(".gtitle");
    var drawn = title ? title.getBoundingClientRect().width : 0;
    if (drawn > width - 20) {
      var size = div._fullLayout.title.font.size;
      update["title.font.size"] = Math.floor((size * (width - 20)) / drawn);
    }
    var annotations = div._fullLayout.annotations || [];
    var box = div.getBoundingClientRect();
    var labels = [];
    div.querySelectorAll("g.annotation[data-index]").forEach(function (g) {
      var rect = g.getBoundingClientRect();
      var i = Number(g.getAttribute("data-index"));
      labels.push({ i: i, y: annotations[i].y, width: rect.width, x: rect.left + rect.width / 2 });
    });
    labels.forEach(function (a) {
      // Its space: up to the figure's edges, and half-way to its neighbours on its row.
      var space = 2 * Math.min(a.x - box.left, box.right - a.x);
      labels.forEach(function (b) {
        if (b !== a && b.y === a.y) space = Math.min(space, Math.abs(b.x - a.x));
      });
      space -= 8;
      if (a.width > space) {
        var size = annotations[a.i].font.size;
        update["annotations[" + a.i + "].font.size"] = Math.floor((size * space) / a.width);
      }
    });
    if (Object.keys(update).length) window.Plotly.relayout(div, update);
  }

  function start() {
    var figures = document.querySelectorAll(".plotly-graph-div");
    figures.forEach(fit);
    if (!window.ResizeObserver) {
      window.addEventListener("resize", function () { figures.forEach(fit); });
      return;
    }
    // A column changes width with the window, and from zero when its fold opens.
    var observer = new ResizeObserver(function (entries) {
      entries.forEach(function (entry) {
        entry.target.querySelectorAll(".plotly-graph-div").forEach(fit);
      });
    });
    figures.forEach(function (div) { observer.observe(div.parentElement.parentElement); });
  }

  if (document.readyState === "complete") start();
  else window.addEventListener("load", start);
})();
