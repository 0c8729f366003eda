"""Scaling-law analysis: load curves, fit laws, predict with intervals, backtest, plot, report.

Torch-free by design (numpy, scipy, pandas, matplotlib), so published numbers
can be fitted without a deep-learning stack. Modules:

- `analysis.load`: run/sweep directories and CSV/Parquet tables -> the tidy curve table
- `analysis.laws`, `analysis.fitting`, `analysis.uncertainty`, `analysis.predict`: laws, fits, intervals
- `analysis.backtest`: leave-largest-out backtests and a leaderboard of laws
- `analysis.calibrate`: forecast intervals widened by the extrapolation error the ladder measures on itself
- `analysis.plots`, `analysis.report`: figures and a Markdown report
- `analysis.cli`: `testbed fit|predict|backtest|report` (also `python -m analysis ...`)
"""
