"""The checkpoint format: one safetensors file whose metadata carries the config (docs/checkpoints.md).

- `format`: parsing and checking the safetensors header before anything is loaded (never unpickles);
- `config`: the checkpoint config (network, process, parametrization, shape, provenance);
- `io`: writing, reading and checking checkpoints against the architecture; building the model.
"""

from models.checkpoints.config import CheckpointConfig
from models.checkpoints.format import CheckpointError
from models.checkpoints.io import load_model, read_checkpoint, write_checkpoint

__all__ = ["CheckpointConfig", "CheckpointError", "load_model", "read_checkpoint", "write_checkpoint"]
