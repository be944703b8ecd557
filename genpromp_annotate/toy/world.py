"""The toy world: weakly labelled images of coloured shapes on a quiet background, with GT boxes.

A scene holds 1–2 shapes of different classes that never overlap; its weak label is one of them, and its
GT is every object of that label's class. Multi-instance splits (`multi_instance=True`) hold 2–3 objects
of the label's class, and half the time one distractor of another class. Everything is drawn from one
seed, so a split is a pure function of (split, index, seed): the same call always writes the same bytes.

Each class has its own hue (jittered per object) and outline, so a small diffusion model can learn to
render it; the class *word* is what tells the model which shape and colour a noisy blob is meant to be.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BASE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
# Held out of base training as a *named* class: its objects appear there only as unnamed distractors,
# so the base model can render it but has never been told its word (the paper's birds vs CUB names).
NOVEL_CLASSES: tuple[str, ...] = ("heart",)
ALL_CLASSES: tuple[str, ...] = BASE_CLASSES + NOVEL_CLASSES

CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "circle": (215, 45, 45),
    "square": (45, 85, 215),
    "triangle": (35, 165, 60),
    "star": (225, 195, 30),
    "cross": (190, 55, 195),
    "heart": (240, 125, 25),
}


def wrong_word(label: str) -> str:
    """The control word for a base-class label: the next base class (a word the model knows, the wrong one)."""
    return BASE_CLASSES[(BASE_CLASSES.index(label) + 1) % len(BASE_CLASSES)]


SUPERSAMPLE = 4  # shapes are drawn 4× larger and downsampled: smooth edges, sub-pixel positions
WORLD_SIDE = 64  # the side scenes are laid out on; other output sizes scale the same layout


@dataclass(frozen=True)
class Shape:
    """One object: class, centre and half-size in WORLD_SIDE units, rotation (degrees) and colour."""

    cls: str
    cx: float
    cy: float
    radius: float
    angle: float
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """One image: background grey level and its shapes."""

    background: int
    shapes: tuple[Shape, ...]


def _outline(shape: Shape, scale: float) -> list[tuple[float, float]] | None:
    """The polygon of a shape in output pixels (None for a circle, drawn as an ellipse)."""
    r = shape.radius
    if shape.cls == "circle":
        return None
    if shape.cls == "square":
        pts = [(-r * 0.85, -r * 0.85), (r * 0.85, -r * 0.85), (r * 0.85, r * 0.85), (-r * 0.85, r * 0.85)]
    elif shape.cls == "triangle":
        pts = [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for a in (-90, 30, 150)]
    elif shape.cls == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.42
            a = math.radians(-90 + 36 * k)
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape.cls == "cross":
        a, b = r, r * 0.34
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    elif shape.cls == "heart":
        pts = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((x / 17 * r, (y + 2.5) / 17 * r))
    else:
        raise ValueError(f"unknown shape class {shape.cls!r}")
    cos, sin = math.cos(math.radians(shape.angle)), math.sin(math.radians(shape.angle))
    return [((shape.cx + x * cos - y * sin) * scale, (shape.cy + x * sin + y * cos) * scale) for x, y in pts]


def shape_mask(shape: Shape, width: int, height: int) -> np.ndarray:
    """`(H, W)` float32 coverage in [0, 1] of one shape drawn on a `width × height` image."""
    ss = SUPERSAMPLE
    canvas = Image.new("L", (width * ss, height * ss), 0)
    draw = ImageDraw.Draw(canvas)
    sx, sy = width * ss / WORLD_SIDE, height * ss / WORLD_SIDE
    if shape.cls == "circle":
        draw.ellipse([(shape.cx - shape.radius) * sx, (shape.cy - shape.radius) * sy,
                      (shape.cx + shape.radius) * sx, (shape.cy + shape.radius) * sy], fill=255)
    else:
        outline = _outline(shape, 1.0)
        assert outline is not None
        draw.polygon([(x * sx, y * sy) for x, y in outline], fill=255)
    small = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render_scene(scene: Scene, width: int = WORLD_SIDE, height: int | None = None) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """The RGB image of a scene and every object's `(class, [x0, y0, x1, y1])` box.

    Boxes are in pixels, x1/y1 one past the last covered pixel (a pixel counts when half covered), the
    convention of OpenCV's bounding rectangles that the engine's boxes follow.
    """
    height = height or width
    image = np.full((height, width, 3), float(scene.background), dtype=np.float32)
    objects = []
    for shape in scene.shapes:
        mask = shape_mask(shape, width, height)
        image = image * (1 - mask[..., None]) + np.asarray(shape.colour, np.float32) * mask[..., None]
        ys, xs = np.nonzero(mask >= 0.5)
        if len(xs):
            objects.append((shape.cls, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)), objects


BASE_RADIUS_RANGE = (7.0, 14.0)  # half-sizes of the plain world's objects, in WORLD_SIDE units


def _overlaps(a: Shape, b: Shape, margin: float = 2.0) -> bool:
    return abs(a.cx - b.cx) < a.radius + b.radius + margin and abs(a.cy - b.cy) < a.radius + b.radius + margin


def sample_shape(rng: random.Random, cls: str, radius_range: tuple[float, float] = BASE_RADIUS_RANGE) -> Shape:
    radius = rng.uniform(*radius_range)
    cx = rng.uniform(radius + 1, WORLD_SIDE - radius - 1)
    cy = rng.uniform(radius + 1, WORLD_SIDE - radius - 1)
    angle = rng.uniform(-20, 20) if cls != "circle" else 0.0
    base = CLASS_COLOURS[cls]
    colour = tuple(int(min(255, max(0, c + rng.randint(-18, 18)))) for c in base)
    return Shape(cls, cx, cy, radius, angle, colour)  # type: ignore[arg-type]


def sample_scene(rng: random.Random, classes: Sequence[str], radius_range: tuple[float, float] = BASE_RADIUS_RANGE,
                 background: int | None = None) -> Scene:
    """A scene with one shape per entry of `classes` (repeats give several instances), placed without
    overlap (rejection sampling)."""
    for _ in range(200):
        shapes: list[Shape] = []
        for cls in classes:
            for _ in range(50):
                shape = sample_shape(rng, cls, radius_range)
                if not any(_overlaps(shape, other) for other in shapes):
                    shapes.append(shape)
                    break
        if len(shapes) == len(classes):
            return Scene(background if background is not None else rng.randint(95, 165), tuple(shapes))
    raise RuntimeError(f"could not place {list(classes)} without overlap")


SPLIT_SALT = {"train": 11, "val": 23, "test": 37}
# Multi-instance scenes: 2–3 objects of the label's class. Smaller objects so that three plus a distractor
# fit in 64 px; the lower bound stays the base world's, so no object is smaller than the model was trained on.
MULTI_INSTANCE_COUNTS = (2, 3)
MULTI_RADIUS_RANGE = (7.0, 11.0)
MULTI_SALT = 1000  # its own random stream: the default splits draw exactly what they drew before


@dataclass(frozen=True)
class WorldImage:
    """One weakly labelled image of a split: its id, label, scene and the label's GT boxes."""

    image_id: str  # "<class>/<file>.png", wsolevaluation style
    label: str
    scene: Scene


