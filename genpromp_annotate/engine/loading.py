"""Open Stable Diffusion from a diffusers folder, a single checkpoint file or a hub id; pick device/dtype."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genpromp_annotate.errors import ConfigError, ModelLoadError
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
REQUIRED_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer")


@dataclass
class StableDiffusion:
    """The parts of a Stable Diffusion model that localization and training use."""

    tokenizer: Any  # transformers.CLIPTokenizer
    text_encoder: Any  # transformers.CLIPTextModel
    vae: Any  # diffusers.AutoencoderKL
    unet: Any  # diffusers.UNet2DConditionModel
    scheduler: Any  # diffusers.DDPMScheduler (SD v1 training schedule)
    device: torch.device
    dtype: torch.dtype
    source: str = "<in-memory>"
    extra: dict[str, Any] = field(default_factory=dict)
    runtime: str = "diffusers"  # "native" (engine/native, no diffusers/transformers import) or "diffusers"

    @property
    def latent_scale(self) -> int:
        """Pixels per latent cell (8 for SD v1)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> StableDiffusion:
        self.device = torch.device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        for module in (self.text_encoder, self.vae, self.unet):
            if next(module.parameters()).dtype != self.dtype:
                module.to(dtype=self.dtype)
            module.to(device=self.device)
        return self


def choose_device(device: str | None = None) -> torch.device:
    """`device` when given, else CUDA when present, else Apple MPS, else CPU."""
    if device:
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise ModelLoadError(f"--device {device!r} is not a torch device ({exc})") from exc
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


CPU_DTYPE_ENV = "GENPROMP_CPU_DTYPE"  # float32 | bfloat16: overrides the CPU inference default


def default_cpu_dtype() -> torch.dtype:
    """The CPU inference default: bf16 where the CPU runs it natively, fp32 elsewhere.

    bf16 weights ran 2.09× (1 thread) / 2.55× (2 threads) faster than fp32 at SD-v1.5 size on an
    AVX512-BF16 CPU, with maps at min Pearson 0.995 (bench/results/cpu-dtype-cpu-20261202T042758.json);
    AVX2-only CPUs emulate bf16 many times slower, so they keep fp32. `GENPROMP_CPU_DTYPE` overrides.
    """
    override = os.environ.get(CPU_DTYPE_ENV, "").strip()
    if override:
        if override not in DTYPES:
            raise ModelLoadError(f"{CPU_DTYPE_ENV} must be one of {sorted(DTYPES)}, got {override!r}")
        return DTYPES[override]
    from genpromp_annotate.engine.cpu import cpu_has_fast_bf16

    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def choose_dtype(device: torch.device, dtype: str | torch.dtype | None = None, training: bool = False) -> torch.dtype:
    """`dtype` when given; on CUDA bf16 where supported, else fp16; fp16 on MPS; on CPU `default_cpu_dtype()`
    for inference and fp32 for training (bf16 weights were never measured for training here)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype:
        if dtype not in DTYPES:
            raise ModelLoadError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32 if training else default_cpu_dtype()


RUNTIME_ENV = "GENPROMP_RUNTIME"  # auto | native | diffusers: which modules open a model folder
RUNTIMES = ("auto", "native", "diffusers")


def choose_runtime(runtime: str | None = None) -> str:
    """`runtime` when given, else `GENPROMP_RUNTIME`, else "auto" (native where the folder allows it)."""
    chosen = (runtime or os.environ.get(RUNTIME_ENV, "") or "auto").strip().lower()
    if chosen not in RUNTIMES:
        raise ModelLoadError(f"{RUNTIME_ENV} / runtime must be one of {', '.join(RUNTIMES)}, got {chosen!r}")
    return chosen


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (hub errors span several): CLI errors are one line."""
    return " ".join(str(exc).split())


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _check_diffusers_folder(folder: Path) -> None:
    missing = [name for name in REQUIRED_SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        found = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else []
        raise ModelLoadError(
            f"{folder} is not a Stable Diffusion model folder in diffusers format: missing "
            f"{', '.join(name + '/' for name in missing)} (found: {', '.join(found) or 'nothing'}). "
            "Pass a diffusers folder, a single .safetensors/.ckpt file, or a hub id."
        )
    unet_config = folder / "unet" / "config.json"
    if not unet_config.is_file():
        raise ModelLoadError(f"{folder}: unet/config.json is missing")
    config = json.loads(unet_config.read_text())
    if not config.get("cross_attention_dim"):
        raise ModelLoadError(f"{unet_config}: the UNet has no cross-attention; it is not a text-conditioned SD UNet")


def _load_parts_native(folder: Path, dtype: torch.dtype, device: torch.device, required: bool) -> dict[str, Any] | None:
    """The native modules for `folder`, or None (logged) where they cannot reproduce it exactly and the
    runtime is "auto"; with `required`, that is a ModelLoadError instead."""
    from genpromp_annotate.engine.native.errors import UnsupportedCheckpoint
    from genpromp_annotate.engine.native.loader import load_native_parts

    try:
        return load_native_parts(folder, dtype, device)
    except UnsupportedCheckpoint as exc:
        if required:
            raise ModelLoadError(f"{folder}: the native runtime cannot open this model ({exc}); "
                                 f"unset {RUNTIME_ENV} or set it to diffusers") from exc
        logger.info("%s: opening with diffusers (native runtime: %s)", folder, exc)
        return None


def _load_parts_from_repo(source: str, local_only: bool, dtype: torch.dtype) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kwargs: dict[str, Any] = {"local_files_only": local_only}
    return {
        "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs),
        "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **kwargs),
        "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kwargs),
        "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kwargs),
        # Whatever sampler the repo ships, the noise schedule of SD v1 training is what GenPromp uses.
        "scheduler": DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs),
    }


