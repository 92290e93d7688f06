"""Fine-tuning: `train_and_evaluate(config, workdir)`.

The loop is designed for exact resume. Everything a step depends on is a
function of the step number and the checkpointed state: the dropout key is
`fold_in(PRNGKey(seed), step)` and the data stream restarts at example
`step * batch` (see `input_pipeline.get_datasets(start_step=...)`). So a run
killed at any point and restarted with the same command and workdir ends
with the same parameters as an uninterrupted run.

State lives sharded on a ('data', 'model') mesh (see `partitioning`); the
train step is one `jax.jit` with explicit in/out shardings and a donated
state, accumulating gradients over micro-batches with `lax.scan`.
"""

import functools
import json
import os
import time
from typing import (Any, Callable, Dict, Iterator, Mapping, NamedTuple,
                    Optional, Tuple)

from absl import logging
from clu import metric_writers
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from vit_jax import checkpoint
from vit_jax import config_validation
from vit_jax import errors
from vit_jax import export
from vit_jax import fewshot
from vit_jax import input_pipeline
from vit_jax import models
# The original's pmapped update, importable here as in the original.
from vit_jax.original import make_update_fn  # pylint: disable=unused-import
from vit_jax import partitioning
from vit_jax import utils
from vit_jax.configs import common
from vit_jax.configs import models as model_configs

