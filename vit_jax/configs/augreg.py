r"""Fine-tunes an AugReg checkpoint ("How to train your ViT?").

  python main.py --config=vit_jax/configs/augreg.py:B_16 --workdir=DIR
  python main.py --workdir=DIR --config=vit_jax/configs/augreg.py:\
R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0

The argument is an AugReg model name (Ti_16, S_16, S_32, B_16, B_32, L_16,
R_Ti_16, R26_S_32, R50_L_32: the README's recommended upstream checkpoint is
used) or an AugReg file name without `.npz`. Files are read from
gs://vit_models/augreg (or --config.pretrained_dir; download with
`python -m vit_jax.checkpoint download NAME`). Schedule: 500 steps, 100
warmup, base_lr 0.03, crop 384, dropout 0 (as the original augreg config);
the dataset defaults to oxford_iiit_pet (--config.dataset=... to change).

Published ImageNet top-1 of the recommended checkpoints after fine-tuning at
384 px (README): L/16 85.59%, B/16 85.49%, S/16 83.73%, R50+L/32 85.99%,
R26+S/32 83.85%, Ti/16 78.22%, B/32 83.59%, S/32 79.58%, R+Ti/16 75.40%.
"""

from vit_jax.configs import common
from vit_jax.configs import models


def get_config(model_or_filename: str = 'B_16'):
  """Config for an AugReg model name or checkpoint file name."""
  filename = models.augreg_filename(model_or_filename)
  model = filename.split('-')[0]
  if model not in models.AUGREG_CONFIGS:
    raise ValueError(
        f'Unknown AugReg model {model!r} (from {model_or_filename!r}); use '
        f'one of {", ".join(sorted(models.AUGREG_CONFIGS))} or a file name '
        'from gs://vit_models/augreg/index.csv.')
  config = common.with_dataset(common.get_config(), 'oxford_iiit_pet')
  config.model = models.AUGREG_CONFIGS[model].copy_and_resolve_references()
  config.model.transformer.dropout_rate = 0.0
  config.pretrained_dir = 'gs://vit_models/augreg'
  config.model_or_filename = model_or_filename  # {pretrained_dir}/{file}.npz
  config.pp.resize = 448  # The original's field (unused, as there).
  config.total_steps = 500
  config.warmup_steps = 100
  config.base_lr = 0.03
  config.pp.crop = 384
  return config.lock()
