"""Registry of the published model configs.

`MODEL_CONFIGS[name]` is a locked ConfigDict whose keys are the fields of
`models.VisionTransformer` or `models.MlpMixer`; `name` is also the basename
of the official checkpoint file (`ViT-B_16` -> `ViT-B_16.npz`).

`AUGREG_CONFIGS` maps the AugReg short names (`B_16`, `R26_S_32`, ...), which
are the prefixes of the files in gs://vit_models/augreg, to the same configs.
AugReg names drop `ViT-` and spell `+` as `_` so that they work as file names
and URIs without escaping.
"""

import ml_collections

MODEL_CONFIGS = {}
AUGREG_CONFIGS = {}

# Configs with no AugReg checkpoints.
_NOT_AUGREG = ('testing', 'testing-unpooled', 'ViT-L_32', 'R50+ViT-B_16',
               'ViT-H_14')


def _register(get_config):
  """Adds the config to MODEL_CONFIGS (and AUGREG_CONFIGS where it applies)."""
  config = get_config().lock()
  name = config.model_name
  MODEL_CONFIGS[name] = config
  if 'Mixer' not in name and name not in _NOT_AUGREG:
    AUGREG_CONFIGS[name.replace('ViT-', '').replace('+', '_')] = config
  return get_config


def _vit(name, *, hidden, mlp, heads, layers, patch, dropout=0.0,
         classifier='token'):
  """A plain ViT config: one place for the fields every ViT shares."""
  config = ml_collections.ConfigDict()
  config.model_name = name  # Basename of the checkpoint file.
  config.patches = ml_collections.ConfigDict({'size': (patch, patch)})
  config.hidden_size = hidden  # Width D of the token embeddings.
  config.transformer = ml_collections.ConfigDict()
  config.transformer.mlp_dim = mlp  # Hidden width of each MLP block.
  config.transformer.num_heads = heads  # Attention heads per block.
  config.transformer.num_layers = layers  # Number of encoder blocks.
  config.transformer.attention_dropout_rate = 0.0  # On attention weights.
  config.transformer.dropout_rate = dropout  # After embeddings, attn, MLP.
  config.classifier = classifier  # 'token', 'gap', 'unpooled', ...
  # None: no pre_logits layer; the i21k files' pre_logits are dropped when
  # fine-tuning (see checkpoint.load_pretrained).
  config.representation_size = None
  return config


def _hybrid(name, *, base, num_layers, patch):
  """A ResNet + ViT hybrid: `base` ViT fields with a ResNet root."""
  config = base()
  config.model_name = name
  config.patches.size = (patch, patch)  # Patch size on the ResNet features.
  config.resnet = ml_collections.ConfigDict()
  config.resnet.num_layers = num_layers  # Units per ResNet stage.
  config.resnet.width_factor = 1  # Width multiplier of the ResNet.
  return config


def _gap_norep(name, base):
  """The GSAM '-gap-norep' variant: mean pooling, no class token."""
  config = base()
  config.model_name = name
  config.classifier = 'gap'
  return config


@_register
def get_testing_config():
  """A tiny model for tests."""
  return _vit('testing', hidden=10, mlp=10, heads=2, layers=1, patch=16,
              dropout=0.1)


@_register
def get_testing_unpooled_config():
  """The tiny test model, returning one output per patch token."""
  config = get_testing_config()
  config.model_name = 'testing-unpooled'
  config.classifier = 'unpooled'
  return config


@_register
def get_ti16_config():
  """ViT-Ti/16."""
  return _vit('ViT-Ti_16', hidden=192, mlp=768, heads=3, layers=12, patch=16)


@_register
def get_s16_config():
  """ViT-S/16."""
  return _vit('ViT-S_16', hidden=384, mlp=1536, heads=6, layers=12, patch=16)


@_register
def get_s32_config():
  """ViT-S/32."""
  return _vit('ViT-S_32', hidden=384, mlp=1536, heads=6, layers=12, patch=32)


@_register
def get_b8_config():
  """ViT-B/8."""
  return _vit('ViT-B_8', hidden=768, mlp=3072, heads=12, layers=12, patch=8)


@_register
def get_b16_config():
  """ViT-B/16."""
  return _vit('ViT-B_16', hidden=768, mlp=3072, heads=12, layers=12, patch=16)


@_register
def get_b32_config():
  """ViT-B/32."""
  return _vit('ViT-B_32', hidden=768, mlp=3072, heads=12, layers=12, patch=32)


@_register
def get_l16_config():
  """ViT-L/16."""
  return _vit('ViT-L_16', hidden=1024, mlp=4096, heads=16, layers=24,
              patch=16, dropout=0.1)


