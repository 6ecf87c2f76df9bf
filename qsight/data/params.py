"""Parameters of the dataset components (pure pydantic: importing this is cheap)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from registry import Params

#: The five DR grades of the synthetic set (International Clinical DR scale).
DR_GRADE_NAMES: tuple[str, ...] = ("no DR", "mild", "moderate", "severe", "proliferative")
#: APTOS 2019 training-set class frequencies (rounded), the synthetic default.
APTOS_BALANCE: tuple[float, ...] = (0.49, 0.10, 0.27, 0.05, 0.08)

OnBadImage = Literal["error", "skip"]
ImageCheck = Literal["none", "header", "decode"]
Duplicates = Literal["error", "first"]
#: Classes of the ``csv`` dataset's integer labels when neither ``class_names`` nor ``num_classes`` says.
DR_GRADES = 5


class AugmentParams(Params):
    """Training augmentation (fundus-safe); evaluation never augments."""

    enabled: bool = Field(True, description="apply training augmentation at all")
    hflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip (left/right eye)")
    vflip: float = Field(0.0, ge=0.0, le=1.0, description="probability of a vertical flip")
    rotation: float = Field(15.0, ge=0.0, le=180.0, description="max rotation in degrees (uniform ±)")
    geometric_p: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="probability of the resampling steps (crop, rotation); the rest keep eval sharpness",
    )
    crop_scale: tuple[float, float] = Field(
        (0.85, 1.0), description="random resized crop: area fraction range (1, 1 disables)"
    )
    crop_ratio: tuple[float, float] = Field((0.9, 1.1), description="random resized crop: aspect ratio range")
    brightness: float = Field(0.2, ge=0.0, le=2.0, description="colour jitter: brightness strength")
    contrast: float = Field(0.2, ge=0.0, le=2.0, description="colour jitter: contrast strength")
    saturation: float = Field(0.1, ge=0.0, le=2.0, description="colour jitter: saturation strength")
    hue: float = Field(0.0, ge=0.0, le=0.5, description="colour jitter: hue strength")

    @model_validator(mode="after")
    def _ranges(self) -> AugmentParams:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError("crop_scale must satisfy 0 < low <= high <= 1")
        rlo, rhi = self.crop_ratio
        if not 0.0 < rlo <= rhi:
            raise ValueError("crop_ratio must satisfy 0 < low <= high")
        return self


class LoaderParams(Params):
    """Parameters every dataset shares."""

    image_size: int = Field(128, ge=16, le=2048, description="model input size in pixels (square)")
    augment: AugmentParams = Field(default_factory=AugmentParams, description="training augmentation")
    weighted_sampler: bool = Field(False, description="draw training batches with class-balancing weights")


class SyntheticFundusParams(LoaderParams):
    """The embedded synthetic fundus set: seeded, generated once and cached on disk."""

    train_size: int = Field(1500, ge=1, le=200_000, description="training images")
    val_size: int = Field(400, ge=1, le=100_000, description="validation images")
    test_size: int = Field(
        0, ge=0, le=100_000, description="held-out test images (own seed stream; 0: no test split)"
    )
    grades: tuple[int, ...] = Field(
        (0, 1, 2, 3, 4), min_length=2, max_length=5, description="DR grades (0-4) to include, one class each"
    )
    class_balance: tuple[float, ...] | None = Field(
        None, description="class frequencies, one per grade; none: APTOS-like (0.49/0.10/0.27/0.05/0.08)"
    )
    difficulty: float = Field(
        1.0, ge=0.0, le=3.0, description="nuisance strength: blur, noise, exposure, rotation, distractors"
    )
    seed: int = Field(0, ge=0, le=2**31, description="offset added to the experiment seed")
    workers: int = Field(0, ge=0, le=64, description="processes generating images (0: automatic); same output")

    @model_validator(mode="after")
    def _grades_and_balance(self) -> SyntheticFundusParams:
        if len(set(self.grades)) != len(self.grades) or any(not 0 <= g <= 4 for g in self.grades):
            raise ValueError("grades must be distinct integers in 0..4")
        if list(self.grades) != sorted(self.grades):
            raise ValueError("grades must be sorted")
        if self.class_balance is not None:
            if len(self.class_balance) != len(self.grades):
                raise ValueError(f"class_balance needs {len(self.grades)} values, one per grade")
            if any(p < 0 for p in self.class_balance) or sum(self.class_balance) <= 0:
                raise ValueError("class_balance values must be >= 0 with a positive sum")
        return self

    def balance(self) -> tuple[float, ...]:
        """Normalised class frequencies (APTOS-like over the chosen grades when unset)."""
        raw = self.class_balance or tuple(APTOS_BALANCE[g] for g in self.grades)
        total = sum(raw)
        return tuple(p / total for p in raw)


class FileDatasetParams(LoaderParams):
    """Parameters of datasets read from image files."""

    root: str = Field(min_length=1, description="dataset folder")
    class_names: tuple[str, ...] | None = Field(
        None, min_length=2, description="class names in label order; none: taken from the data"
    )
    val_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="stratified validation share (when no explicit validation set)"
    )
    test_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="stratified test share (when no explicit test set); 0: no test split"
    )
    split_seed: int = Field(0, ge=0, description="offset added to the experiment seed for the split")
    on_bad_image: OnBadImage = Field(
        "error",
        description="'error': stop (exit 2); 'skip': skip and count (also images found bad only when loaded)",
    )
    image_check: ImageCheck = Field(
        "header", description="check images when the bundle is built: none, header (cheap) or decode (full)"
    )
    duplicates: Duplicates = Field(
        "error",
        description="an image file listed twice: 'error' (exit 2) or 'first' (keep the first, count the others)",
    )
    resize: Literal["center-crop", "stretch"] = Field(
        "center-crop", description="fit to a square: resize the short side and crop, or stretch"
    )

    @model_validator(mode="after")
    def _fractions(self) -> FileDatasetParams:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self


class CsvParams(FileDatasetParams):
    """An image folder plus a CSV of labels (APTOS 2019 layout by default, EyePACS by columns)."""

    csv: str = Field("train.csv", min_length=1, description="labels CSV, relative to root")
    image_dir: str = Field("train_images", description="image folder, relative to root")
    id_column: str = Field("id_code", min_length=1, description="column naming the image (EyePACS: image)")
    label_column: str = Field("diagnosis", min_length=1, description="label column (EyePACS: level)")
    extension: str = Field(".png", description="appended to the id to form the file name (EyePACS: .jpeg)")
    val_csv: str | None = Field(None, description="explicit validation CSV, relative to root")
    val_image_dir: str | None = Field(None, description="validation image folder (default: image_dir)")
    num_classes: int | None = Field(
        None,
        ge=2,
        le=10_000,
        description="integer labels are classes 0..n-1; none: class_names decide, else 5 (the DR grades 0-4)",
    )

    @model_validator(mode="after")
    def _names_match_count(self) -> CsvParams:
        names, n = self.class_names, self.num_classes
        if names is not None and n is not None and len(names) != n:
            raise ValueError(f"class_names has {len(names)} names but num_classes is {n}")
        return self
    test_csv: str | None = Field(None, description="explicit test CSV, relative to root")
    test_image_dir: str | None = Field(None, description="test image folder (default: image_dir)")
    group_column: str | None = Field(
        None, min_length=1, description="column of a group id (e.g. patient): no group on two sides of a split"
    )


class ImageFolderParams(FileDatasetParams):
    """One sub-folder per class; class names from the folder names, sorted."""

    classes: tuple[str, ...] | None = Field(
        None, min_length=2, description="explicit class folders in label order; none: all sub-folders, sorted"
    )
    val_dir: str | None = Field(None, description="explicit validation folder (same layout), relative to root")
    test_dir: str | None = Field(None, description="explicit test folder (same layout), relative to root")
    extensions: tuple[str, ...] = Field(
        (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"), min_length=1, description="image file suffixes"
    )

    @model_validator(mode="after")
    def _no_names_with_classes(self) -> ImageFolderParams:
        names, classes = self.class_names, self.classes
        if names is not None and classes is not None and len(classes) != len(names):
            raise ValueError("class_names must have one name per entry of classes")
        return self