Batch = Mapping[str, jax.Array]
Metrics = Dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds; `step` counts the updates applied."""

  step: jax.Array
  params: Any
  opt_state: Any


def create_model(config: ml_collections.ConfigDict,
                 num_classes: int) -> nn.Module:
  """The model of `config.model` with the precision/kernel knobs applied."""
  kw = dict(num_classes=num_classes, dtype=jnp.dtype(config.dtype))
  if not models.is_mixer(config.model):
    kw.update(remat=config.remat, attention_impl=config.attention_impl)
  return models.build_model(config.model, **kw)


def create_optimizer(
    config: ml_collections.ConfigDict
) -> Tuple[optax.GradientTransformation, utils.Schedule]:
  """Clipping + SGD momentum (the original) or Adam, with the lr schedule.

  The first-moment accumulator is kept in `config.optim_dtype` (bfloat16 by
  default, as in the original, which halves the optimizer memory).
  """
  lr_fn = utils.create_learning_rate_schedule(
      config.total_steps, config.base_lr, config.decay_type,
      config.warmup_steps)
  # As in the original, optax calls lr_fn(count) with count = updates
  # applied so far (0 at the first update, whose lr is 0 under warmup).
  dtype = jnp.dtype(config.optim_dtype)
  if config.optimizer == 'adam':
    opt = optax.adam(lr_fn, mu_dtype=dtype)
  else:
    opt = optax.sgd(lr_fn, momentum=config.momentum,
                    accumulator_dtype=dtype)
  if config.grad_norm_clip:
    return optax.chain(optax.clip_by_global_norm(config.grad_norm_clip),
                       opt), lr_fn
  return opt, lr_fn


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels, in float32.

  Written with one-hot targets, as the original release did: the same
  numbers as optax's integer-label version without its gather, whose
  lowering alone took ~0.1 s of every compile (or compilation-cache hit) of
  the ViT-B/16 train step.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logp.dtype)
  return -(onehot * logp).sum(-1).mean()


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               tx: optax.GradientTransformation, lr_fn: utils.Schedule,
               rng: jax.Array, accum_steps: int,
               batch_spec: Any = None) -> Tuple[TrainState, Metrics]:
  """One optimizer update on a global batch ('image', integer 'label').

  Micro-batches are strided rows (`utils.accumulate_gradient(strided=True)`)
  so that the data-sharded axis stays in place. A non-finite loss or
  gradient leaves params and optimizer state untouched (metrics['finite'] is
  False); the caller decides whether to stop or skip.
  """
  step_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params, images, labels, dropout_rng):
    logits = model.apply({'params': params}, images, train=True,
                         rngs={'dropout': dropout_rng})
    return cross_entropy(logits, labels)

  loss, grads = utils.accumulate_gradient(
      jax.value_and_grad(loss_fn), state.params, batch['image'],
      batch['label'], accum_steps, strided=True, sharding=batch_spec,
      rng=step_rng)
  grad_norm = optax.global_norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(  # pylint: disable=g-long-lambda
      lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = TrainState(step=state.step + 1,
                         params=keep(params, state.params),
                         opt_state=keep(opt_state, state.opt_state))
  # The learning rate this update applied (optax's count: schedule_count).
  metrics = {'loss': loss, 'grad_norm': grad_norm, 'finite': finite,
             'learning_rate': lr_fn(schedule_count(state))}
  return new_state, metrics


def schedule_count(state: TrainState) -> jax.Array:
  """The count optax passes to the lr schedule at the next update.

  It equals `state.step` unless updates were skipped (a skipped update
  leaves the optimizer state, and so its count, untouched).
  """
  is_count = lambda x: isinstance(x, optax.ScaleByScheduleState)
  found = [x.count for x in jax.tree.leaves(state.opt_state, is_leaf=is_count)
           if is_count(x)]
  return found[0] if found else state.step


def eval_step(params: Any, batch: Batch, *,
              model: nn.Module) -> Tuple[jax.Array, jax.Array]:
  """(number correct, number of real examples) in a padded eval batch."""
  logits = model.apply({'params': params}, batch['image'], train=False)
  correct = (jnp.argmax(logits, -1) == batch['label']) * batch['mask']
  return correct.sum(), batch['mask'].sum()


def init_params(model: nn.Module, config, shardings: Any) -> Any:
  """Fresh parameters, created directly with their shardings."""
  crop = config.pp.crop

  @functools.partial(jax.jit, out_shardings=shardings)
  def init(rng):
    x = jnp.zeros((1, crop, crop, 3), jnp.float32)
    return model.init(rng, x, train=False)['params']

  return init(jax.random.PRNGKey(config.seed))


def pretrained_path(config) -> str:
  """Where the pretrained `.npz` is read from ('' for training from scratch)."""
  if config.pretrained_path:
    return config.pretrained_path
  if config.pretrained_dir:
    if config.get('model_or_filename'):
      stem = model_configs.augreg_filename(config.model_or_filename)
    else:
      stem = config_validation.model_name(config)
    return os.path.join(config.pretrained_dir, f'{stem}.npz')
  return ''


def create_train_state(config, model: nn.Module,
                       tx: optax.GradientTransformation,
                       mesh: jax.sharding.Mesh) -> Tuple[TrainState, Any]:
  """Sharded initial state: pretrained weights (new head) or from scratch.

  Returns the state and its shardings (a TrainState of NamedShardings).
  """
  abstract = models.abstract_params(model, config.pp.crop)
  param_shardings = partitioning.tree_shardings(abstract, mesh,
                                                fsdp=config.fsdp)
  params = init_params(model, config, param_shardings)
  path = pretrained_path(config)
  if path:
    host = checkpoint.load_pretrained(
        pretrained_path=path, init_params=jax.device_get(params),
        model_config=config.model,
        grid_shape=config_validation.token_grid(config))
    params = jax.device_put(host, param_shardings)
  else:
    logging.warning(
        'No pretrained checkpoint (config.pretrained_dir and '
        'pretrained_path are empty): training %s from random initialisation '
        'on %s.', config_validation.model_name(config), config.dataset)
  opt_shardings = partitioning.tree_shardings(
      jax.eval_shape(tx.init, abstract), mesh, fsdp=config.fsdp)
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  shardings = TrainState(step=partitioning.replicated(mesh),
                         params=param_shardings, opt_state=opt_shardings)
  step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  return TrainState(step=step, params=params, opt_state=opt_state), shardings


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
                   blocks: int = 1) -> Iterator[Batch]:
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


CHECKPOINT_PREFIX = 'checkpoint'  # Steps live in {workdir}/checkpoint_{step}.


def checkpoint_dir(workdir: str) -> str:
  """The directory holding the `checkpoint_{step}` folders: the workdir."""
  return os.path.abspath(workdir)


def _manager_options(config=None, **kwargs) -> ocp.CheckpointManagerOptions:
  keep = config.keep_checkpoints if config is not None else None
  return ocp.CheckpointManagerOptions(
      max_to_keep=keep, step_prefix=CHECKPOINT_PREFIX, **kwargs)


def latest_checkpoint_step(workdir: str) -> int:
  """Step of the newest *complete* checkpoint (0 if none).

  Orbax writes into a temporary directory and renames it when done, so a
  checkpoint interrupted mid-write is never reported here.
  """
  if not os.path.isdir(checkpoint_dir(workdir)):
    return 0
  manager = ocp.CheckpointManager(checkpoint_dir(workdir),
                                  options=_manager_options())
  step = manager.latest_step()
  manager.close()
  return step or 0


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  """Orbax manager writing {workdir}/checkpoint_{step}, keeping the newest
  `config.keep_checkpoints`."""
  return ocp.CheckpointManager(checkpoint_dir(workdir),
                               options=_manager_options(config, create=True))


def restore_or_keep(manager: ocp.CheckpointManager, state: TrainState,
                    shardings: Any) -> TrainState:
  """The latest complete checkpoint, restored with `state`'s shardings."""
  step = manager.latest_step()
  if step is None:
    return state
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      state, shardings)
  logging.info('Resuming from the checkpoint of step %d.', step)
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  return restored


class NonFiniteLossError(FloatingPointError, errors.UserError):
  """The loss or gradient became NaN/Inf (config.nonfinite_loss='raise')."""


