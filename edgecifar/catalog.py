"""The model registry's listing, read without torch: `edgecifar models` and the frontier's families come from here.

Building every registered model to count its parameters and MACs takes seconds per model and a gigabyte (torch's
import alone is most of it), so the figures are computed once, from the live registry, into the committed
`model_catalog.json` beside this file. tests/test_models.py checks that file against the registry; after adding
or changing a registration, regenerate it:

    uv run python -m edgecifar.catalog
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

CATALOG = Path(__file__).with_name("model_catalog.json")
REGENERATE = "uv run python -m edgecifar.catalog"


@dataclass(frozen=True)
class ModelInfo:
    """One registered model as listed: `params` with a 10-class head, `macs` (multiply-accumulates) of one 32x32
    image through its convolutions and linears at its default backbone size `backbone_size` (px; None: the input
    size as it is), `epochs` of its default recipe."""

    name: str
    family: str  # "scratch" or "transfer" (edgecifar.models.Family)
    params: int
    macs: int
    backbone_size: int | None
    epochs: int
    description: str
    pretrained_source: str


def read_catalog(path: Path = CATALOG) -> dict[str, ModelInfo]:
    """The committed listing by model name. Raises ModelError when the file is missing or unreadable."""
    from .errors import ModelError

    try:
        entries = json.loads(path.read_text())["models"]
        return {e["name"]: ModelInfo(**e) for e in entries}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(
            f"model listing {path} is missing or unreadable ({type(e).__name__}); rebuild it with `{REGENERATE}`"
        ) from None


def build_catalog() -> list[ModelInfo]:
    """The listing computed from the live registry: builds every registered model (seconds each)."""
    from .models import list_models, model_summary

    infos = []
    for name in list_models():
        s = model_summary(name)
        infos.append(
            ModelInfo(
                name=name,
                family=s["family"],
                params=s["params"],
                macs=s["macs"],
                backbone_size=s["recipe"]["img_size"],
                epochs=s["recipe"]["epochs"],
                description=s["description"],
                pretrained_source=s["pretrained_source"],
            )
        )
    return infos


def write_catalog(path: Path = CATALOG) -> list[ModelInfo]:
    infos = build_catalog()
    path.write_text(json.dumps({"regenerate": REGENERATE, "models": [asdict(i) for i in infos]}, indent=1) + "\n")
    return infos


if __name__ == "__main__":
    written = write_catalog(Path(sys.argv[1]) if len(sys.argv) > 1 else CATALOG)
    print(f"{len(written)} models listed in {sys.argv[1] if len(sys.argv) > 1 else CATALOG}")
