/* Small helpers shared by the portal's pages (no framework; htmx and uPlot are vendored). */
"use strict";

/* A bar chart of named counts in the element `id` (one bar per name). */
function cairnBars(id, names, values, label, color) {
  const el = document.getElementById(id);
  if (!el || !names.length) return null;
  const opts = {width: 560, height: 200, legend: {show: false},
    scales: {x: {time: false, range: [-0.5, names.length - 0.5]}, y: {range: (u, lo, hi) => [0, Math.max(hi, 1) * 1.1]}},
    axes: [{values: (u, v) => v.map(i => names[i] || "")}, {label: label}],
    series: [{}, {label: label, fill: color || "rgba(45,59,69,0.4)", stroke: "#2d3b45", paths: uPlot.paths.bars({size: [0.6]})}]};
  return new uPlot(opts, [names.map((_, i) => i), values], el);
}

/* Save the plot drawn in the element `id` as a PNG file: the uPlot canvas, exported in the
   browser (canvas.toBlob), so the server needs no plotting library. */
function cairnPng(id, filename) {
  const canvas = document.querySelector("#" + id + " canvas");
  if (!canvas) return;
  canvas.toBlob(blob => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = filename;
    document.body.appendChild(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }, "image/png");
}
