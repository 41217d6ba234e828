"""Checkpoints on disk: sharded safetensors read by name (memory-mapped), written atomically.

`io` never does arithmetic: it hands tensors to fpcore.ops and writes what they return.
"""

from .atomic import AtomicOutput
from .format import CheckpointError, TensorInfo
from .reader import Checkpoint
from .writer import SafetensorsWriter, write_safetensors

__all__ = ["AtomicOutput", "Checkpoint", "CheckpointError", "SafetensorsWriter", "TensorInfo", "write_safetensors"]