def split_images(split: str, n_images: int, seed: int = 0, novel: bool = False,
                 two_object_fraction: float = 0.5, multi_instance: bool = False) -> list[WorldImage]:
    """The deterministic image list of a split: labels cycle over the classes (base and novel, or novel only).

    Half the images (by default) hold a second object of another class as a distractor; the label's
    class is always the first shape. With `multi_instance`, the label's class fills the first 2–3
    shapes (radius `MULTI_RADIUS_RANGE`) and the distractor, if any, comes last; the images are
    another random stream and other file names, so they never collide with the plain split's.
    """
    if split not in SPLIT_SALT:
        raise ValueError(f"split must be one of {sorted(SPLIT_SALT)}, got {split!r}")
    labels = NOVEL_CLASSES if novel else ALL_CLASSES
    salt = SPLIT_SALT[split] + (7 if novel else 0) + (MULTI_SALT if multi_instance else 0)
    rng = random.Random(seed * 1_000_003 + salt)
    prefix = split + ("_novel" if novel else "") + ("_multi" if multi_instance else "")
    images = []
    for index in range(n_images):
        label = labels[index % len(labels)]
        # The plain split draws nothing here: its stream must stay what it always was.
        classes = [label] * (rng.choice(MULTI_INSTANCE_COUNTS) if multi_instance else 1)
        if rng.random() < two_object_fraction:
            classes.append(rng.choice([c for c in ALL_CLASSES if c != label]))
        scene = sample_scene(rng, classes, MULTI_RADIUS_RANGE if multi_instance else BASE_RADIUS_RANGE)
        images.append(WorldImage(f"{label}/{prefix}_{seed}_{index:05d}.png", label, scene))
    return images


DATASET_NAME = "TOY"
TOY_PRESET = "toy"


def split_folder_name(split: str, novel: bool, multi_instance: bool = False) -> str:
    """The metadata folder of a split: `test`, `test-novel` for the novel-class images of test,
    `test-multi` for its multi-instance images (`test-novel-multi` for both)."""
    return split + ("-novel" if novel else "") + ("-multi" if multi_instance else "")


def write_split(root: str | Path, split: str, n_images: int, seed: int = 0, novel: bool = False,
                size: tuple[int, int] = (WORLD_SIDE, WORLD_SIDE), multi_instance: bool = False) -> Path:
    """Write one split in the wsolevaluation layout (dataset TOY) under `root`; returns its metadata folder.

    `root/dataset/TOY/<class>/<file>.png` holds the images (an imagefolder tree too),
    `root/metadata/TOY/<split>/` the four metadata files, `root/metadata/TOY/class_names.txt` the class
    names in class-id order and `root/world.json` the base and novel classes and the toy preset's name.
    Calling it again for another split adds that split; the same split is rewritten identically.
    `multi_instance` writes the 2–3-objects-per-label images of `split_images` to `<split>-multi`.
    """
    root = Path(root)
    width, height = size
    images_dir = root / "dataset" / DATASET_NAME
    meta = root / "metadata" / DATASET_NAME / split_folder_name(split, novel, multi_instance)
    meta.mkdir(parents=True, exist_ok=True)
    ids, labels, sizes, boxes = [], [], [], []
    for item in split_images(split, n_images, seed=seed, novel=novel, multi_instance=multi_instance):
        image, objects = render_scene(item.scene, width, height)
        path = images_dir / item.image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        ids.append(item.image_id)
        labels.append(f"{item.image_id},{ALL_CLASSES.index(item.label)}")
        sizes.append(f"{item.image_id},{width},{height}")
        boxes += [f"{item.image_id},{x0},{y0},{x1},{y1}" for cls, (x0, y0, x1, y1) in objects if cls == item.label]
    for name, lines in (("image_ids", ids), ("class_labels", labels), ("image_sizes", sizes), ("localization", boxes)):
        (meta / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (meta.parent / "class_names.txt").write_text("\n".join(ALL_CLASSES) + "\n")
    world = {"base_classes": list(BASE_CLASSES), "novel_classes": list(NOVEL_CLASSES), "preset": TOY_PRESET}
    (root / "world.json").write_text(json.dumps(world, indent=2) + "\n")
    return meta
