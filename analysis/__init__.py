"""Scaling-law analysis: load curves, fit laws, predict with intervals, backtest, plot, report.

Torch-free by design (numpy, scipy, pandas, matplotlib), so published numbers
can be fitted without a deep-learning stack. The library entry points:

- `analysis.load.load`: run/sweep directories and CSV/Parquet tables -> the tidy curve table
  (`analysis.rundirs`, `analysis.tables`), with the row filters and the N-convention decision
- `analysis.fitting.fit`: a law (`analysis.laws`) fitted by the robust engine
  (`analysis.objective`, `analysis.uncertainty`), a `FitResult` (`analysis.fitresult`)
- `analysis.predict.forecast`: the loss at a point, at a compute budget or along a planned
  run, with the bootstrap band or the calibrated interval (`analysis.calibrate`)
- `analysis.backtest`: leave-largest-out backtests and a leaderboard of laws;
  `analysis.select.select_law`: the law chosen by those backtests (`testbed fit --law auto`)
- `analysis.plots`, `analysis.report.write_report`: figures and a Markdown report
- `analysis.cli`: `testbed fit|predict|backtest|report` (also `python -m analysis ...`)
"""
