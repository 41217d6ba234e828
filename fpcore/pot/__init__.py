"""Proof of training: record a training run (Recorder), verify a record (verify), forge records (attacks).

See docs/proof-of-training.md for the record format and what each verifier catches.
"""

from .record import Record, RecordError, open_record
from .recorder import Recorder
from .result import CheckResult, Verdict
from .task import Dataset, build_model, load_digits_split, train_step
from .verify import verify

__all__ = [
    "CheckResult",
    "Dataset",
    "Record",
    "RecordError",
    "Recorder",
    "Verdict",
    "build_model",
    "load_digits_split",
    "open_record",
    "train_step",
    "verify",
]
