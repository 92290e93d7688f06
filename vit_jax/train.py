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
import os
import time
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

from absl import logging
from clu import metric_writers
from clu import periodic_actions
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
from vit_jax import export
from vit_jax import input_pipeline
from vit_jax import models
from vit_jax import partitioning
from vit_jax import utils

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
      total_steps=config.total_steps, base=config.base_lr,
      decay_type=config.decay_type, warmup_steps=config.warmup_steps)
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


def accumulate_gradients(loss_and_grad: Callable, params: Any, batch: Batch,
                         rng: jax.Array, accum_steps: int,
                         batch_spec: Any = None) -> Tuple[jax.Array, Any]:
  """Mean loss and gradient over `accum_steps` micro-batches.

  Micro-batch k holds rows k, k + accum_steps, ... of the batch: the reshape
  (B, ...) -> (B / accum, accum, ...) keeps the data-sharded leading axis
  intact, so no device exchanges examples.
  """
  images, labels = batch['image'], batch['label']
  if accum_steps == 1:
    return loss_and_grad(params, images, labels, rng)

  def split(x):
    x = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
    if batch_spec is not None:
      x = jax.lax.with_sharding_constraint(x, batch_spec)
    return x

  images, labels = split(images), split(labels)

  def body(carry, k):
    loss_sum, grad_sum = carry
    loss, grads = loss_and_grad(params, images[:, k], labels[:, k],
                                jax.random.fold_in(rng, k))
    return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  (loss, grads), _ = jax.lax.scan(body, (jnp.float32(0), zeros),
                                  jnp.arange(accum_steps))
  return loss / accum_steps, jax.tree.map(lambda g: g / accum_steps, grads)


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               tx: optax.GradientTransformation, lr_fn: utils.Schedule,
               rng: jax.Array, accum_steps: int,
               batch_spec: Any = None) -> Tuple[TrainState, Metrics]:
  """One optimizer update. A non-finite loss or gradient leaves params and
  optimizer state untouched (metrics['finite'] is False); the caller decides
  whether to stop or skip."""
  step_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params, images, labels, dropout_rng):
    logits = model.apply({'params': params}, images, train=True,
                         rngs={'dropout': dropout_rng})
    return cross_entropy(logits, labels)

  loss, grads = accumulate_gradients(
      jax.value_and_grad(loss_fn), state.params, batch, step_rng, accum_steps,
      batch_spec)
  grad_norm = optax.global_norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(  # pylint: disable=g-long-lambda
      lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = TrainState(step=state.step + 1,
                         params=keep(params, state.params),
                         opt_state=keep(opt_state, state.opt_state))
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


def abstract_params(model: nn.Module, crop: int) -> Any:
  """Parameter shapes without allocating anything."""
  x = jax.ShapeDtypeStruct((1, crop, crop, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x
  )['params']


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
    stem = config.pretrained_filename or config.model_name
    return os.path.join(config.pretrained_dir, f'{stem}.npz')
  return ''


def create_train_state(config, model: nn.Module,
                       tx: optax.GradientTransformation,
                       mesh: jax.sharding.Mesh) -> Tuple[TrainState, Any]:
  """Sharded initial state: pretrained weights (new head) or from scratch.

  Returns the state and its shardings (a TrainState of NamedShardings).
  """
  abstract = abstract_params(model, config.pp.crop)
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
    logging.warning('config.pretrained_dir is empty: training %s from '
                    'scratch.', config.model_name)
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


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def latest_checkpoint_step(workdir: str) -> int:
  """Step of the newest *complete* checkpoint (0 if none).

  Orbax writes into a temporary directory and renames it when done, so a
  checkpoint interrupted mid-write is never reported here.
  """
  if not os.path.isdir(checkpoint_dir(workdir)):
    return 0
  manager = ocp.CheckpointManager(checkpoint_dir(workdir))
  step = manager.latest_step()
  manager.close()
  return step or 0


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  """Orbax manager in {workdir}/checkpoints, keeping the newest few."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


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


class NonFiniteLossError(FloatingPointError):
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


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Dict[str, float]:
  """Fine-tunes `config.model` on `config.dataset`; returns final metrics.

  Resumes from the newest complete checkpoint in `workdir` if there is one.
  Writes orbax checkpoints, TensorBoard events and (with config.export) the
  official-layout `model.npz` + `model.json` into `workdir`. Inputs are
  validated (config, pretrained file, dataset) before anything is written
  or compiled.
  """
  config = config_validation.resolve_and_validate(config)
  start = latest_checkpoint_step(workdir)
  path = pretrained_path(config)
  if path and not start:
    checkpoint.check_exists(path, model_name=config.model_name)
  mesh = partitioning.create_mesh(config.mesh)
  block, blocks = data_shard(mesh)
  train_ds, test_ds, info = input_pipeline.get_datasets(
      config, start_step=start, process_index=block, process_count=blocks)
  model = create_model(config, info.num_classes)
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
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  writer.write_hparams(_hparams(config))
  try:
    state, accuracy = _train_loop(config, state, train_fn, eval_fn, train_ds,
                                  test_ds, mesh, writer, manager)
  finally:  # Also on errors: finish the (checked) checkpoint being written.
    manager.wait_until_finished()
  if config.export:
    export.export_model(workdir, params=state.params, config=config,
                        info=info)
  writer.flush()
  return {'accuracy': accuracy, 'step': int(state.step)}


def _abstract_state(config, model, tx, mesh) -> Tuple[TrainState, Any]:
  """Shapes and shardings of the state, for restoring without initialising."""
  abstract = abstract_params(model, config.pp.crop)
  opt = jax.eval_shape(tx.init, abstract)
  shardings = TrainState(
      step=partitioning.replicated(mesh),
      params=partitioning.tree_shardings(abstract, mesh, fsdp=config.fsdp),
      opt_state=partitioning.tree_shardings(opt, mesh, fsdp=config.fsdp))
  state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                     params=abstract, opt_state=opt)
  return state, shardings


def _train_loop(config, state, train_fn, eval_fn, train_ds, test_ds, mesh,
                writer, manager) -> Tuple[TrainState, float]:
  """Steps from state.step + 1 to total_steps with logging, eval, saving."""
  total = config.total_steps
  sharding = partitioning.batch_sharding(mesh)
  report = periodic_actions.ReportProgress(
      num_train_steps=total, writer=writer, every_steps=config.progress_every)
  blocks = data_shard(mesh)[1]
  batches = device_batches(train_ds, sharding, config.prefetch, blocks)
  accuracy, tick, tick_step = float('nan'), time.perf_counter(), int(state.step)
  pending = None  # (step, metrics) checked one step late: no host stall.
  for step in range(int(state.step) + 1, total + 1):
    state, metrics = train_fn(state, next(batches))
    _check_finite(pending, config.nonfinite_loss)
    pending = (step, metrics)
    report(step)
    if utils.itstime(step, config.progress_every, total):
      now = time.perf_counter()
      img_s = config.batch * (step - tick_step) / (now - tick)
      writer.write_scalars(step, {
          'train_loss': float(metrics['loss']),
          'learning_rate': float(metrics['learning_rate']),
          'img_per_sec_per_core': img_s / jax.device_count()})
      tick, tick_step = now, step
    if utils.itstime(step, config.eval_every, total):
      with report.timed('eval'):
        accuracy = evaluate(eval_fn, state.params, test_ds, sharding,
                            blocks)
      writer.write_scalars(step, {'test_accuracy': accuracy})
      tick = time.perf_counter()  # Eval time is not training throughput.
    if utils.itstime(step, config.checkpoint_every, total):
      # Never save past an unchecked step: a 'raise' run must not resume
      # beyond the bad batch.
      _check_finite(pending, config.nonfinite_loss)
      pending = None
      manager.save(step, args=ocp.args.StandardSave(state))
  _check_finite(pending, config.nonfinite_loss)
  return state, accuracy


def _hparams(config) -> Dict[str, Any]:
  """Scalar config values, flattened, for TensorBoard's hparams plugin."""
  flat = flax.traverse_util.flatten_dict(config.to_dict(), sep='.')
  return {k: v for k, v in flat.items()
          if isinstance(v, (int, float, str, bool)) and v is not None}
