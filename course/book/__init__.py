"""The Sphinx extensions of the HTML book: offline MathJax and plotly.js, Colab buttons, and
names in tables that break at their dots."""
