r"""Few-shot linear evaluation: the ViT paper's representation metric.

  python -m vit_jax.fewshot --checkpoint=/tmp/quickstart --dataset=digits \
      --shots=1,5,10,25

The representation is frozen; for each seed and shot count k, k training
images per class are drawn, a ridge regression maps their pre-logits
features (what the head consumes: the class token after the final
LayerNorm and the optional `pre_logits` layer, the pooled output for 'gap'
ViTs and Mixers) to {-1, +1}^K targets, and its argmax is scored on the
whole test split. Protocol (as in the paper and big_vision): per-class
random permutations from `np.random.default_rng(seed)`; features
standardised with the mean and std (+1e-5) of the k * K training images; a
constant feature 100.0 appended, so the bias is almost unregularised;
L2 strength lambda (default 2^10); accuracies averaged over seeds (0, 1, 2).

The solver (`fewshot_solver`, whose names are re-exported here)
diagonalises whichever of X^T X and X X^T is smaller once, so a list of
lambdas costs one `eigh`. Only the images that some (k, seed)
draws are ever decoded and run through the model: few-shot evaluation of
an ImageNet-sized train split costs k * K * seeds forward passes, not one
per training image.

During fine-tuning, `config.fewshot` (configs/common.py) runs this at eval
time and logs `fewshot/<dataset>_<k>shot` (see `create_evaluator`). Bad
input on the command line (too many shots for a class, a missing
checkpoint, an unknown dataset) prints one message and exits with status 1.
"""

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence
from typing import Tuple

import jax
import numpy as np

from vit_jax import cli
from vit_jax import fewshot_solver as solver
from vit_jax import models
from vit_jax import partitioning
from vit_jax import utils
from vit_jax.configs import common


FeaturesFn = Callable[[Any, jax.Array], jax.Array]


def pooled_features_model(model):
  """The same model without its head: returns (batch, features).

  Parameter names are unchanged (a head in the params is simply unused).
  Raises solver.FewshotError for 'unpooled' ViTs, which give no single
  vector.
  """
  if getattr(model, 'classifier', 'token') in ('unpooled', 'token_unpooled'):
    raise solver.FewshotError(
        f'classifier={model.classifier!r} gives one vector per token, not '
        "one per image: few-shot evaluation needs 'token' or 'gap'.")
  return model.clone(num_classes=None)


def make_features_fn(model, mesh: Optional[jax.sharding.Mesh] = None
                     ) -> FeaturesFn:
  """Jitted (params, images (B, H, W, 3) in [-1, 1]) -> float32 (B, D).

  D is the pre-logits width: `representation_size` if set, else the hidden
  size. With a mesh, the output is replicated (every process gets it all).
  """
  headless = pooled_features_model(model)

  def features(params, images):
    return headless.apply({'params': params}, images, train=False)

  if mesh is None:
    return jax.jit(features)
  return jax.jit(features, out_shardings=partitioning.replicated(mesh))


