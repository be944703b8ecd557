"""The typed ORM of the project store: Project, Category, TrainingRun, Image, Prediction, Annotation,
ModelVersion, StoredScoreCalibration.

Every timestamp is naive UTC (`utc_now()`): SQLite has no time zones and the same rows must compare
equally on PostgreSQL. A change here needs a migration (`alembic revision --autogenerate`), a
`migrations/NOTES.md` entry, and keeps `tests/store/test_schema.py` green.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so that migrations (and batch mode on SQLite) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Allowed values of the string "enum" columns (plain strings: no database enum types to migrate).
IMAGE_STATUSES = ("pending", "done", "error")
TRAINING_STATES = ("untrained", "training", "trained", "failed")
RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled")
PREDICTION_SOURCES = ("model", "human")


def utc_now() -> datetime:
    """Naive UTC now (the store's one time convention)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The weak label(s) of an image: usually one category, several allowed.
image_labels = Table(
    "image_labels",
    Base.metadata,
    Column("image_id", ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("category_id", ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True),
)


class Project(Base):
    """A dataset being annotated: its base model and the inference settings every box is made with."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    base_model: Mapped[str] = mapped_column(Text)  # diffusers folder, single file, or hub id
    # LocalizeConfig fields that differ from the preset (omega, threshold, resolutions, preset, ...).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A finetuned UNet (diffusers `unet` folder) selected for inference; None = the base model's UNet.
    unet_path: Mapped[str | None] = mapped_column(Text, default=None)
    unet_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)

    categories: Mapped[list[Category]] = relationship(back_populates="project", cascade="all, delete-orphan",
                                                      order_by="Category.id")
    runs: Mapped[list[TrainingRun]] = relationship(back_populates="project", cascade="all, delete-orphan",
                                                   order_by="TrainingRun.id")

    def __repr__(self) -> str:
        return f"Project(id={self.id}, name={self.name!r}, base_model={self.base_model!r})"


class Category(Base):
    """One weak label: display name, its meta token, its concept token and learned embedding."""

    __tablename__ = "categories"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(500))  # e.g. "goldfish, Carassius auratus"
    meta_token: Mapped[str] = mapped_column(String(100))  # method §2, computed with the base model's tokenizer
    meta_token_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # True when the meta word was given (e.g. `bird` for every CUB class), not found by the method §2 rule
    meta_forced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    concept_token: Mapped[str] = mapped_column(String(200))  # e.g. "<goldfish>"
    # The learned input embedding of the concept token: raw bytes + dtype name + shape (e.g. [768]).
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    embedding_dtype: Mapped[str | None] = mapped_column(String(20), default=None)
    embedding_shape: Mapped[list[int] | None] = mapped_column(JSON, default=None)
    training_state: Mapped[str] = mapped_column(String(20), default="untrained")  # TRAINING_STATES
    trained_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)

    project: Mapped[Project] = relationship(back_populates="categories")

    def __repr__(self) -> str:
        return f"Category(id={self.id}, name={self.name!r}, meta_token={self.meta_token!r})"


class TrainingRun(Base):
    """A concept-token or UNet-finetune job: its resolved config, progress, metrics and outcome."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))  # "concept_tokens" | "unet_finetune"
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="queued")  # RUN_STATUSES
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output_path: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)

    project: Mapped[Project] = relationship(back_populates="runs")


class Image(Base):
    """One image file of a project, its weak label(s) and where annotation stands."""

    __tablename__ = "images"
    # Import is idempotent by content: the same bytes are one image, whatever their path.
    __table_args__ = (UniqueConstraint("project_id", "content_hash"), Index("ix_images_project_status",
                                                                            "project_id", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    uri: Mapped[str] = mapped_column(Text)  # absolute path, or file:// (percent-encoded bytes) / http(s) URL
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the file's bytes
    width: Mapped[int | None] = mapped_column(Integer, default=None)  # after EXIF rotation
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    split: Mapped[str | None] = mapped_column(String(40), default=None)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # IMAGE_STATUSES
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # Annotation claims: a worker id ("host:pid:nonce") and when its lease ends (naive UTC).
    claimed_by: Mapped[str | None] = mapped_column(String(200), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)

    categories: Mapped[list[Category]] = relationship(secondary=image_labels, order_by="Category.id")
    predictions: Mapped[list[Prediction]] = relationship(back_populates="image", cascade="all, delete-orphan",
                                                         passive_deletes=True)
    annotations: Mapped[list[Annotation]] = relationship(back_populates="image", cascade="all, delete-orphan",
                                                         passive_deletes=True)

    @property
    def labels(self) -> list[str]:
        return [c.name for c in self.categories]

    def __repr__(self) -> str:
        return f"Image(id={self.id}, uri={self.uri!r}, status={self.status!r})"


class Prediction(Base):
    """One box in original pixels (x2/y2 one past the last pixel), from the model or a human."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_image_version", "image_id", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), index=True)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float, default=None)
    model_version: Mapped[str] = mapped_column(String(100), index=True)  # "gp-…" or e.g. "human"
    source: Mapped[str] = mapped_column(String(20), default="model")  # PREDICTION_SOURCES
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)  # e.g. a Label Studio region id
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)

    image: Mapped[Image] = relationship(back_populates="predictions")
    category: Mapped[Category] = relationship()


class Annotation(Base):
    """An image was annotated with a model version, whether or not a box came out (`boxes` may be 0).

    This row, not the presence of a box, is what makes an image done for a version: an image where no
    pixel survives τ is annotated and has no box in the store, the exports or Label Studio.
    """

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("image_id", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(100), index=True)
    boxes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)

    image: Mapped[Image] = relationship(back_populates="annotations")


class ModelVersion(Base):
    """What a model version string names: its parts, so `status` can show them."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))  # "gp-<digest12>"
    base_model: Mapped[str] = mapped_column(Text)
    tokens_digest: Mapped[str] = mapped_column(String(64))
    unet: Mapped[str] = mapped_column(String(64))  # finetune digest or "base"
    settings_key: Mapped[str] = mapped_column(Text)  # LocalizeConfig.box_settings_key
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class StoredScoreCalibration(Base):
    """How a model version's raw box scores map to P(IoU ≥ 0.5), fitted on human boxes.

    Keyed by the version name (as predictions are), not by a model_versions row: a version served by
    the Label Studio backend need not be recorded there. Fitting again replaces the row.
    """

    __tablename__ = "score_calibrations"
    __table_args__ = (UniqueConstraint("project_id", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(100))
    # evaluation.calibration.ScoreCalibration.as_dict(): format, knots (scores → probabilities), prior
    knots: Mapped[dict[str, Any]] = mapped_column(JSON)
    boxes: Mapped[int] = mapped_column(Integer)  # predicted boxes it was fitted on
    hits: Mapped[int] = mapped_column(Integer)  # of which IoU ≥ 0.5 with a human box of their label
    fitted_from: Mapped[str] = mapped_column(String(40))  # "stored boxes" | "re-calibration maps"
    fitted_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
