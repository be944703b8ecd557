"""Opt-in speed settings of a loaded model: channels-last memory and `torch.compile`, with a clean fallback.

What is compiled is chosen so that the capture stays eager and compiled code never recompiles per call:
the VAE encoder whole, and in the UNet every ResNet block, feed-forward and the time embedding. The
attention layers stay as they are, because the Localizer swaps their processors on every call (a
compiled UNet would be re-traced each time) and their self-attention already runs on SDPA's fused
kernels. Where compilation is unsupported (no C++ compiler, an unsupported device or op), the first
call that fails turns every compiled part back to eager code, logs one warning, and the run goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from genpromp_annotate.engine.loading import StableDiffusion
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)

COMPILE_BACKEND_ENV = "GENPROMP_COMPILE_BACKEND"  # torch.compile backend for --compile (default inductor)
COMPILED_UNET_PARTS = ("ResnetBlock2D", "FeedForward", "TimestepEmbedding", "Downsample2D", "Upsample2D")


def to_channels_last(model: StableDiffusion) -> StableDiffusion:
    """The UNet and VAE in channels-last memory (NHWC): faster convolutions on GPUs with tensor cores and
    on some CPUs; the maps are the same up to float rounding."""
    for module in (model.unet, model.vae):
        module.to(memory_format=torch.channels_last)
    model.extra["channels_last"] = True
    return model


@dataclass(frozen=True)
class SpeedOptions:
    """The opt-in speed settings (`--compile`, `--channels-last`); neither changes what a map means."""

    compile: bool = False
    channels_last: bool = False


def accelerate(model: StableDiffusion, options: SpeedOptions) -> StableDiffusion:
    """Apply `options` to a loaded model in place (after any finetuned UNet is in place); returns it."""
    if options.channels_last:
        to_channels_last(model)
    if options.compile:
        compile_model(model, backend=os.environ.get(COMPILE_BACKEND_ENV) or "inductor")
    return model


@dataclass
class CompileState:
    """Whether the compiled parts still run compiled, and what turned them back to eager."""

    backend: Any
    parts: int = 0
    failed: str | None = None
    originals: dict[int, tuple[torch.nn.Module, Callable[..., Any]]] | None = None

    def fall_back(self, error: BaseException) -> None:
        """Restore every eager forward (once), keeping the reason."""
        if self.failed is not None:
            return
        self.failed = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        for module, _ in (self.originals or {}).values():
            module.__dict__.pop("forward", None)  # the class's own forward again
        logger.warning("torch.compile is not usable here (%s); running eager", self.failed)


def _compile_targets(model: StableDiffusion) -> Iterator[torch.nn.Module]:
    yield model.vae.encoder
    for module in model.unet.modules():
        if type(module).__name__ in COMPILED_UNET_PARTS:
            yield module


def _guarded(state: CompileState, compiled: Callable[..., Any], eager: Callable[..., Any]) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        if state.failed is None:
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - compile errors come in many types (dynamo, inductor, C++)
                state.fall_back(exc)
        return eager(*args, **kwargs)  # a genuine error of the module raises here too, unmasked

    return forward


def compile_model(model: StableDiffusion, backend: Any = "inductor", mode: str | None = None) -> CompileState:
    """Compile the model's VAE encoder and UNet blocks in place (see the module docstring).

    Compilation happens on the first call of each part; if it fails anywhere, everything this call
    compiled falls back to eager (`CompileState.failed` says why). Parts compiled before are left as they
    are. Returns the state, also kept in `model.extra["compile"]`.
    """
    state = CompileState(backend=backend, originals={})
    for module in _compile_targets(model):
        if "forward" in module.__dict__:  # compiled already (a shared model, or a second call)
            continue
        eager = module.forward
        compiled = torch.compile(eager, backend=backend, mode=mode, dynamic=False)
        state.originals[id(module)] = (module, eager)  # type: ignore[index]
        module.forward = _guarded(state, compiled, eager)
        state.parts += 1
    model.extra["compile"] = state
    logger.info("compiling %d parts of %s with torch.compile (backend %s) on first use", state.parts,
                model.source, backend)
    return state
