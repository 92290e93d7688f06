"""The train and eval steps, and `build`: the one place they are assembled.

`build(config, num_classes)` gives model, optimizer, lr schedule, mesh,
state shardings, the state (initialised, pretrained, or abstract for
restoring and compile-only planning) and the jitted steps. `train`, `plan`
and `benchmark` all call it, so they run, plan and time one program.
"""

import dataclasses
import functools
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vit_jax import checkpoint
from vit_jax import config_validation
from vit_jax import models
from vit_jax import partitioning
from vit_jax import utils
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
  lowering is a noticeable part of every compile (or compilation-cache hit)
  of the train step (bench/RESULTS.md).
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


@dataclasses.dataclass(frozen=True)
class Built:
  """What `build` returns: one fine-tuning program, ready to run."""
  model: nn.Module
  tx: optax.GradientTransformation
  lr_fn: utils.Schedule
  mesh: jax.sharding.Mesh
  shardings: TrainState  # Of NamedShardings, the state's layout.
  # Arrays, or (abstract=True) ShapeDtypeStructs carrying `shardings`.
  state: TrainState
  train_fn: Callable[[TrainState, Batch], Tuple[TrainState, Metrics]]
  eval_fn: Callable[[Any, Batch], Tuple[jax.Array, jax.Array]]


def build(config: ml_collections.ConfigDict, num_classes: int, *,
          devices: Optional[Sequence[Any]] = None,
          mesh: Optional[jax.sharding.Mesh] = None, abstract: bool = False,
          pretrained: bool = True) -> Built:
  """Everything a step of a resolved config needs, with `num_classes`.

  The mesh is `mesh`, else one over `devices` (default all). `abstract`:
  the state as sharded ShapeDtypeStructs, nothing allocated (to restore a
  checkpoint into, or to lower). Else `pretrained`: load
  `pretrained_path(config)` (new head, posemb resized) if it names a file.
  """
  mesh = mesh or partitioning.create_mesh(config.mesh, devices)
  model = create_model(config, num_classes)
  tx, lr_fn = create_optimizer(config)
  params = models.abstract_params(model, config.pp.crop)
  opt_state = jax.eval_shape(tx.init, params)
  shard = functools.partial(partitioning.tree_shardings, mesh=mesh,
                            fsdp=config.fsdp)
  shardings = TrainState(step=partitioning.replicated(mesh),
                         params=shard(params), opt_state=shard(opt_state))
  if abstract:
    state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, opt_state),
        shardings)
  else:
    state = _initial_state(config, model, tx, shardings, pretrained)
  train_fn, eval_fn = _jit_steps(config, model, tx, lr_fn, mesh, shardings)
  return Built(model=model, tx=tx, lr_fn=lr_fn, mesh=mesh,
               shardings=shardings, state=state, train_fn=train_fn,
               eval_fn=eval_fn)


def _initial_state(config, model: nn.Module, tx, shardings: TrainState,
                   pretrained: bool) -> TrainState:
  """Step 0 with pretrained weights (new head) or fresh ones, sharded."""
  params = models.init_params(model, config.pp.crop, seed=config.seed,
                              shardings=shardings.params)
  path = pretrained_path(config) if pretrained else ''
  if path:
    host_params = checkpoint.load_pretrained(
        pretrained_path=path, init_params=jax.device_get(params),
        model_config=config.model,
        grid_shape=config_validation.token_grid(config))
    params = jax.device_put(host_params, shardings.params)
  elif pretrained:
    logging.warning(
        'No pretrained checkpoint (config.pretrained_dir and '
        'pretrained_path are empty): training %s from random initialisation '
        'on %s.', config_validation.model_name(config), config.dataset)
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
  step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  return TrainState(step=step, params=params, opt_state=opt_state)


def _jit_steps(config, model, tx, lr_fn, mesh, shardings):
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
