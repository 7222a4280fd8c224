"""After training: the sweep report, figures, prediction and export."""
