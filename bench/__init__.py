"""ozw benchmarks: the worker measured as ratios against baselines of the same run."""
