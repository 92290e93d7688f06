"""Fine-tuning: `train_and_evaluate(config, workdir)`.

The loop is designed for exact resume. Everything a step depends on is a
function of the step number and the checkpointed state: the dropout key is
`fold_in(PRNGKey(seed), step)` and the data stream restarts at example
`step * batch` (see `input_pipeline.get_datasets(start_step=...)`). So a run
killed at any point and restarted with the same command and workdir ends
with the same parameters as an uninterrupted run.

The state, its shardings on a ('data', 'model') mesh and the jitted steps
come from `steps.build`; this module feeds them data, evaluates, logs and
checkpoints. TensorFlow is imported only when the data is read.
"""

import time
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from vit_jax import checkpoint
from vit_jax import config_validation
from vit_jax import errors
from vit_jax import fewshot
# The original's pmapped update, importable here as in the original.
from vit_jax.original import make_update_fn  # pylint: disable=unused-import
from vit_jax import partitioning
from vit_jax import steps
from vit_jax import utils
from vit_jax import workdir as workdir_lib


def data_shard(mesh: jax.sharding.Mesh) -> Tuple[int, int]:
  """(index, count): which of `count` equal blocks of rows of every global
  batch this process feeds (`get_datasets(process_index, process_count)`).

  Processes whose devices sit at the same 'data' positions (a 'model' axis
  that spans processes) hold the same rows, so they read the same block.
  """
  positions = {}
  for idx, device in np.ndenumerate(mesh.devices):
    positions.setdefault(device.process_index, set()).add(
        idx[mesh.axis_names.index(partitioning.DATA)])
  blocks = sorted({tuple(sorted(p)) for p in positions.values()})
  if len({len(b) for b in blocks}) > 1 or len(
      {i for b in blocks for i in b}) != sum(len(b) for b in blocks):
    raise partitioning.MeshError(
        f'The data axis splits unevenly over processes: {blocks}.')
  return blocks.index(tuple(sorted(positions[jax.process_index()]))), len(
      blocks)


def device_batches(ds, sharding, prefetch: int,
                   blocks: int = 1) -> Iterator[steps.Batch]:
  """Global jax.Arrays from this process's block of each batch (one of
  `blocks`, see `data_shard`), `prefetch` batches ahead (transfers are
  asynchronous)."""
  queue = []
  for batch in ds.as_numpy_iterator():
    queue.append(jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(
            sharding, x, (x.shape[0] * blocks,) + x.shape[1:]), batch))
    if len(queue) > prefetch:
      yield queue.pop(0)
  yield from queue


def evaluate(eval_fn: Callable, params: Any, test_ds,
             sharding, blocks: int = 1) -> float:
  """Top-1 accuracy over the whole test split (padding masked out)."""
  correct = total = 0
  for batch in device_batches(test_ds, sharding, prefetch=1, blocks=blocks):
    c, n = eval_fn(params, batch)
    correct, total = correct + c, total + n
  return float(correct) / max(float(total), 1.0)


class NonFiniteLossError(FloatingPointError, errors.UserError):
  """The loss or gradient became NaN/Inf (config.nonfinite_loss='raise')."""


def _check_finite(pending: Optional[Tuple[int, steps.Metrics]], policy: str):
  """Raises (policy 'raise') or logs a skipped update (policy 'skip')."""
  if pending is None or bool(pending[1]['finite']):
    return
  step, metrics = pending
  if policy == 'raise':
    raise NonFiniteLossError(
        f'Non-finite loss at step {step} (loss={float(metrics["loss"])}, '
        f'grad_norm={float(metrics["grad_norm"])}). Training stopped; the '
        'last checkpoint is intact. Lower --config.base_lr, check the data, '
        "or set --config.nonfinite_loss=skip to skip such updates.")
  logging.warning('Skipped the update of step %d: non-finite loss.', step)


