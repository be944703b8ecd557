"""Train the toy Stable Diffusion from scratch on the toy world, resumably, on CPU (or a GPU).

    python bench/train_toy_model.py --out runs/toy            # VAE, then text encoder + UNet
    python bench/train_toy_model.py --out runs/toy --resume   # after an interruption: same run, same numbers
    python bench/train_toy_model.py --out runs/toy --export genpromp_annotate/toy/weights/toy-sd.safetensors

Phase 1 trains the VAE (MSE + a small KL) on rendered scenes, then fixes its latent scaling factor so
latents have unit std, as SD's 0.18215 does for its VAE. Phase 2 trains the text encoder (its token
table frozen: an unseen word is as foreign as any untrained one) and the UNet with ε-prediction.

How the world makes the *word* necessary (and its attention positive on the object):
- scenes hold 1–3 objects of different classes, and a caption names only some of them; unnamed
  objects (the novel class always among them) must be denoised without help, named ones with it;
- two-object captions ("a photo of a circle and a square") make each word's column pick its object;
- from `--absent-word-from` on, a quarter of the captions also name a class the scene does not hold,
  so no pixel, background included, gains from attending to a word whose object is absent;
- with `--generic-word-p`, objects left unnamed are also called "shape", the toy's meta word, so a
  novel class has a word that already means "an object" to start its concept token from (method §2);
- half the time the text encoder's outputs after the last named word (EOS and padding, which under
  causal attention repeat what the caption said) are replaced by those of the empty caption, so the
  class information must be read from the word's own column.

Every `--eval-every` steps the EMA weights are scored on a val split (GT-known Loc over a τ grid, and
the same with a wrong class word, for the toy preset's refined map and the raw 8/16 maps; and the meta
word "shape" on novel-class images); the best checkpoint by the preset's GT-known minus wrong-word (plus
half the meta word's novel GT-known) is kept apart.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genpromp_annotate.engine.prompts import TEMPLATES
from genpromp_annotate.engine.tiny_model import load_clip_tokenizer, write_clip_tokenizer_files
from genpromp_annotate.toy.model import TOY, build_toy_components
from genpromp_annotate.toy.world import ALL_CLASSES, BASE_CLASSES, render_scene, sample_scene, wrong_word

STOP = False


def _on_signal(_signum, _frame):  # finish the step, checkpoint, exit
    global STOP
    STOP = True


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def log_line(out: Path, record: dict) -> None:
    with open(out / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def to_pixels(images) -> torch.Tensor:
    arrays = np.stack([np.asarray(img, dtype=np.float32) for img in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0


def training_scene(rng: random.Random):
    """A scene of 1–3 distinct classes (the novel one included as an unnamed distractor)."""
    n = rng.choices([1, 2, 3], weights=[0.35, 0.45, 0.20])[0]
    return sample_scene(rng, rng.sample(ALL_CLASSES, n))


GENERIC_WORD = "shape"  # the toy's meta word: any object the caption does not name by its class


def _caption(rng: random.Random, words: list[str]) -> str:
    return rng.choice(TEMPLATES).format(" and a ".join(words))


def caption_for(rng: random.Random, classes: list[str], absent_p: float = 0.0,
                generic_p: float = 0.0) -> tuple[str, int]:
    """A caption naming some base-class objects of the scene; returns it and how many words it names.

    With probability `absent_p` one named word is a base class the scene does not hold: nothing may be
    drawn for it, so no pixel, background included, gains from attending to a word whose object is not
    there (this sharpens the maps' polarity: the object bright, the background dark). With probability
    `generic_p`, objects left unnamed (the novel class always among them) are also called "shape": a
    meta word that means "an object", as SD's "bird" does for every CUB species (method §2).
    """
    named_pool = [c for c in classes if c in BASE_CLASSES]
    absent = [c for c in BASE_CLASSES if c not in classes]
    if absent and rng.random() < absent_p:
        named = rng.sample(named_pool, 1) if named_pool and rng.random() < 0.7 else []
        named.append(rng.choice(absent))
    elif not named_pool or rng.random() < 0.10:
        named = []
    else:
        named = rng.sample(named_pool, 2 if len(named_pool) >= 2 and rng.random() < 0.45 else 1)
    if any(c not in named for c in classes) and rng.random() < generic_p:
        named.append(GENERIC_WORD)
    if not named:
        return "", 0
    rng.shuffle(named)
    return _caption(rng, named), len(named)


# ---- phase 1: VAE ----------------------------------------------------------------------------
def train_vae(parts, state, args, out: Path) -> None:
    vae = parts["vae"]
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    if state.get("vae_opt"):
        opt.load_state_dict(state["vae_opt"])
    step = state.get("vae_step", 0)
    rng = random.Random(1000 + step)
    torch.manual_seed(2000 + step)
    start = time.time()
    while step < args.vae_steps and not STOP:
        images = [render_scene(training_scene(rng))[0] for _ in range(args.vae_batch)]
        x = to_pixels(images)
        if rng.random() < 0.5:
            x = x.flip(-1)
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample()).sample
        mse = F.mse_loss(recon, x)
        kl = post.kl().mean() / x[0].numel()
        loss = mse + args.vae_kl * kl
        lr = args.vae_lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.vae_steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 25 == 0 or step == args.vae_steps:
            psnr = 10 * math.log10(4.0 / max(mse.item(), 1e-10))  # pixels span [-1, 1]
            record = {"phase": "vae", "step": step, "mse": mse.item(), "psnr_db": round(psnr, 2), "kl": kl.item(),
                      "s_per_step": (time.time() - start) / 25}
            start = time.time()
            log_line(out, record)
            print(json.dumps(record), flush=True)
        if step % args.checkpoint_every == 0:
            state.update(vae_step=step, vae_opt=opt.state_dict(), vae=vae.state_dict())
            atomic_torch_save(state, out / "ckpt.pt")
    state.update(vae_step=step, vae_opt=opt.state_dict(), vae=vae.state_dict())
    if step >= args.vae_steps and "scaling_factor" not in state:
        with torch.no_grad():
            rng = random.Random(77)
            latents = torch.cat([
                vae.encode(to_pixels([render_scene(training_scene(rng))[0] for _ in range(32)])).latent_dist.mean
                for _ in range(8)])
        state["scaling_factor"] = float(1.0 / latents.std())
        state["vae_opt"] = None
        print(f"vae done: scaling factor {state['scaling_factor']:.4f}", flush=True)
    atomic_torch_save(state, out / "ckpt.pt")


# ---- phase 2: text encoder + UNet ------------------------------------------------------------
def build_pool(vae, size: int, seed: int):
    """`size` training scenes, encoded once: latent mean and std (fp16) and each scene's classes."""
    rng = random.Random(5000 + seed)
    scenes = [training_scene(rng) for _ in range(size)]
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, size, 64):
            x = to_pixels([render_scene(s)[0] for s in scenes[start:start + 64]])
            post = vae.encode(x).latent_dist
            means.append(post.mean.half())
            stds.append(post.std.half())
    return torch.cat(means), torch.cat(stds), [[shape.cls for shape in s.shapes] for s in scenes]


