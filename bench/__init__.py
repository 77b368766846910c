"""Benchmarks of the connector: `python -m bench [--quick] [--only NAME] [--out DIR]`.

Each benchmark measures the connector next to the ceilings it is compared against (the same
work done by the plainest possible tool, measured in the same run), prints the figures with
their ratios and targets, and leaves JSON and a plot in the output folder. See bench/README.md.
Nothing here is part of the test suite and nothing asserts a timing.
"""
