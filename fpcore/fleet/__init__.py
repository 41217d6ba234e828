"""Fleet stamping: a plan of per-customer stamping jobs run on Dask distributed, resumable and audited
by a hash-chained ledger. Importing this package does not import Dask (fpcore.fleet.run does)."""

from fpcore.fleet.plan import Job, Plan, PlanError, load_plan

__all__ = ["Job", "Plan", "PlanError", "load_plan"]