class CaptionEncoder:
    """Tokenises captions once and runs the text encoder with the null-padding swap (see module doc)."""

    def __init__(self, tokenizer, text_encoder):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        if text not in self.cache:
            self.cache[text] = self.tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids
        return self.cache[text]

    def __call__(self, captions: list[str], null_mask: torch.Tensor) -> torch.Tensor:
        ids = torch.tensor([self.ids(c) for c in captions] + [self.ids("")])
        hidden = self.text_encoder(ids).last_hidden_state  # (B + 1, 77, D)
        out, null = hidden[:-1], hidden[-1:]
        eos = (ids[:-1] == self.tokenizer.eos_token_id).int().argmax(dim=1)  # first EOS of each caption
        after = torch.arange(77)[None, :] >= eos[:, None]
        swap = (after & null_mask[:, None])[..., None]
        return torch.where(swap, null.expand_as(out), out)


def ema_update(ema_module, module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema_module.parameters(), module.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)


def evaluate_val(parts, ema_unet, ema_text, tokenizer, val_items, scaling_factor: float,
                 timesteps: tuple[int, ...] = (0, 99), novel_items=()) -> dict:
    """GT-known Loc over the τ grid for (8,16), (16,) and (8,) maps and for the toy preset's refined map
    ("preset": 8+16 with self-attention propagation), with the right and a wrong class word; and how
    often the meta word "shape" boxes the novel class's object (`novel_items`)."""
    from genpromp_annotate.engine.loading import StableDiffusion
    from genpromp_annotate.engine.localizer import Localizer
    from genpromp_annotate.presets import LocalizeConfig
    from genpromp_annotate.toy.evaluate import TAU_GRID, box_ious_over_taus, render_with_gt

    parts["vae"].register_to_config(scaling_factor=scaling_factor)
    model = StableDiffusion(tokenizer, ema_text, parts["vae"], ema_unet, parts["scheduler"],
                            torch.device("cpu"), torch.float32)

    def maps_of(loc, images, words):
        return np.concatenate([loc.compute_maps(images[i:i + 50], words[i:i + 50]).numpy()
                               for i in range(0, len(images), 50)])

    rendered = [render_with_gt(item) for item in val_items]
    images, gts = [image for image, _ in rendered], [gt for _, gt in rendered]
    labels = [item.label for item in val_items]
    wrong = [wrong_word(label) for label in labels]
    result = {}
    configs = {"r" + "+".join(map(str, r)): LocalizeConfig(image_size=64, resolutions=r, timesteps=timesteps,
                                                          preset="toy-val") for r in ((8, 16), (16,), (8,))}
    configs["preset"] = configs["r8+16"].replace(propagation_side=16, propagation_product=True)
    for key, config in configs.items():
        loc = Localizer(model, config)
        right = box_ious_over_taus(maps_of(loc, images, labels), gts)
        bad = box_ious_over_taus(maps_of(loc, images, wrong), gts)
        acc, acc_wrong = (right >= 0.5).mean(axis=0), (bad >= 0.5).mean(axis=0)
        best = int(np.argmax(acc))
        result[key] = {"best_tau": TAU_GRID[best], "gt_known": round(float(acc[best]), 4),
                       "wrong_word": round(float(acc_wrong[best]), 4), "mean_iou": round(float(right[:, best].mean()), 4),
                       "gt_known_by_tau": [round(float(a), 3) for a in acc]}
    score = result["preset"]["gt_known"] - result["preset"]["wrong_word"]
    if novel_items:
        rendered = [render_with_gt(item) for item in novel_items]
        ious = box_ious_over_taus(maps_of(Localizer(model, configs["preset"]), [im for im, _ in rendered],
                                          [GENERIC_WORD] * len(rendered)), [gt for _, gt in rendered])
        result["meta_word_on_novel"] = round(float((ious >= 0.5).mean(axis=0).max()), 4)
        score += 0.5 * result["meta_word_on_novel"]
    result["score"] = round(score, 4)  # preset GT-known − wrong word (+ half the meta word's novel GT-known)
    return result