def _load_parts_from_single_file(path: Path, config: str | None) -> dict[str, Any]:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    kwargs: dict[str, Any] = {"local_files_only": _offline() or config is not None}
    if config:
        kwargs["config"] = config
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), safety_checker=None, requires_safety_checker=False, **kwargs
        )
    except Exception as exc:  # diffusers raises many types here; all mean "cannot read this checkpoint"
        hint = "" if config else " Offline, pass --model-config DIR (a diffusers folder with the same architecture)."
        raise ModelLoadError(f"{path}: cannot load as a Stable Diffusion checkpoint ({_one_line(exc)}).{hint}") from exc
    return {
        "tokenizer": pipe.tokenizer,
        "text_encoder": pipe.text_encoder,
        "vae": pipe.vae,
        "unet": pipe.unet,
        "scheduler": DDPMScheduler.from_config(pipe.scheduler.config),
    }


def load_stable_diffusion(
    source: str | os.PathLike[str],
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    single_file_config: str | None = None,
    training: bool = False,
    runtime: str | None = None,
) -> StableDiffusion:
    """Load Stable Diffusion from a diffusers folder, a single checkpoint file, or a hub id.

    Args:
        source: folder with unet/, vae/, text_encoder/, tokenizer/; or a `.safetensors`/`.ckpt` file;
            or a hub id such as `stable-diffusion-v1-5/stable-diffusion-v1-5` (HF_HUB_OFFLINE honoured).
        device: torch device; default CUDA > MPS > CPU.
        dtype: default bf16/fp16 on CUDA, fp16 on MPS; on CPU bf16 where the CPU has native bf16, else fp32
            (see `choose_dtype`).
        single_file_config: for a single file, a diffusers folder or hub id whose configs describe it.
        training: the model is to be trained (the CPU default is then fp32; diffusers modules always).
        runtime: "auto" (default, or `GENPROMP_RUNTIME`): a diffusers folder opens with the native
            inference modules (engine/native: the same maps, without importing diffusers or transformers)
            where they reproduce every part, else with diffusers; "native" requires them; "diffusers"
            never uses them. Single files, hub ids and training always use diffusers.
    """
    path = Path(source).expanduser()
    torch_device = choose_device(str(device) if device is not None else None)
    torch_dtype = choose_dtype(torch_device, dtype, training)
    chosen_runtime = "diffusers" if training else choose_runtime(runtime)  # training needs diffusers' UNet
    used_runtime = "diffusers"
    if path.is_dir():
        _check_diffusers_folder(path)
        native = None
        if chosen_runtime != "diffusers":
            native = _load_parts_native(path, torch_dtype, torch_device, required=chosen_runtime == "native")
        if native is not None:
            parts, used_runtime = native, "native"
        else:
            try:
                parts = _load_parts_from_repo(str(path), local_only=True, dtype=torch_dtype)
            except (OSError, ValueError, json.JSONDecodeError) as exc:
                raise ModelLoadError(f"{path}: cannot load the model ({_one_line(exc)})") from exc
    elif chosen_runtime == "native":
        raise ModelLoadError(f"model {str(source)!r}: the native runtime opens diffusers folders only")
    elif path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelLoadError(
                f"{path}: a single-file model must end in {', '.join(SINGLE_FILE_SUFFIXES)}, got {path.suffix!r}"
            )
        parts = _load_parts_from_single_file(path, single_file_config)
    elif str(source).count("/") == 1 and not str(source).startswith((".", "/", "~")):
        try:
            parts = _load_parts_from_repo(str(source), local_only=_offline(), dtype=torch_dtype)
        except Exception as exc:  # hub errors come in many types; all mean "not available"
            mode = "offline (HF_HUB_OFFLINE is set)" if _offline() else "online"
            raise ModelLoadError(f"hub model {source!r} could not be loaded {mode}: {_one_line(exc)}") from exc
    else:
        raise ModelLoadError(f"model {str(source)!r}: no such folder or file, and not a hub id of the form owner/name")

    model = StableDiffusion(
        tokenizer=parts["tokenizer"],
        text_encoder=parts["text_encoder"],
        vae=parts["vae"],
        unet=parts["unet"],
        scheduler=parts["scheduler"],
        device=torch_device,
        dtype=torch_dtype,
        source=str(source),
        runtime=used_runtime,
    )
    for module in (model.text_encoder, model.vae, model.unet):
        module.requires_grad_(False)
        module.eval()
    model.to(torch_device, torch_dtype)
    logger.info("loaded %s on %s as %s (%s modules)", source, torch_device, torch_dtype, used_runtime)
    return model


