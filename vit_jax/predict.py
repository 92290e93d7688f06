r"""Top-k class predictions for images, from the command line or Python.

  python -m vit_jax.predict --checkpoint=/tmp/quickstart IMAGE...
  python -m vit_jax.predict --model=ViT-B_16 --top_k=5 \
      --checkpoint=checkpoints/ViT-B_16.npz --labels=lemmas.txt IMAGE...

prints, for every image, the top-k labels with their softmax probabilities.

`--checkpoint` is either
- a training workdir, or the `model.npz` inside it: `model.json` beside it
  supplies the model config, the class names and the resolution, so
  `--model` is optional (and must agree with it when given); or
- an official-layout `.npz` (local, gs:// or https://): `--model` names its
  registered config, the number of classes comes from the head's shape and
  the default resolution is the file's own (its position-embedding grid
  times the patch size: 224 px for the imagenet21k files, 384 px for
  imagenet21k+imagenet2012). Another `--resolution` resizes the position
  embedding as fine-tuning does (`checkpoint.interpolate_posembed`).

Images (JPEG, PNG, GIF, BMP, WebP, TIFF) go through the project's one
image loader, `images.load_image`: the eval pipeline's decode, bilinear
resize to resolution x resolution and [0, 255] -> [-1, 1].

Class names, first match wins: `--labels=FILE` (one name per line, e.g.
ImageNet lemmas for 1k/21k heads), model.json's `class_names`, the ImageNet
WordNet ids that tfds ships (`n01440764`, ...) for 1000-class heads, else
the class indices.

In Python (e.g. a notebook):

  loaded = predict.load_model('/tmp/quickstart')
  images = predict.load_images(['a.png'], loaded.resolution)
  predict.predict(loaded.model, loaded.params, images, top_k=5,
                  class_names=loaded.class_names)
  # -> [[('3', 0.97), ('8', 0.01), ...]]

Bad input (missing or undecodable image, missing checkpoint, a checkpoint
of another model) prints one message and exits with status 1.
"""

import importlib.resources
import sys
from typing import List, Optional, Sequence, Tuple

import jax
import numpy as np

from vit_jax import cli
from vit_jax import errors
from vit_jax import images as images_lib
from vit_jax import workdir as workdir_lib
from vit_jax.inspect import analysis

_IMAGENET_IDS = ('datasets', 'imagenet2012', 'labels.txt')  # In tfds.
Prediction = List[Tuple[str, float]]  # (label, probability), best first.
LoadedModel = workdir_lib.LoadedModel


class PredictError(errors.UserError):
  """Bad input to `predict` (images, labels, options); says what to do."""


def load_model(checkpoint_path: str, model_name: Optional[str] = None,
               resolution: Optional[int] = None) -> LoadedModel:
  """`workdir.load_model`, for a checkpoint that has a classification head.

  Raises:
    PredictError, checkpoint.CheckpointError: with a message saying what
      to do.
  """
  loaded = workdir_lib.load_model(checkpoint_path, model_name, resolution)
  if loaded.model.num_classes is None:
    raise PredictError(f'{checkpoint_path} has no classification head, so '
                       'it cannot predict classes.')
  return loaded


def read_labels(path: str, num_classes: Optional[int] = None) -> List[str]:
  """Class names from a text file, one per line (trailing blanks ignored)."""
  try:
    with open(path, encoding='utf-8') as f:
      names = [line.strip() for line in f.read().rstrip().splitlines()]
  except (OSError, UnicodeDecodeError) as e:
    raise PredictError(f'Cannot read labels file {path}: {e}') from None
  if num_classes is not None and len(names) != num_classes:
    raise PredictError(
        f'Labels file {path} has {len(names)} names but the model has '
        f'{num_classes} classes; pass a file with one name per class.')
  return names


def imagenet_ids() -> Optional[List[str]]:
  """The 1000 ImageNet-1k WordNet ids tfds ships (None if it is absent)."""
  try:
    ref = importlib.resources.files('tensorflow_datasets').joinpath(
        *_IMAGENET_IDS)
    return ref.read_text().split()
  except (ModuleNotFoundError, OSError):
    return None


