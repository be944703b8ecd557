"""Click options shared by the commands that run the engine; their defaults are LocalizeConfig's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.presets import PRESETS, LocalizeConfig, preset


def _int_tuple(value: str | None, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise ConfigError(f"--{name} takes comma-separated integers, got {value!r}") from exc


def engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --preset, --threshold, --omega, --timesteps, --resolutions, --seed, --no-noise, --latent, --multi-box."""
    defaults = LocalizeConfig()
    options = [
        click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="paper", show_default=True,
                     help="Named settings bundle; the options below override it."),
        click.option("--threshold", "--tau", "threshold", type=float, default=None,
                     help=f"Box threshold τ on the normalised map [paper: {defaults.threshold}; CUB 0.23]."),
        click.option("--omega", type=float, default=None, help=f"ω in f_c = ω·f_r + (1−ω)·f_d [{defaults.omega}]."),
        click.option("--timesteps", default=None, help="Comma-separated noise timesteps [0,99]."),
        click.option("--resolutions", default=None, help="Comma-separated attention map sides to use [8,16]."),
        click.option("--seed", type=int, default=None, help=f"Seed of the noise and latent sample [{defaults.seed}]."),
        click.option("--no-noise", is_flag=True, default=False, help="Do not add noise (the paper's Table 8 ablation)."),
        click.option("--latent", type=click.Choice(["sample", "mean"]), default=None,
                     help="VAE posterior sample (paper) or its mean (deterministic)."),
        click.option("--multi-box", is_flag=True, default=False,
                     help="One box per region above --min-box-area instead of the largest only."),
        click.option("--min-box-area", type=float, default=None,
                     help=f"Smallest region for --multi-box, as a fraction of the image [{defaults.min_box_area}]."),
        click.option("--propagate", "propagation_side", type=click.IntRange(min=0), default=None,
                     help="Beyond the paper: refine the map with the UNet's self-attention at this query side "
                          "(e.g. 64 for SD at 512 px, 16 for the toy; 0 = off) [off]."),
        click.option("--propagate-product", "propagation_product", is_flag=True, default=False,
                     help="With --propagate: keep the propagated map times the map (the affinity sharpened)."),
        click.option("--flip-tta", is_flag=True, default=False,
                     help="Beyond the paper: average the maps of the image and its mirror (one more UNet pass)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def config_from_options(preset_name: str = "paper", threshold: float | None = None, omega: float | None = None,
                        timesteps: str | None = None, resolutions: str | None = None, seed: int | None = None,
                        no_noise: bool = False, latent: str | None = None, multi_box: bool = False,
                        min_box_area: float | None = None, propagation_side: int | None = None,
                        propagation_product: bool = False, flip_tta: bool = False,
                        base: LocalizeConfig | None = None) -> LocalizeConfig:
    """The LocalizeConfig that the engine options describe."""
    config = base or preset(preset_name)
    return config.replace(
        threshold=threshold, omega=omega, timesteps=_int_tuple(timesteps, "timesteps"),
        resolutions=_int_tuple(resolutions, "resolutions"), seed=seed, latent=latent,
        add_noise=False if no_noise else None, multi_box=True if multi_box else None, min_box_area=min_box_area,
        propagation_side=propagation_side, propagation_product=True if propagation_product else None,
        flip_tta=True if flip_tta else None,
    )


ENGINE_OPTION_NAMES = ("preset_name", "threshold", "omega", "timesteps", "resolutions", "seed", "no_noise",
                       "latent", "multi_box", "min_box_area", "propagation_side", "propagation_product", "flip_tta")


def pop_engine_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the engine options from a command's kwargs and return them."""
    return {name: kwargs.pop(name) for name in ENGINE_OPTION_NAMES if name in kwargs}


DTYPE_HELP = ("Default: bfloat16/float16 on CUDA; on CPU bfloat16 where the CPU runs it natively (AVX512-BF16 or "
              "AMX, about 2x faster than float32), float32 elsewhere; env GENPROMP_CPU_DTYPE overrides the CPU default.")


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --device, --dtype and --batch-size."""
    for option in reversed([
        click.option("--device", default=None, help="torch device (cuda, cuda:1, cpu, mps). Default: best available."),
        click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
                     help=DTYPE_HELP),
        click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
                     help="Images per UNet call."),
    ]):
        func = option(func)
    return func


def speed_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --compile and --channels-last (`speed_from_options` turns them into SpeedOptions)."""
    for option in reversed([
        click.option("--compile", "compile_model", is_flag=True, default=False,
                     help="torch.compile the VAE encoder and the UNet's ResNet/feed-forward blocks (worth it on "
                          "GPUs for long runs; the first batch pays the compilation). Falls back to eager code "
                          "with a warning where compilation is unsupported. Env GENPROMP_COMPILE_BACKEND picks the "
                          "torch.compile backend (default inductor)."),
        click.option("--channels-last", is_flag=True, default=False,
                     help="Run the UNet and VAE in channels-last memory (often faster on GPUs)."),
    ]):
        func = option(func)
    return func


def speed_from_options(compile_model: bool = False, channels_last: bool = False) -> Any:
    """The SpeedOptions of --compile / --channels-last."""
    from genpromp_annotate.engine.acceleration import SpeedOptions

    return SpeedOptions(compile=compile_model, channels_last=channels_last)
