"""What the notebooks show: plotly figures that work live and in the offline book, chapter 2's
attention explorer, chapter 3's neuron browser."""