def compute_features(features_fn: FeaturesFn, params: Any,
                     batches: Iterable[Dict[str, np.ndarray]], *,
                     batch_size: int,
                     mesh: Optional[jax.sharding.Mesh] = None,
                     progress: Optional[Callable[[int], Any]] = None
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """Features and labels of batches {'image': (b, H, W, 3), 'label': (b,)}.

  Batches of b < batch_size images are zero-padded (one compile). With a
  mesh, every process must pass the same batches; each is split over the
  data axis. `progress(b)` is called after each batch.

  Returns:
    float32 (n, D) features and int64 (n,) labels, in input order.
  """
  feats, labels = [], []
  for batch in batches:
    n = len(batch['label'])
    if not 0 < n <= batch_size:
      raise ValueError(f'A batch of {n} images; expected 1..{batch_size}.')
    images = np.zeros((batch_size,) + batch['image'].shape[1:], np.float32)
    images[:n] = batch['image']
    if mesh is not None:
      images = jax.make_array_from_callback(
          images.shape, partitioning.batch_sharding(mesh),
          lambda index, images=images: images[index])
    feats.append(np.asarray(features_fn(params, images))[:n])
    labels.append(np.asarray(batch['label'], np.int64))
    if progress:
      progress(n)
  if not labels:
    raise solver.FewshotError('No images to compute features of.')
  return np.concatenate(feats), np.concatenate(labels)


@dataclasses.dataclass(frozen=True)
class FewshotData:
  """A dataset prepared once for repeated few-shot evaluations."""
  name: str  # Its name in the TensorBoard tags.
  info: Any  # datasets.DatasetInfo: classes and their names.
  train_labels: np.ndarray  # int64 (n,): every train record's label.
  train_rows: np.ndarray  # Sorted train records that some draw uses.
  train: Any  # tf.data: those records, eval-preprocessed, unbatched.
  test: Any  # tf.data: the whole test split, likewise.


def tag_name(dataset: str) -> str:
  """'digits' -> 'digits'; '/data/my_flowers/' -> 'my_flowers'."""
  if os.path.isdir(os.path.expanduser(dataset)) and dataset != 'digits':
    dataset = os.path.basename(os.path.normpath(dataset))
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', dataset)


def data_config(dataset: str, *, crop: int, tfds_data_dir: Optional[str] =
                None, train_split: Optional[str] = None,
                test_split: Optional[str] = None):
  """A data ConfigDict for `input_pipeline`: the dataset's preset splits
  (`common.DATASET_PRESETS`; 'train'/'test' for folders) at `crop` px."""
  config = common.with_dataset(common.get_config(), dataset)
  config.pp.crop = crop
  config.tfds_data_dir = tfds_data_dir
  config.pp.train = train_split or config.pp.train
  config.pp.test = test_split or config.pp.test
  return config


def load_data(config, *, shots: Sequence[int],
              seeds: Sequence[int]) -> FewshotData:
  """Reads the labels and checks the shots before any image is decoded.

  Raises:
    solver.FewshotError: a class of the train split has fewer than
      max(shots) images. datasets.DatasetError: an unusable dataset.
  """
  # Imported here: the pipeline imports TensorFlow, needed only for data.
  from vit_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  train, test, info = input_pipeline.get_labeled_splits(config)
  solver.check_shots(train.labels, shots, num_classes=info.num_classes,
                     class_names=info.class_names,
                     where=f"split '{config.pp.train}' of '{config.dataset}'")
  rows = solver.needed_indices(train.labels, shots=shots, seeds=seeds,
                               num_classes=info.num_classes)
  crop = config.pp.crop
  return FewshotData(
      name=tag_name(config.dataset), info=info, train_labels=train.labels,
      train_rows=rows,
      train=input_pipeline.eval_examples(train, crop=crop, indices=rows),
      test=input_pipeline.eval_examples(test, crop=crop))


def evaluate(data: FewshotData, features_fn: FeaturesFn, params: Any, *,
             shots: Sequence[int], seeds: Sequence[int],
             l2_regs: Sequence[float], batch_size: int,
             mesh: Optional[jax.sharding.Mesh] = None,
             progress: Optional[Callable[[int], Any]] = None
             ) -> solver.FewshotResult:
  """Features of the drawn train images and of the test split, then
  `solver.fewshot_accuracy`. `progress(n)` counts images as they are
  done."""
  def features(ds):
    return compute_features(
        features_fn, params, ds.batch(batch_size).as_numpy_iterator(),
        batch_size=batch_size, mesh=mesh, progress=progress)

  train, _ = features(data.train)
  test, test_labels = features(data.test)
  return solver.fewshot_accuracy(
      train_features=train, train_labels=data.train_labels,
      train_rows=data.train_rows, test_features=test, test_labels=test_labels,
      shots=shots, seeds=seeds, l2_regs=l2_regs,
      num_classes=data.info.num_classes)


def scalars(name: str, result: solver.FewshotResult) -> Dict[str, float]:
  """{'fewshot/<name>_<k>shot': mean accuracy} for the first lambda, and
  '..._l2_<lambda>' for the others."""
  out = {}
  for i, k in enumerate(result.shots):
    for j, l2 in enumerate(result.l2_regs):
      suffix = '' if j == 0 else f'_l2_{l2:g}'
      out[f'fewshot/{name}_{k}shot{suffix}'] = float(result.mean[i, j])
  return out


# ------------------------------------------------------------------ training


class Evaluator:
  """Few-shot evaluation inside fine-tuning (`config.fewshot`).

  Built once (datasets listed, shots checked, nothing decoded yet); `run`
  returns the scalars of `scalars` for every dataset.
  """

  def __init__(self, config, model, mesh: jax.sharding.Mesh):
    fs = config.fewshot
    self.shots = tuple(int(k) for k in fs.shots)
    self.seeds = tuple(range(int(fs.seeds)))
    self.l2_regs = tuple(float(l2) for l2 in fs.l2_regs)
    self.every = int(fs.every) or config.eval_every
    problems = [p for ok, p in (
        (self.shots and min(self.shots) >= 1,
         f'--config.fewshot.shots={fs.shots} must be counts >= 1'),
        (self.seeds, f'--config.fewshot.seeds={fs.seeds} must be >= 1'),
        (self.l2_regs and min(self.l2_regs) > 0,
         f'--config.fewshot.l2_regs={fs.l2_regs} must be positive'),
        (fs.every >= 0, f'--config.fewshot.every={fs.every} must be >= 0'),
    ) if not ok]
    if problems:
      raise solver.FewshotError(
          'Invalid few-shot config: ' + '; '.join(problems))
    self._batch_size = config.batch_eval
    self._mesh = mesh
    self._features_fn = make_features_fn(model, mesh)
    self.datasets = [
        load_data(data_config(name, crop=config.pp.crop,
                              tfds_data_dir=config.tfds_data_dir),
                  shots=self.shots, seeds=self.seeds)
        for name in fs.datasets]
    names = [data.name for data in self.datasets]
    if len(set(names)) < len(names):
      raise solver.FewshotError(
          f'--config.fewshot.datasets={fs.datasets} gives the same tag name '
          f'twice ({names}); rename a folder.')

  def is_due(self, step: int, total_steps: int) -> bool:
    """At every `every` steps (default: eval_every) and the last step."""
    return utils.itstime(step, self.every, total_steps)

  def run(self, params: Any) -> Dict[str, float]:
    """{'fewshot/<dataset>_<k>shot': mean accuracy over seeds, ...}."""
    out = {}
    for data in self.datasets:
      result = evaluate(data, self._features_fn, params, shots=self.shots,
                        seeds=self.seeds, l2_regs=self.l2_regs,
                        batch_size=self._batch_size, mesh=self._mesh)
      out.update(scalars(data.name, result))
    return out


def create_evaluator(config, model, mesh: jax.sharding.Mesh
                     ) -> Optional[Evaluator]:
  """An `Evaluator` if `config.fewshot.datasets` names any, else None."""
  fs = config.get('fewshot')
  if fs is None or not fs.datasets:
    return None
  return Evaluator(config, model, mesh)


# -------------------------------------------------------------- command line


def _int_list(text: str) -> List[int]:
  try:
    return [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'{text!r} is not a comma-separated list of integers') from None


def _float_list(text: str) -> List[float]:
  try:
    return [float(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'{text!r} is not a comma-separated list of numbers') from None


def _parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(
      prog='python -m vit_jax.fewshot',
      description='Few-shot linear accuracy of a checkpoint\'s pre-logits '
      'features.')
  from vit_jax import workdir  # pylint: disable=g-import-not-at-top
  add = parser.add_argument
  workdir.add_load_model_flags(parser)
  add('--dataset', required=True,
      help="tfds name, image folder (train/<class>/, test/<class>/) or "
      "'digits'")
  add('--shots', type=_int_list, default=list(solver.DEFAULT_SHOTS),
      help='images per class, comma-separated (default 1,5,10,25)')
  add('--seeds', type=int, default=solver.DEFAULT_SEEDS,
      help='draws per shot count, seeds 0..N-1 (default 3)')
  add('--l2_regs', type=_float_list, default=[solver.DEFAULT_L2_REG],
      help='ridge strengths, comma-separated (default 1024)')
  add('--batch_size', type=int, default=64, help='images per forward pass')
  add('--train_split', default=None, help="default: the dataset preset's")
  add('--test_split', default=None, help="default: the dataset preset's")
  add('--tfds_data_dir', default=None, help='tfds data_dir')
  add('--random_init', action='store_true',
      help='ignore the weights: a randomly initialised model of the '
      "checkpoint's architecture (PRNGKey(0)), as a baseline")
  return parser


def format_table(result: solver.FewshotResult) -> str:
  """One row per shot count: mean accuracy (%) and the per-seed values."""
  head = ['shots'] + [f'l2={l2:g}' for l2 in result.l2_regs]
  rows = [head]
  for i, k in enumerate(result.shots):
    cells = [str(k)]
    for j in range(len(result.l2_regs)):
      seeds = ' '.join(f'{100 * a:.1f}' for a in result.accuracy[i, :, j])
      cells.append(f'{100 * result.mean[i, j]:5.1f}%  ({seeds})')
    rows.append(cells)
  widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
  return '\n'.join('  '.join(cell.rjust(w) if c == 0 else cell.ljust(w)
                             for c, (cell, w) in enumerate(zip(r, widths)))
                   .rstrip() for r in rows)


def _load(args) -> Tuple[Any, Any, str, int]:
  """(model, params, model_name, resolution) from the arguments."""
  from vit_jax import workdir  # pylint: disable=g-import-not-at-top
  loaded = workdir.load_model(args.checkpoint, args.model, args.resolution)
  params = loaded.params
  if args.random_init:
    params = models.init_params(loaded.model, loaded.resolution)
  return loaded.model, params, loaded.model_name, loaded.resolution


def fewshot_command(args: Sequence[str]) -> None:
  """The command's body: parses `args` (without the program name), loads
  and checks everything, computes features, prints the table and one JSON
  line."""
  args = _parser().parse_args(args)
  import tqdm  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  seeds = tuple(range(args.seeds))
  if not args.shots or min(args.shots) < 1 or not seeds:
    raise solver.FewshotError(
        '--shots must list counts >= 1 and --seeds be >= 1.')
  if not args.l2_regs or min(args.l2_regs) <= 0 or args.batch_size < 1:
    raise solver.FewshotError(
        '--l2_regs must be positive, --batch_size >= 1.')
  model, params, model_name, resolution = _load(args)
  features_fn = make_features_fn(model)  # Checks the classifier.
  data = load_data(data_config(
      args.dataset, crop=resolution, tfds_data_dir=args.tfds_data_dir,
      train_split=args.train_split, test_split=args.test_split),
                   shots=args.shots, seeds=seeds)
  total = len(data.train_rows) + data.info.num_test_examples
  with tqdm.tqdm(total=total, unit='img', desc='features',
                 file=sys.stderr) as bar:
    result = evaluate(data, features_fn, params, shots=args.shots,
                      seeds=seeds, l2_regs=args.l2_regs,
                      batch_size=args.batch_size, progress=bar.update)
  seconds = time.perf_counter() - start
  weights = 'random init' if args.random_init else args.checkpoint
  print(f'{model_name} ({weights}) at {resolution} px on {args.dataset}: '
        f'{data.info.num_classes} classes, {data.info.num_test_examples} '
        f'test images, seeds {list(seeds)}, {seconds:.1f} s')
  print(format_table(result))
  record = {
      'checkpoint': args.checkpoint, 'model': model_name,
      'random_init': args.random_init, 'dataset': args.dataset,
      'resolution': resolution, 'num_classes': data.info.num_classes,
      'seeds': list(seeds), 'seconds': round(seconds, 2),
      'results': [
          {'shots': k, 'l2_reg': l2, 'mean': float(result.mean[i, j]),
           'per_seed': [float(a) for a in result.accuracy[i, :, j]]}
          for i, k in enumerate(result.shots)
          for j, l2 in enumerate(result.l2_regs)]}
  print(json.dumps(record))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; returns the exit status (0, or 1 on bad input)."""
  # solver.FewshotError is a DatasetError, so a UserError.
  return cli.main('vit_jax.fewshot', fewshot_command, argv)


if __name__ == '__main__':
  sys.exit(main())
