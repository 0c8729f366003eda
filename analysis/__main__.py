"""`python -m analysis fit|predict|backtest|report ...`"""
import sys

from analysis.cli import main

sys.exit(main())
