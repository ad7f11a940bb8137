"""Layer catalogs found by one dummy forward pass: any ``nn.Module`` as a backbone.

:func:`probe_outputs` runs one batch of zeros through a network with hooks on the named submodules and
records the shape of what each returns. :func:`infer_layer` turns a shape into a
:class:`~deepfeat.backbones.layers.LayerInfo`:

- (N, C, H, W): a map (kind ``pool`` for pooling modules, ``conv`` otherwise), stride = input side / H;
  (N, C, 1, 1) after a pooling module is a vector (``pool``); with the channel count known, an
  (N, H, W, C) output is read as channels-last (``nhwc``);
- (N, D): a vector: ``logits`` for the network's own output when it is an ``nn.Linear``, ``fc``
  otherwise, with the ``nn.Linear`` as its weight layer (gradient features need it);
- (N, L, C): a transformer's tokens: the patch tokens as a map (``block``, layout ``tokens``) and,
  when there are prefix tokens, the class token as a vector (``token``). The number of prefix tokens
  is the network's ``num_prefix_tokens`` when it has one (timm's convention), else 0 or 1, whichever
  leaves a square grid of patches for the square dummy input.

:meth:`deepfeat.backbones.Backbone.from_module` builds a backbone from these; ``timm_nets`` builds its
catalogs with them too.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from deepfeat.backbones.layers import LayerCatalog, LayerInfo
from deepfeat.errors import BackboneError, ConfigError
from deepfeat.validation import check_choice

_POOLS = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
)


def probe_outputs(
    module: nn.Module, paths: Iterable[str], input_hw: tuple[int, int], *, strict: bool = True
) -> tuple[dict[str, tuple[int, ...]], torch.Tensor]:
    """Shapes of the outputs of the submodules at ``paths`` for one (1, 3, H, W) batch of zeros, and
    the network's own output. A submodule that returns something other than one tensor, or that the
    pass never reaches, is an error naming it (``strict=False``: left out of the shapes)."""
    names = dict(module.named_modules())
    paths = list(dict.fromkeys(paths))
    for path in paths:
        if path not in names:
            check_choice("submodule", path, [n for n in names if n])
    shapes: dict[str, tuple[int, ...]] = {}
    problems: dict[str, str] = {}

    def hook(path):
        def record(_m, _i, out):
            if path in shapes or path in problems:
                return
            if isinstance(out, torch.Tensor):
                shapes[path] = tuple(out.shape)
            else:
                problems[path] = f"returns a {type(out).__name__}, not one tensor"

        return record

    handles = [names[p].register_forward_hook(hook(p)) for p in paths]
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            output = module(torch.zeros(1, 3, *input_hw, device=module_device(module)))
    except Exception as exc:
        raise BackboneError(
            f"{type(module).__name__}: a forward pass of a 1x3x{input_hw[0]}x{input_hw[1]} input failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); give the input size "
            "the network expects through its preprocessing"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    if problems and strict:
        path, why = next(iter(problems.items()))
        raise BackboneError(f"submodule {path!r} {why}; choose a submodule whose output is a tensor")
    missing = [p for p in paths if p not in shapes and p not in problems]
    if missing and strict:
        raise BackboneError(f"submodules {missing} are not reached by a forward pass; choose others")
    if not isinstance(output, torch.Tensor):
        output = None
    return shapes, output


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module without any)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def prefix_tokens(module: nn.Module, length: int) -> int:
    """Class / register tokens ahead of the patch tokens in a sequence of ``length`` tokens."""
    declared = getattr(module, "num_prefix_tokens", None)
    if isinstance(declared, int) and 0 <= declared < length:
        return declared
    for p in (0, 1):
        side = math.isqrt(length - p)
        if side * side == length - p:
            return p
    raise BackboneError(
        f"{type(module).__name__}: cannot tell the prefix tokens of a {length}-token sequence; "
        "set num_prefix_tokens on the module (timm's convention)"
    )


def infer_layer(
    name: str,
    path: str,
    shape: tuple[int, ...],
    input_hw: tuple[int, int],
    root: nn.Module,
    *,
    channels: int | None = None,
    stride: int | None = None,
    is_output: bool = False,
) -> list[LayerInfo]:
    """The catalog entries for submodule ``path`` whose output has ``shape`` (see the module docstring);
    ``channels`` / ``stride``, when known (timm's feature info), are used as given."""
    sub = root.get_submodule(path)
    side = input_hw[0]
    if len(shape) == 4:
        if channels is not None and shape[1] != channels and shape[3] == channels:
            c, h, layout = shape[3], shape[1], "nhwc"
        else:
            c, h, layout = shape[1], shape[2], "nchw"
        pooling = isinstance(sub, _POOLS)
        if pooling and shape[2] == shape[3] == 1 and layout == "nchw":
            return [LayerInfo(name, path, "pool", c, None)]
        step = stride or max(1, round(side / h))
        return [LayerInfo(name, path, "pool" if pooling else "conv", c, step, layout=layout)]
    if len(shape) == 2:
        linear = path if isinstance(sub, nn.Linear) else None
        kind = "logits" if is_output and linear is not None else "fc"
        return [LayerInfo(name, path, kind, int(shape[1]), None, linear=linear)]
    if len(shape) == 3:
        length, c = int(shape[1]), int(shape[2])
        prefix = prefix_tokens(root, length)
        grid = math.isqrt(length - prefix)
        step = stride or max(1, round(side / max(1, grid)))
        out = [LayerInfo(name, path, "block", c, step, layout="tokens", prefix_tokens=prefix)]
        if prefix >= 1 and getattr(root, "cls_token", 1) is not None:
            out.append(LayerInfo(f"{name}_cls", path, "token", c, None, layout="class-token"))
        return out
    raise BackboneError(
        f"submodule {path!r} returns shape {shape}; expected (N, C, H, W), (N, D) or (N, L, C)"
    )


def catalog_from_module(
    module: nn.Module, layers: Sequence[str] | Mapping[str, str], input_hw: tuple[int, int]
) -> LayerCatalog:
    """A catalog of ``layers`` (dotted submodule paths, or {name: path}) of ``module``, from one dummy
    forward pass; a ``prob`` layer (softmax) follows a ``logits`` layer."""
    if isinstance(layers, Mapping):
        pairs = [(str(k), str(v)) for k, v in layers.items()]
    elif isinstance(layers, str):
        raise ConfigError(f"layers takes a list of submodule paths, e.g. [{layers!r}], not a string")
    else:
        pairs = [(str(p), str(p)) for p in layers]
    if not pairs:
        raise ConfigError("layers names no submodule; give the dotted paths of the layers to extract")
    shapes, output = probe_outputs(module, [p for _, p in pairs], input_hw)
    out: list[LayerInfo] = []
    for name, path in pairs:
        is_output = (
            output is not None and tuple(output.shape) == shapes[path] and path == _last_module(module, pairs)
        )
        out += infer_layer(name, path, shapes[path], input_hw, module, is_output=is_output)
    logits = [layer for layer in out if layer.kind == "logits"]
    if logits and "prob" not in {layer.name for layer in out}:
        out.append(LayerInfo("prob", None, "prob", logits[-1].channels, None, derived_from=logits[-1].name))
    return LayerCatalog(out)


def _last_module(module: nn.Module, pairs: list[tuple[str, str]]) -> str:
    """The requested path that comes last in the network's module order."""
    order = {name: i for i, (name, _) in enumerate(module.named_modules())}
    return max((p for _, p in pairs), key=lambda p: order.get(p, -1))


def state_digest(module: nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a module's parameters and buffers: the
    weights identity of a module that came from no file."""
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
