"""The Sphinx extensions of the HTML book: offline MathJax and plotly.js, and Colab buttons."""