def get_class_names(num_classes: int, labels: Optional[str] = None,
                    saved: Optional[Sequence[str]] = None) -> List[str]:
  """Class names: from `labels` (a file), else `saved` (model.json's), else
  tfds' ImageNet WordNet ids for 1000 classes, else the indices."""
  if labels:
    return read_labels(labels, num_classes)
  if saved and len(saved) == num_classes:
    return [str(n) for n in saved]
  if num_classes == 1000:
    ids = imagenet_ids()
    if ids and len(ids) == 1000:
      return ids
  return [str(i) for i in range(num_classes)]


# The project's one image loader (also inspect's and the notebooks').
load_image = images_lib.load_image
load_images = images_lib.load_images


def predict(model, params, images, *, top_k: int = 5,
            class_names: Optional[Sequence[str]] = None,
            batch_size: int = 32) -> List[Prediction]:
  """Top-k (label, probability) per image, most probable first.

  Args:
    model: a classifier from `load_model` or `models.get_model`.
    params: its parameters.
    images: float (B, H, W, 3) or (H, W, 3) in [-1, 1], e.g. from
      `load_images`.
    top_k: labels per image (at most the number of classes).
    class_names: label of each class; default: the class indices.
    batch_size: images per forward pass.

  Returns:
    One list of `top_k` (label, softmax probability) pairs per image.
  """
  images = np.asarray(images, np.float32)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] != 3:
    raise PredictError(f'images must be (B, H, W, 3), got {images.shape}.')
  if top_k < 1:
    raise PredictError(f'top_k={top_k} must be >= 1.')
  forward = analysis.make_forward_fn(model)
  probs = np.concatenate([
      np.asarray(jax.nn.softmax(forward(params, images[i:i + batch_size])))
      for i in range(0, len(images), batch_size)])
  k = min(top_k, probs.shape[-1])
  order = np.argsort(-probs, axis=-1, kind='stable')[:, :k]
  label = (lambda c: class_names[c]) if class_names else str
  return [[(label(int(c)), float(p[c])) for c in row]
          for p, row in zip(probs, order)]


def format_predictions(path: str, prediction: Prediction) -> str:
  """'path' followed by one indented 'probability  label' line per class."""
  lines = [f'{path}:'] + [f'  {p:7.4f}  {name}' for name, p in prediction]
  return '\n'.join(lines)


def _parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(
      prog='python -m vit_jax.predict',
      description='Top-k class predictions of a ViT/Mixer checkpoint.')
  parser.add_argument('images', nargs='+', metavar='IMAGE',
                      help='image files (JPEG, PNG, GIF, BMP, WebP, TIFF)')
  workdir_lib.add_load_model_flags(parser)
  parser.add_argument('--top_k', type=int, default=5,
                      help='labels printed per image')
  parser.add_argument('--labels', default=None,
                      help='class names, one per line')
  parser.add_argument('--batch_size', type=int, default=32,
                      help='images per forward pass')
  return parser


def predict_command(args: Sequence[str]) -> None:
  """The command's body: parses `args` (without the program name), loads
  everything first (so bad input fails fast), predicts and prints."""
  args = _parser().parse_args(args)
  if args.top_k < 1 or args.batch_size < 1:
    raise PredictError('--top_k and --batch_size must be >= 1.')
  for path in args.images:  # Before the (slow) checkpoint load.
    images_lib.check_image(path)
  loaded = load_model(args.checkpoint, args.model, args.resolution)
  names = get_class_names(loaded.model.num_classes, args.labels,
                          loaded.class_names)
  images = load_images(args.images, loaded.resolution)
  results = predict(loaded.model, loaded.params, images, top_k=args.top_k,
                    class_names=names, batch_size=args.batch_size)
  print(f'{loaded.model_name} at {loaded.resolution} px, '
        f'{loaded.model.num_classes} classes:')
  for path, prediction in zip(args.images, results):
    print(format_predictions(path, prediction))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; returns the exit status (0, or 1 on bad input)."""
  # PredictError and images.ImageError are UserErrors too.
  return cli.main('vit_jax.predict', predict_command, argv)


if __name__ == '__main__':
  sys.exit(main())
