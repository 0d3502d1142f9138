// Draws the dashboard's figures (JSON in #dashboard-figures) with plotly.js, served by the
// admin listener from the installed plotly package. Sets body[data-charts] when done.
(function () {
  "use strict";
  var source = document.getElementById("dashboard-figures");
  var figures = JSON.parse(source.textContent);
  var config = {
    displaylogo: false,
    responsive: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d"],
  };
  var drawn = [];
  document.querySelectorAll("[data-figure]").forEach(function (element) {
    var figure = figures[element.getAttribute("data-figure")];
    if (figure) {
      drawn.push(window.Plotly.newPlot(element, figure.data, figure.layout, config));
    }
  });
  Promise.all(drawn).then(
    function () {
      document.body.setAttribute("data-charts", "ready");
    },
    function (error) {
      document.body.setAttribute("data-charts", "failed");
      console.error("dashboard: a chart could not be drawn", error);
    }
  );
})();
