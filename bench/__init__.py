"""`make bench` / `scribe bench`: the pipeline against the physical limit and its peers, side by
side in one run (`bench/runner.py`); each case lives in `bench/cases/`."""
