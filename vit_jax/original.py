"""The original release's data and update functions, with its pmap layout.

Code written for the original (its two Colab notebooks, its tests, user
scripts) calls these: `input_pipeline.get_data*` yield batches shaped
[local_devices, batch // local_devices, ...] with one-hot labels, and
`train.make_update_fn` returns a `jax.pmap`ped update over replicated
params / opt_state / rng. Each is a thin layer over this project's own
code (datasets.py sources, images.py decoding, `utils.accumulate_gradient`)
and keeps the original's semantics; the project's own training
(`input_pipeline.get_datasets`, `train.train_step`: jit + sharding, exact
resume) does not use them. They stay importable under the original's module
names (input_pipeline, train), which re-export them.

TensorFlow is imported inside the data functions only, so that importing
train.py (for `make_update_fn`) does not load it.
"""

import os
from typing import Any, Callable, Dict, Iterator, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax import utils

MAX_IN_MEMORY = 200_000  # The original's constant (unused there too).
_AXIS = 'batch'  # The original's pmap axis name.


def get_tfds_info(dataset: str, split: str) -> Dict[str, Any]:
  """`get_dataset_info` for a tfds dataset; `split` may be sliced."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vit_jax import datasets  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(dataset)
  try:
    num_examples = builder.info.splits[split].num_examples
  except KeyError:  # No split metadata (e.g. tfds.testing.mock_data): count.
    num_examples = datasets.count(builder.as_dataset(split=split))
  label = builder.info.features['label']
  return dict(num_examples=num_examples, num_classes=label.num_classes,
              int2str=label.int2str, examples_glob=None)


def get_directory_info(directory: str) -> Dict[str, Any]:
  """`get_dataset_info` for directory/<class>/<image> (one split).

  `directory` may end in a slice (`.../train[:90%]`, see
  `datasets.split_rows`). Besides the original's keys, 'paths' and
  'labels' list the split's images.
  """
  from vit_jax import datasets  # pylint: disable=g-import-not-at-top
  root, split = os.path.split(os.path.normpath(directory))
  listing = datasets.list_split(root, split)
  return dict(num_examples=len(listing.paths),
              num_classes=len(listing.classes),
              int2str=lambda id_: listing.classes[id_],
              examples_glob=os.path.join(directory, '*', '*'),
              paths=listing.paths, labels=listing.labels)


def get_dataset_info(dataset: str, split: str) -> Dict[str, Any]:
  """The original's dataset description.

  Returns a dict with num_examples, num_classes, int2str (class id -> name)
  and examples_glob (None for tfds). `dataset` is a tfds name or a folder
  holding `split`/<class>/<image>; `split` may be sliced (`train[:90%]`).
  """
  from vit_jax import datasets  # pylint: disable=g-import-not-at-top
  folder, _ = datasets.split_rows(split, 0) if os.path.isdir(
      dataset) else (split, None)
  if os.path.isdir(os.path.join(dataset, folder)):
    return get_directory_info(os.path.join(dataset, split))
  return get_tfds_info(dataset, split)


def get_data(*, data, mode: str, num_classes: int, image_decoder,
             repeats: Optional[int], batch_size: int, image_size: int,
             shuffle_buffer: int, preprocess=None):
  """Batches of the original's training/eval preprocessing of `data`.

  Args:
    data: tf.data.Dataset of dicts with 'image' (what `image_decoder`
      decodes to uint8 (h, w, 3), after shuffling) and 'label' (int).
    mode: 'train' (shuffle; Inception crop, resize, flip) or 'test'
      (resize).
    num_classes: for the one-hot labels.
    image_decoder: decodes `example['image']`.
    repeats: passes over `data` (None: forever).
    batch_size: global batch size, a multiple of jax.local_device_count().
    image_size: output side (pixels).
    shuffle_buffer: elements in the shuffle buffer (train).
    preprocess: optional map applied before decoding.

  Returns:
    tf.data.Dataset of {'image': float32 [devices, batch_size // devices,
    image_size, image_size, 3] in [-1, 1], 'label': float32 [devices,
    batch_size // devices, num_classes] one-hot}, incomplete batches
    dropped, with devices = jax.local_device_count().
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vit_jax import images  # pylint: disable=g-import-not-at-top
  devices = jax.local_device_count()

  def pp(example):
    image = image_decoder(example['image'])
    if mode == 'train':  # Per-example seeds: random, as in the original.
      seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
      image = images.preprocess_for_train(image, image_size, seed)
    else:
      image = images.preprocess_for_eval(image, image_size)
    return {'image': image,
            'label': tf.one_hot(example['label'], num_classes)}

  def per_device(batch):  # [batch, ...] -> [devices, batch // devices, ...]
    rows = [devices, batch_size // devices]
    return {k: tf.reshape(v, rows + [-1 if d is None else d
                                     for d in v.shape[1:].as_list()])
            for k, v in batch.items()}

  data = data.repeat(repeats)
  if mode == 'train':
    data = data.shuffle(shuffle_buffer)
  if preprocess is not None:
    data = data.map(preprocess, tf.data.AUTOTUNE)
  data = data.map(pp, tf.data.AUTOTUNE)
  data = data.batch(batch_size, drop_remainder=True)
  return data.map(per_device, tf.data.AUTOTUNE).prefetch(1)


def _get_data_from_split(*, config, mode: str, info, data, image_decoder):
  """`get_data` with the original's config fields for `mode`."""
  return get_data(
      data=data, mode=mode, num_classes=info['num_classes'],
      image_decoder=image_decoder,
      repeats=None if mode == 'train' else 1,
      batch_size=config.batch_eval if mode == 'test' else config.batch,
      image_size=config.pp['crop'],
      shuffle_buffer=max(1, min(info['num_examples'], config.shuffle_buffer)))


def get_data_from_directory(*, config, directory: str, mode: str):
  """`get_data` over directory/<class>/<image>; `directory` may be sliced
  (`.../train[:90%]`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vit_jax import images  # pylint: disable=g-import-not-at-top
  info = get_directory_info(directory)
  data = tf.data.Dataset.from_tensor_slices(
      {'image': np.asarray(info['paths']),
       'label': np.asarray(info['labels'], np.int64)})
  return _get_data_from_split(
      config=config, mode=mode, info=info, data=data,
      image_decoder=lambda path: images.decode_image(tf.io.read_file(path)))


def get_data_from_tfds(*, config, mode: str):
  """`get_data` over split `config.pp[mode]` of tfds `config.dataset`
  (prepared, or downloaded and prepared, as in the original)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vit_jax import datasets  # pylint: disable=g-import-not-at-top
  builder = datasets.tfds_builder(config)
  data = builder.as_dataset(split=config.pp[mode],
                            decoders={'image': tfds.decode.SkipDecoding()},
                            shuffle_files=mode == 'train')
  info = {'num_classes': builder.info.features['label'].num_classes,
          'num_examples': datasets.count(data)}
  return _get_data_from_split(
      config=config, mode=mode, info=info, data=data,
      image_decoder=builder.info.features['image'].decode_example)


def prefetch(dataset, n_prefetch: int) -> Iterator[Dict[str, Any]]:
  """Batches of `dataset` as numpy arrays or, with `n_prefetch`, as arrays
  sharded over the local devices along their leading axis, `n_prefetch`
  transfers ahead (flax's `prefetch_to_device`)."""
  batches = dataset.as_numpy_iterator()
  if n_prefetch:
    batches = flax.jax_utils.prefetch_to_device(batches, n_prefetch)
  return batches


def make_update_fn(*, apply_fn: Callable[..., jax.Array], accum_steps: int,
                   tx: optax.GradientTransformation) -> Callable:
  """The original's data-parallel update: `jax.pmap` over axis 'batch'.

  Returns `update_fn(params, opt_state, batch, rng) -> (params, opt_state,
  loss, rng)`, all with a leading local-device axis: params, opt_state and
  rng replicated (`flax.jax_utils.replicate`), batch from `get_data`
  ('image' [devices, b, h, w, 3], one-hot 'label' [devices, b, classes]).
  Gradients and the loss are averaged over devices (the loss comes back
  per device, equal on all); dropout keys differ per device. Micro-batches
  (`accum_steps` > 1) are contiguous blocks of each device's rows
  (`utils.accumulate_gradient`); 0 or 1 means none. `params` are donated.
  """

  def update_fn(params, opt_state, batch, rng):
    _, new_rng = jax.random.split(rng)
    dropout_rng = jax.random.fold_in(rng, jax.lax.axis_index(_AXIS))

    def loss_fn(params, images, labels):
      logits = apply_fn({'params': params}, images, train=True,
                        rngs={'dropout': dropout_rng})
      logp = jax.nn.log_softmax(logits.astype(jnp.float32))
      return -jnp.mean(jnp.sum(logp * labels, axis=-1))

    loss, grads = utils.accumulate_gradient(
        jax.value_and_grad(loss_fn), params, batch['image'], batch['label'],
        accum_steps)
    grads = jax.lax.pmean(grads, axis_name=_AXIS)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, jax.lax.pmean(loss, _AXIS), new_rng

  return jax.pmap(update_fn, axis_name=_AXIS, donate_argnums=(0,))