def _check_finite(pending: Optional[Tuple[int, Metrics]], policy: str):
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


def make_step_fns(config, model, tx, lr_fn, mesh, shardings):
  """Jitted train and eval steps with explicit shardings."""
  batch_shard = partitioning.batch_sharding(mesh)
  split_spec = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(partitioning.DATA))
  step = functools.partial(
      train_step, model=model, tx=tx, lr_fn=lr_fn,
      rng=jax.random.PRNGKey(config.seed), accum_steps=config.accum_steps,
      batch_spec=split_spec)
  train_fn = jax.jit(step, in_shardings=(shardings, batch_shard),
                     out_shardings=(shardings, partitioning.replicated(mesh)),
                     donate_argnums=(0,))
  eval_fn = jax.jit(functools.partial(eval_step, model=model),
                    in_shardings=(shardings.params, batch_shard))
  return train_fn, eval_fn


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
  start = latest_checkpoint_step(workdir)
  path = pretrained_path(config)
  if path and not start:
    checkpoint.check_exists(path,
                            model_name=config_validation.model_name(config))
  mesh = partitioning.create_mesh(config.mesh)
  block, blocks = data_shard(mesh)
  datasets = input_pipeline.get_datasets(
      config, start_step=start, process_index=block, process_count=blocks)
  (train_ds, test_ds), info = datasets, datasets.info
  model = create_model(config, info.num_classes)
  fewshot_eval = fewshot.create_evaluator(config, model, mesh)  # None: off.
  tx, lr_fn = create_optimizer(config)
  if start:  # The checkpoint replaces the pretrained weights: skip them.
    state, shardings = _abstract_state(config, model, tx, mesh)
  else:
    state, shardings = create_train_state(config, model, tx, mesh)
  # Only now (the pretrained file was read) does the workdir get written.
  manager = checkpoint_manager(workdir, config)
  if start:
    state = restore_or_keep(manager, state, shardings)
  train_fn, eval_fn = make_step_fns(config, model, tx, lr_fn, mesh, shardings)
  written = {'checkpoints': os.path.join(checkpoint_dir(workdir),
                                         f'{CHECKPOINT_PREFIX}_<step>')}
  if start >= config.total_steps:
    logging.info('%s already holds the final checkpoint (step %d of %d): '
                 'nothing to train; evaluating it.', workdir, start,
                 config.total_steps)
    accuracy = evaluate(eval_fn, state.params, test_ds,
                        partitioning.batch_sharding(mesh), blocks)
    logging.info('Test accuracy: %.5f', accuracy)
    manager.close()
    return RunResult(state.params, accuracy, int(state.step), written)
  config_file = _record_config(workdir, config, resuming=bool(start))
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
    written['exported model'] = export.export_model(
        workdir, params=state.params, config=config, info=info)
  writer.flush()
  return RunResult(state.params, accuracy, int(state.step), written)


def _record_config(workdir: str, config, *, resuming: bool) -> str:
  """Writes {workdir}/config.json; on resume, warns about changed fields."""
  path = os.path.join(workdir, 'config.json')
  flat = dict(common.flatten(config.to_dict()))
  flat = {k: v if isinstance(v, (int, float, str, bool, type(None)))
          else repr(v) for k, v in flat.items()}
  if resuming and os.path.exists(path):
    with open(path) as f:
      before = json.load(f)
    changed = [f'{k}: {before.get(k)!r} -> {flat.get(k)!r}'
               for k in sorted(set(before) | set(flat))
               if before.get(k) != flat.get(k)]
    if changed:
      logging.warning(
          'Resuming %s with a config that differs from the one it was '
          'started with (%s):\n  %s', workdir, path, '\n  '.join(changed))
  if jax.process_index() == 0:
    export.write_json_atomic(path, flat)
  return path


def _abstract_state(config, model, tx, mesh) -> Tuple[TrainState, Any]:
  """Shapes and shardings of the state, for restoring without initialising."""
  abstract = models.abstract_params(model, config.pp.crop)
  opt = jax.eval_shape(tx.init, abstract)
  shardings = TrainState(
      step=partitioning.replicated(mesh),
      params=partitioning.tree_shardings(abstract, mesh, fsdp=config.fsdp),
      opt_state=partitioning.tree_shardings(opt, mesh, fsdp=config.fsdp))
  state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                     params=abstract, opt_state=opt)
  return state, shardings


def _train_loop(config, state, train_fn, eval_fn, train_ds, test_ds, mesh,
                writer, manager, lr_fn, num_test: int,
                fewshot_eval=None) -> Tuple[TrainState, float]:
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


def _metric_writer(workdir: str, config) -> metric_writers.MetricWriter:
  """Scalars to the console and (process 0) TensorBoard; the config goes to
  TensorBoard's hparams only (main.py logs it readably)."""
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
