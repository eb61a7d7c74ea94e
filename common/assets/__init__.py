"""Files shipped with splitinfer: the bundled model repository and the real demo photos.

The model repository layout (also what `splitinfer serve --models DIR` reads):
`DIR/<model_id>/model.onnx` plus `DIR/<model_id>/model.json` (`{"family": "...", ...}`).
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
MODELS_DIR = ASSETS_DIR / "models"
IMAGES_DIR = ASSETS_DIR / "images"
DEFAULT_MODEL_ID = "nanodet"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def default_model_path() -> Path:
    return MODELS_DIR / DEFAULT_MODEL_ID / "model.onnx"


def bundled_images() -> list[Path]:
    return sorted(p for p in IMAGES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