def require_diffusers_modules(model: StableDiffusion, purpose: str) -> None:
    """`purpose` (UNet finetuning, gradient checkpointing) needs diffusers' modules; a model opened with the
    native inference modules is refused with the way to open one that has them."""
    if model.runtime == "native":
        raise ConfigError(f"{purpose} needs diffusers' modules, but {model.source} was opened with the native "
                          "inference modules; open it with load_stable_diffusion(..., training=True)")


def model_from_components(parts: dict[str, Any], tokenizer: Any, device: str | None = None,
                          dtype: str | torch.dtype | None = None, source: str = "<in-memory>") -> StableDiffusion:
    """Wrap in-memory components (e.g. from `build_sd_v1_components`) as a StableDiffusion."""
    torch_device = choose_device(device)
    model = StableDiffusion(tokenizer=tokenizer, text_encoder=parts["text_encoder"], vae=parts["vae"],
                            unet=parts["unet"], scheduler=parts["scheduler"], device=torch_device,
                            dtype=choose_dtype(torch_device, dtype), source=source)
    for module in (model.text_encoder, model.vae, model.unet):
        module.requires_grad_(False)
        module.eval()
    return model.to(model.device, model.dtype)


def weights_digest(module: torch.nn.Module, length: int = 12) -> str:
    """Short sha256 of a module's parameters (names, shapes and bytes): names a UNet or encoder exactly."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:length]


def load_finetuned_unet(model: Any, unet_path: str) -> Any:
    """A finetuned UNet (diffusers folder), frozen, on the model's device and dtype; ModelLoadError if unusable.

    A natively opened model gets a native UNet where it reproduces the folder, like its base UNet."""
    if getattr(model, "runtime", "diffusers") == "native":
        from genpromp_annotate.engine.native.errors import UnsupportedCheckpoint
        from genpromp_annotate.engine.native.loader import load_native_unet

        try:
            native = load_native_unet(Path(unet_path), model.dtype, model.device)
        except UnsupportedCheckpoint as exc:
            logger.info("%s: opening with diffusers (native runtime: %s)", unet_path, exc)
        except ModelLoadError as exc:
            raise ModelLoadError(f"finetuned UNet {unet_path}: cannot load ({exc}); select another one or none") from exc
        else:
            native.requires_grad_(False)
            return native.eval()
    from diffusers import UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.from_pretrained(unet_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"finetuned UNet {unet_path}: cannot load ({exc}); select another one or none") from exc
    unet.requires_grad_(False)
    unet.eval()
    return unet.to(model.device, model.dtype)