class RunResult(NamedTuple):
  """What `run` returns."""
  params: Any  # Trained parameters (jax arrays, sharded as in training).
  accuracy: float  # Test accuracy of the last evaluation (nan if none ran).
  step: int  # Updates applied.
  written: Dict[str, str]  # What was written where (description -> path).


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Fine-tunes `config.model` on `config.dataset`; returns the params.

  The original's entry point and return value; `run` is the same with the
  final accuracy and the list of files written.
  """
  return run(config, workdir).params


def run(config: ml_collections.ConfigDict, workdir: str) -> RunResult:
  """Trains with evaluation, checkpoints and export; see the module doc.

  Resumes from the newest complete checkpoint in `workdir` if there is one;
  a finished workdir is evaluated, not trained or rewritten. Writes orbax
  checkpoints ({workdir}/checkpoint_{step}), TensorBoard events, config.json
  and (with config.export) the official-layout `model.npz` + `model.json`.
  Inputs are validated (config, pretrained file, dataset) before anything is
  written or compiled.
  """
  config = config_validation.resolve_and_validate(config)
  start = workdir_lib.latest_checkpoint_step(workdir)
  path = steps.pretrained_path(config)
  if path and not start:
    checkpoint.check_exists(path,
                            model_name=config_validation.model_name(config))
  mesh = partitioning.create_mesh(config.mesh)
  block, blocks = data_shard(mesh)
  from vit_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  datasets = input_pipeline.get_datasets(
      config, start_step=start, process_index=block, process_count=blocks)
  (train_ds, test_ds), info = datasets, datasets.info
  # A resumed run restores the checkpoint into an abstract state: the
  # pretrained weights it replaces are not read.
  built = steps.build(config, info.num_classes, mesh=mesh,
                      abstract=bool(start))
  fewshot_eval = fewshot.create_evaluator(config, built.model,
                                          mesh)  # None: off.
  # Only now (the pretrained file was read) does the workdir get written.
  manager = workdir_lib.checkpoint_manager(workdir, config)
  state = built.state
  if start:
    state = workdir_lib.restore_or_keep(manager, state, built.shardings)
  train_fn, eval_fn, lr_fn = built.train_fn, built.eval_fn, built.lr_fn
  written = {'checkpoints': workdir_lib.checkpoint_path(workdir, '<step>')}
  if start >= config.total_steps:
    logging.info('%s already holds the final checkpoint (step %d of %d): '
                 'nothing to train; evaluating it.', workdir, start,
                 config.total_steps)
    accuracy = evaluate(eval_fn, state.params, test_ds,
                        partitioning.batch_sharding(mesh), blocks)
    logging.info('Test accuracy: %.5f', accuracy)
    manager.close()
    return RunResult(state.params, accuracy, int(state.step), written)
  config_file = workdir_lib.record_config(workdir, config, resuming=bool(start))
  written['config'] = config_file
  writer = _metric_writer(workdir, config)
  written['TensorBoard events'] = workdir
  try:
    state, accuracy = _train_loop(config, state, train_fn, eval_fn, train_ds,
                                  test_ds, mesh, writer, manager, lr_fn,
                                  info.num_test_examples, fewshot_eval)
  finally:  # Also on errors: finish the (checked) checkpoint being written.
    manager.wait_until_finished()
    manager.close()
  if config.export:
    written['exported model'] = workdir_lib.export_model(
        workdir, params=state.params, config=config, info=info)
  writer.flush()
  return RunResult(state.params, accuracy, int(state.step), written)


def _train_loop(config, state, train_fn, eval_fn, train_ds, test_ds, mesh,
                writer, manager, lr_fn, num_test: int,
                fewshot_eval=None) -> Tuple[steps.TrainState, float]:
  """Steps from state.step + 1 to total_steps with logging, eval, saving.

  TensorBoard tags are the original's (train_loss, img_sec_core_train,
  accuracy_test, lr, img_sec_core_test) plus grad_norm and learning_rate
  (the rate the logged update applied; `lr` is the original's lr_fn(step))
  and, with config.fewshot, fewshot/<dataset>_<k>shot.
  """
  total = config.total_steps
  sharding = partitioning.batch_sharding(mesh)
  blocks = data_shard(mesh)[1]
  batches = device_batches(train_ds, sharding, config.prefetch, blocks)
  progress = utils.Progress(total, first_step=int(state.step))
  accuracy = float('nan')
  pending = None  # (step, metrics) checked one step late: no host stall.
  for step in range(int(state.step) + 1, total + 1):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      state, metrics = train_fn(state, next(batches))
    _check_finite(pending, config.nonfinite_loss)
    pending = (step, metrics)
    if utils.itstime(step, config.progress_every, total):
      img_s = progress.images_per_second(step, config.batch)
      loss = float(metrics['loss'])
      writer.write_scalars(step, {
          'train_loss': loss,
          'img_sec_core_train': img_s / jax.device_count(),
          'grad_norm': float(metrics['grad_norm']),
          'learning_rate': float(metrics['learning_rate'])})
      logging.info('%s, loss %.4f, %.1f img/s', progress.line(step), loss,
                   img_s)
    if utils.itstime(step, config.eval_every, total):
      with progress.paused():
        tick = time.perf_counter()
        accuracy = evaluate(eval_fn, state.params, test_ds, sharding, blocks)
        seconds = time.perf_counter() - tick
      writer.write_scalars(step, {
          'accuracy_test': accuracy, 'lr': float(lr_fn(step)),
          'img_sec_core_test': num_test / max(seconds, 1e-9)
                               / jax.device_count()})
      logging.info('Step %d/%d: test accuracy %.5f (%.1f s)', step, total,
                   accuracy, seconds)
    if fewshot_eval and fewshot_eval.is_due(step, total):  # config.fewshot
      with progress.paused():
        writer.write_scalars(step, fewshot_eval.run(state.params))
    if utils.itstime(step, config.checkpoint_every, total):
      # Never save past an unchecked step: a 'raise' run must not resume
      # beyond the bad batch.
      _check_finite(pending, config.nonfinite_loss)
      pending = None
      manager.save(step, args=ocp.args.StandardSave(state))
  _check_finite(pending, config.nonfinite_loss)
  return state, accuracy


def _metric_writer(workdir: str, config):
  """Scalars to the console and (process 0) TensorBoard; the config goes to
  TensorBoard's hparams only (main.py logs it readably)."""
  # Imported here: clu's metric_writers import TensorFlow (its summary
  # writer), which only a run that reads data needs.
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  if jax.process_index() > 0:
    return metric_writers.LoggingWriter()
  summary = metric_writers.SummaryWriter(workdir)
  summary.write_hparams(_hparams(config))
  return metric_writers.MultiWriter(
      [metric_writers.LoggingWriter(), summary])


def _hparams(config) -> Dict[str, Any]:
  """Scalar config values, flattened, for TensorBoard's hparams plugin."""
  flat = flax.traverse_util.flatten_dict(config.to_dict(), sep='.')
  return {k: v for k, v in flat.items()
          if isinstance(v, (int, float, str, bool)) and v is not None}