def train_unet(parts, state, args, out: Path, should_stop) -> None:
    from genpromp_annotate.toy.world import split_images

    tokenizer = load_clip_tokenizer(write_clip_tokenizer_files(out / "tokenizer"))
    vae, unet, text = parts["vae"], parts["unet"], parts["text_encoder"]
    vae.requires_grad_(False)
    scheduler = parts["scheduler"]
    text.get_input_embeddings().weight.requires_grad_(False)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text).requires_grad_(False)
    params = [p for p in list(unet.parameters()) + list(text.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    step = state.get("unet_step", 0)
    if "unet" in state:
        unet.load_state_dict(state["unet"])
        text.load_state_dict(state["text"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text.load_state_dict(state["ema_text"])
        if state.get("unet_opt"):
            opt.load_state_dict(state["unet_opt"])
    sf = state["scaling_factor"]
    t0 = time.time()
    means, stds, pool_classes = build_pool(vae, args.pool, args.seed)
    print(f"pool of {len(pool_classes)} scenes encoded in {time.time() - t0:.0f}s", flush=True)
    val_items = [it for it in split_images("val", args.eval_images * 6 // 5, seed=args.seed) if it.label in BASE_CLASSES]
    novel_items = split_images("val", args.eval_images // 3, seed=args.seed, novel=True) if args.generic_word_p else []
    encoder = CaptionEncoder(tokenizer, text)
    alphas = scheduler.alphas_cumprod

    def checkpoint() -> None:
        state.update(unet_step=step, unet=unet.state_dict(), text=text.state_dict(), ema_unet=ema_unet.state_dict(),
                     ema_text=ema_text.state_dict(), unet_opt=opt.state_dict())
        atomic_torch_save(state, out / "ckpt.pt")

    def validate() -> None:
        val = evaluate_val(parts, ema_unet, ema_text, tokenizer, val_items, sf, tuple(args.eval_timesteps), novel_items)
        record = {"phase": "val", "step": step, **val}
        log_line(out, record)
        print(json.dumps(record), flush=True)
        best_path = out / "best.pt"
        previous = torch.load(best_path, weights_only=False)["val"]["score"] if best_path.exists() else -1.0
        if val["score"] > previous:
            atomic_torch_save({"unet_step": step, "vae": vae.state_dict(), "scaling_factor": sf,
                               "ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(),
                               "val": val, "init_from": state.get("init_from")}, best_path)

    if step == 0 and state.get("init_from"):
        validate()  # the starting point, scored the same way, so a fine-tune that only hurts keeps it
    losses: list[float] = []
    start = time.time()
    while step < args.unet_steps and not should_stop():
        # Every draw of a step comes from its own seed: a resumed run repeats the same batches.
        rng = random.Random(args.seed * 7919 + step)
        gen = torch.Generator().manual_seed(args.seed * 7919 + step)
        index = torch.randint(0, len(pool_classes), (args.batch,), generator=gen)
        absent_p = args.absent_word_p if step >= args.absent_word_from else 0.0
        captions = [caption_for(rng, pool_classes[i], absent_p, args.generic_word_p)[0] for i in index.tolist()]
        null_mask = torch.rand(args.batch, generator=gen) < args.null_pad_p
        latents = (means[index].float() + stds[index].float() * torch.randn(means[index].shape, generator=gen)) * sf
        noise = torch.randn(latents.shape, generator=gen)
        wide = torch.randint(0, 1000, (args.batch,), generator=gen)
        mid = torch.randint(100, 700, (args.batch,), generator=gen)
        t = torch.where(torch.rand(args.batch, generator=gen) < 0.5, wide, mid)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        context = encoder(captions, null_mask)
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16):
            pred = unet(noisy, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred.float(), noise)
        warm = min(1.0, (step + 1) / 300)
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, args.unet_steps) / args.unet_steps))
        for group in opt.param_groups:
            group["lr"] = args.lr * warm * cosine
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text, decay)
        losses.append(loss.item())
        if step % 50 == 0:
            record = {"phase": "unet", "step": step, "loss": round(float(np.mean(losses)), 5),
                      "lr": opt.param_groups[0]["lr"], "s_per_step": round((time.time() - start) / 50, 3)}
            losses, start = [], time.time()
            log_line(out, record)
            print(json.dumps(record), flush=True)
        if step % args.checkpoint_every == 0:
            checkpoint()
        if step % args.eval_every == 0 or step == args.unet_steps:
            validate()
            start = time.time()
    checkpoint()


def init_from_packed(parts, state: dict, path: Path) -> None:
    """Load a packed toy-weights file into the parts and mark the VAE phase done (its scaling factor kept)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("meta", "{}"))
        vae_config = json.loads(handle.metadata()["vae_config"])
        names = list(handle.keys())  # safe_open is not iterable
        for name in ("vae", "unet", "text_encoder"):
            prefix = name + "."
            weights = {k[len(prefix):]: handle.get_tensor(k).float() for k in names if k.startswith(prefix)}
            parts[name].load_state_dict(weights)
    state.update(vae_step=10**9, vae=parts["vae"].state_dict(), scaling_factor=float(vae_config["scaling_factor"]),
                 vae_opt=None, unet_step=0, unet=parts["unet"].state_dict(), text=parts["text_encoder"].state_dict(),
                 ema_unet=parts["unet"].state_dict(), ema_text=parts["text_encoder"].state_dict(), unet_opt=None,
                 init_from={"path": str(path), "meta": meta})
    print(f"phase 2 starts from {path} (its step {meta.get('step')})", flush=True)


def choose_bf16(precision: str, device: str) -> bool:
    from genpromp_annotate.engine.cpu import cpu_has_fast_bf16

    if precision == "auto":
        return False
    if precision == "bf16" and device == "cpu" and not cpu_has_fast_bf16():
        sys.exit("--precision bf16: this CPU has neither AVX512-BF16 nor AMX; bf16 would run many times slower")
    return precision == "bf16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--phase", choices=["vae", "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--vae-kl", type=float, default=1e-6)
    parser.add_argument("--unet-steps", type=int, default=7000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pool", type=int, default=24000, help="training scenes encoded once (latent mean/std)")
    parser.add_argument("--null-pad-p", type=float, default=0.5)
    parser.add_argument("--absent-word-p", type=float, default=0.25,
                        help="share of captions that also name a base class the scene does not hold")
    parser.add_argument("--absent-word-from", type=int, default=0,
                        help="UNet step from which --absent-word-p applies (the shipped run added it at step 2401)")
    parser.add_argument("--generic-word-p", type=float, default=0.3,
                        help="share of captions that also call the scene's unnamed objects 'shape' (the meta word)")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-images", type=int, default=150)
    parser.add_argument("--eval-timesteps", type=int, nargs="+", default=[300, 500],
                        help="timesteps of the val maps (the toy preset's; the shipped run used 0 99)")
    parser.add_argument("--init-from", type=Path,
                        help="start phase 2 from a packed toy-weights file (e.g. the shipped one) instead of "
                             "from scratch: its VAE and scaling factor are kept, the step count restarts at 0")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--device", choices=["cpu"], default="cpu",
                        help="the script trains on CPU only (no GPU was available to test a GPU path)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="UNet autocast: auto = fp32 on CPU (at the toy's size bf16 measured "
                             "0.94 vs 0.79 s/step fp32 even on an AVX512-BF16 CPU); bf16 is refused on CPUs without it")
    parser.add_argument("--export", type=Path, help="write the best checkpoint's fp16 weights here and exit")
    parser.add_argument("--export-from", choices=["best", "last"], default="best",
                        help="the checkpoint --export takes: best on val (GT-known minus wrong word) or the last")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    args.bf16 = choose_bf16(args.precision, args.device)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    parts = build_toy_components(TOY, seed=args.seed)
    state: dict = {"arch": TOY.as_dict(), "args": vars(args) | {"out": str(out), "export": None}}
    ckpt = out / "ckpt.pt"
    if ckpt.exists():
        if not args.resume and not args.export:
            sys.exit(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
        state = torch.load(ckpt, weights_only=False)
        parts["vae"].load_state_dict(state["vae"])
        print(f"resumed: vae step {state.get('vae_step', 0)}, unet step {state.get('unet_step', 0)}", flush=True)

    if args.init_from and "unet_step" not in state:
        init_from_packed(parts, state, args.init_from)
        atomic_torch_save(state, ckpt)

    if args.export:
        from genpromp_annotate.toy.weights import pack_toy_weights
        best = torch.load(out / ("best.pt" if args.export_from == "best" else "ckpt.pt"), weights_only=False)
        best.setdefault("val", None)
        parts["vae"].load_state_dict(best["vae"])
        parts["vae"].register_to_config(scaling_factor=best["scaling_factor"])
        parts["unet"].load_state_dict(best["ema_unet"])
        parts["text_encoder"].load_state_dict(best["ema_text"])
        pack_toy_weights(parts, args.export, meta={"step": best["unet_step"], "val": best.get("val")})
        print(f"wrote {args.export} ({args.export.stat().st_size / 1e6:.1f} MB) from step {best['unet_step']}")
        return

    if state.get("vae_step", 0) < args.vae_steps or "scaling_factor" not in state:
        train_vae(parts, state, args, out)
    if STOP or args.phase == "vae":
        return
    train_unet(parts, state, args, out, lambda: STOP)


if __name__ == "__main__":
    main()
