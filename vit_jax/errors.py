"""The exception types that mean "bad input", not "bug".

Command-line entry points catch `USER_ERRORS` and print the message (which
says what was wrong and what to do) with a non-zero exit instead of a
traceback. Each type is defined next to the code that raises it.
"""

from vit_jax import checkpoint
from vit_jax import config_validation
from vit_jax import input_pipeline
from vit_jax import partitioning
from vit_jax import train

USER_ERRORS = (
    checkpoint.CheckpointError,
    config_validation.ConfigError,
    input_pipeline.DatasetError,
    partitioning.MeshError,
    train.NonFiniteLossError,
)