@_register
def get_l32_config():
  """ViT-L/32."""
  return _vit('ViT-L_32', hidden=1024, mlp=4096, heads=16, layers=24,
              patch=32)


@_register
def get_h14_config():
  """ViT-H/14."""
  return _vit('ViT-H_14', hidden=1280, mlp=5120, heads=16, layers=32,
              patch=14, dropout=0.1)


@_register
def get_s16_gap_norep_config():
  """ViT-S/16 with mean pooling and no class token (GSAM release)."""
  return _gap_norep('ViT-S_16-gap-norep', get_s16_config)


@_register
def get_s32_gap_norep_config():
  """ViT-S/32 with mean pooling and no class token (GSAM release)."""
  return _gap_norep('ViT-S_32-gap-norep', get_s32_config)


@_register
def get_b16_gap_norep_config():
  """ViT-B/16 with mean pooling and no class token (GSAM release)."""
  return _gap_norep('ViT-B_16-gap-norep', get_b16_config)


@_register
def get_b32_gap_norep_config():
  """ViT-B/32 with mean pooling and no class token (GSAM release)."""
  return _gap_norep('ViT-B_32-gap-norep', get_b32_config)


@_register
def get_r_ti16_config():
  """R+ViT-Ti/16: ResNet root only (4x stem), 8x8 patches: a 7x7 grid @224."""
  return _hybrid('R+ViT-Ti_16', base=get_ti16_config, num_layers=(), patch=8)


@_register
def get_r26_s32_config():
  """R26+ViT-S/32."""
  return _hybrid('R26+ViT-S_32', base=get_s16_config, num_layers=(2, 2, 2, 2),
                 patch=1)


@_register
def get_r26_b32_config():
  """R26+ViT-B/32."""
  return _hybrid('R26+ViT-B_32', base=get_b16_config, num_layers=(2, 2, 2, 2),
                 patch=1)


@_register
def get_r50_b16_config():
  """R50+ViT-B/16 (three ResNet stages, so /16 with 1x1 patches)."""
  config = _hybrid('R50+ViT-B_16', base=get_b16_config, num_layers=(3, 4, 9),
                   patch=1)
  config.transformer.dropout_rate = 0.1
  return config


@_register
def get_r50_l32_config():
  """R50+ViT-L/32."""
  return _hybrid('R50+ViT-L_32', base=get_l16_config,
                 num_layers=(3, 4, 6, 3), patch=1)


def _mixer(name, *, patch, hidden, blocks, tokens_mlp, channels_mlp):
  config = ml_collections.ConfigDict()
  config.model_name = name  # Basename of the checkpoint file.
  config.patches = ml_collections.ConfigDict({'size': (patch, patch)})
  config.hidden_dim = hidden  # Channels C per token.
  config.num_blocks = blocks  # Number of Mixer blocks.
  config.tokens_mlp_dim = tokens_mlp  # Hidden width of token mixing.
  config.channels_mlp_dim = channels_mlp  # Hidden width of channel mixing.
  return config


@_register
def get_mixer_b16_config():
  """Mixer-B/16."""
  return _mixer('Mixer-B_16', patch=16, hidden=768, blocks=12, tokens_mlp=384,
                channels_mlp=3072)


@_register
def get_mixer_b32_config():
  """Mixer-B/32."""
  return _mixer('Mixer-B_32', patch=32, hidden=768, blocks=12, tokens_mlp=384,
                channels_mlp=3072)


@_register
def get_mixer_l16_config():
  """Mixer-L/16."""
  return _mixer('Mixer-L_16', patch=16, hidden=1024, blocks=24,
                tokens_mlp=512, channels_mlp=4096)


# The upstream (ImageNet-21k) AugReg checkpoints recommended by the original
# README; a bare AugReg model name means these files.
AUGREG_RECOMMENDED = {
    'L_16': 'L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0',
    'B_16': 'B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0',
    'S_16': 'S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0',
    'R50_L_32': 'R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-'
                'sd_0.1',
    'R26_S_32': 'R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-'
                'sd_0.0',
    'Ti_16': 'Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0',
    'B_32': 'B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0',
    'S_32': 'S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0',
    'R_Ti_16': 'R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0',
}


def augreg_filename(model_or_filename: str) -> str:
  """An AugReg file stem: the recommended one for a model name, else as is.

  (The original picked the best i21k checkpoint from the bucket's index.csv
  at run time; the README's recommended files are those same choices and
  need no network.)
  """
  return AUGREG_RECOMMENDED.get(model_or_filename, model_or_filename)

