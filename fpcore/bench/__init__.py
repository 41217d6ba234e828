"""The benchmark harness package: the checkpoint benchmark (``fpcore bench checkpoint``, file->file
stamp against the I/O floor and mergekit on models built here) and the report that turns
pytest-benchmark JSON into the performance tables and plots (``fpcore bench report``), with the
helpers the suites under benchmarks/ share. Nothing in the product imports it: it measures fpcore
from the outside, and tests/bench checks that no module under fpcore/ outside this package imports
it."""
