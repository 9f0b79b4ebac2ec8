"""Results as xarray/netCDF, report.json / report.md and the figures, from stored results only."""
