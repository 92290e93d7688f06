r"""The original's inference-time benchmark config (`config.train`).

  python -m vit_jax.main --config=$(pwd)/vit_jax/configs/inference_time.py \
      --workdir=/tmp/it --config.model_name=ViT-B_16 --config.batch=16 \
      --config.num_classes=1000 --config.image_size=224

Times the jitted forward pass of `model_name` on synthetic images (see
vit_jax/inference_time.py) and writes imgs_sec_core_{min,max,mean,std} to
TensorBoard in the workdir, as the original did. A fine-tuning config with
`--config.trainer=inference_time` times that config's model instead.
"""

import ml_collections


def get_config():
  """Fields of the original release's configs/inference_time.py."""
  config = ml_collections.ConfigDict()
  config.model_name = 'ViT-B_32'  # A registered model (configs/models.py).
  config.log_dir = '.'  # Where to store logs (the original's; unused there).
  config.steps = 30  # Forward passes measured.
  config.initial_steps = 10  # Forward passes before measuring.
  config.batch = 0  # Global batch size; must be set.
  config.num_classes = 0  # Output classes; must be set.
  config.image_size = 0  # Input height = width (pixels); must be set.
  config.train = 'inference_time'  # What vit_jax.main runs (the original's).
  return config
