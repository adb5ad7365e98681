"""Several training seeds of one recipe (`edgecifar train --seeds N`), and what they say about a model.

One training run is one draw: the same recipe with another seed lands a few tenths of a point higher or lower
(the pipeline's own retrained airnet_m-kd scored 0.43 points below the reference run). A claim about a model or a
recipe, not about one file, therefore rests on several seeds: the mean test accuracy with its standard deviation
and the individual runs, and between two models the difference of the means with Welch's interval
(edgecifar.stats.welch_comparison; Welch 1947), beside the paired test of any two of their files on the same
images (`edgecifar compare`).

Runs go to <out>-s<seed> (seeds cfg.seed, cfg.seed + 1, ...); the summary to <out>-seeds.json. A run folder
that already holds a finished run of this recipe and seed is kept, not trained again, so an interrupted series
continues where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import CheckpointError, UsageError
from .records import RunConfig
from .runs import CONFIG, METRICS

Log = Callable[[str], None]
KIND = "edgecifar seeds"  # the summary file's "kind"
# what may differ between the runs of one recipe: where they went and how they were run, not what was trained
NOT_RECIPE = {"seed", "out", "resume", "device", "cache_dir"}


def seed_dirs(out: Path | str, seeds: Sequence[int]) -> list[Path]:
    """<out>-s<seed> for each seed."""
    out = Path(out)
    return [out.with_name(f"{out.name}-s{s}") for s in seeds]


def summary_path(out: Path | str) -> Path:
    out = Path(out)
    return out.with_name(f"{out.name}-seeds.json")


def train_seeds(cfg: Any, count: int, show_progress: bool = False, log: Log = print) -> dict[str, Any]:
    """Train `count` seeds of the recipe `cfg` (an edgecifar.train.TrainConfig; cfg.seed is the first seed) into
    <out>-s<seed> (out: cfg.out, default runs/<model>) and write the summary (summarize()) to <out>-seeds.json.
    Returns the summary. UsageError for count < 1 or with --resume (each seed run is resumed by running this
    again); whatever train() raises otherwise."""
    from .train import train

    if count < 1:
        raise UsageError(f"--seeds takes a number of seeds (1 or more), got {count}")
    if cfg.resume:
        raise UsageError("--seeds with --resume: run the same --seeds command again; finished seeds are kept")
    out = Path(cfg.out) if cfg.out else Path("runs") / cfg.model
    seeds = [cfg.seed + k for k in range(count)]
    for seed, run_dir in zip(seeds, seed_dirs(out, seeds), strict=True):
        one = replace(cfg, seed=seed, out=str(run_dir))
        if _finished(run_dir, one):
            log(f"seed {seed}: {run_dir} already holds this recipe's finished run; kept")
            continue
        log(f"seed {seed} of {seeds[0]}..{seeds[-1]}: training into {run_dir}")
        train(one, show_progress=show_progress, log=log)
    summary = summarize(seed_dirs(out, seeds))
    path = summary_path(out)
    from .utils import write_json

    write_json(path, summary)
    log(f"{summary['model']} over {_seeds(summary['n'])}: {summary_text(summary)}; summary in {path}")
    return summary


def _finished(run_dir: Path, cfg: Any) -> bool:
    """Whether run_dir holds a finished run of this model and seed (its recipe is checked by summarize())."""
    try:
        config = json.loads((run_dir / CONFIG).read_text())
        metrics = json.loads((run_dir / METRICS).read_text())
    except (OSError, ValueError):
        return False
    train = config.get("train") or {}
    return (train.get("model"), train.get("seed")) == (cfg.model, cfg.seed) and isinstance(
        metrics.get("test_acc"), (int, float)
    )


def recipe_of(config: RunConfig) -> dict[str, Any]:
    """The recipe a run's config.json records, in today's terms, so that a run made before an option existed
    compares with one made after: an option the older run did not record takes TrainConfig's default (each was
    added with the earlier behaviour as its default); the evaluation schedule (eval_every) changes no weight and
    is left out; the sizes are resolved (input_size None: the data's or the model's size; img_size None: the
    input's side)."""
    from dataclasses import MISSING, fields

    from .train_config import TrainConfig

    train = config.train or {}
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    recipe = {k: v for k, v in {**defaults, **train}.items() if k not in NOT_RECIPE | {"eval_every"}}
    side = config.model.img_size
    size = recipe.get("input_size") or (config.data or {}).get("input_size") or ([side, side] if side else None)
    recipe["input_size"] = list(size) if size else None
    recipe["img_size"] = recipe.get("img_size") or (max(size) if size else None)
    return recipe


def summarize(run_dirs: Sequence[Path | str]) -> dict[str, Any]:
    """Per-model figures over training runs of one recipe: {"kind", "model", "recipe", "runs": [{"seed", "run",
    "test_acc"}], "n", "mean", "std" (sample standard deviation, ddof 1; null for one run), "min", "max",
    "test_images"}; accuracies are fractions. UsageError when a folder holds no finished run, or the runs are not
    of one model and recipe (apart from seed and output folder)."""
    runs, recipes, images = [], [], set()
    for run_dir in map(Path, run_dirs):
        try:
            config = RunConfig.from_json(json.loads((run_dir / CONFIG).read_text()))
            acc = json.loads((run_dir / METRICS).read_text())["test_acc"]
        except (OSError, ValueError, KeyError, TypeError, CheckpointError):
            raise UsageError(f"{run_dir} holds no finished run (config.json and metrics.json with test_acc)") from None
        train = config.train or {}
        recipes.append(recipe_of(config))
        images.add((config.data or {}).get("test"))
        runs.append({"seed": train.get("seed"), "run": str(run_dir), "test_acc": float(acc)})
    if not runs:
        raise UsageError("no runs to summarize")
    if any(r != recipes[0] for r in recipes[1:]):
        differ = sorted({k for r in recipes[1:] for k in set(r) | set(recipes[0]) if r.get(k) != recipes[0].get(k)})
        raise UsageError(f"these runs are not one recipe: they differ in {', '.join(differ)}")
    accs = np.array([r["test_acc"] for r in runs])
    return {
        "kind": KIND,
        "model": recipes[0].get("model"),
        "recipe": recipes[0],
        "runs": runs,
        "n": len(runs),
        "mean": float(accs.mean()),
        "std": float(accs.std(ddof=1)) if len(accs) > 1 else None,
        "min": float(accs.min()),
        "max": float(accs.max()),
        "test_images": images.pop() if len(images) == 1 else None,
    }


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def summary_text(summary: dict[str, Any]) -> str:
    """ "mean 90.05 % (sd 0.21, n 3: 89.77, 90.20, 90.18)"."""
    sd = f"sd {100 * summary['std']:.2f}" if summary.get("std") is not None else "sd n/a"
    each = ", ".join(f"{100 * r['test_acc']:.2f}" for r in summary["runs"])
    return f"mean {100 * summary['mean']:.2f} % ({sd}, n {summary['n']}: {each})"


def load_group(spec: str) -> dict[str, Any]:
    """A group of seed runs from the command line: a summary file (<out>-seeds.json) or run folders separated by
    commas. UsageError for anything else."""
    path = Path(spec)
    if "," not in spec and path.suffix == ".json":
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read the seed summary {spec}: {e}") from None
        if not isinstance(found, dict) or found.get("kind") != KIND:
            raise UsageError(f"{spec} is not a seed summary (made by `edgecifar train --seeds N`)")
        return (
            summarize([r["run"] for r in found["runs"]])
            if all(Path(r["run"]).is_dir() for r in found["runs"])
            else found
        )
    return summarize([p.strip() for p in spec.split(",") if p.strip()])


def is_group(spec: str) -> bool:
    """Whether a `compare` operand names seed runs (a seed summary, or comma-separated run folders)."""
    if "," in spec:
        return True
    path = Path(spec)
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def compare_seeds(a: dict[str, Any], b: dict[str, Any], alpha: float = 0.05) -> dict[str, Any]:
    """Two models over their seeds: the difference of the mean test accuracies with Welch's 95 % interval and
    p-value (stats.welch_comparison). Returns {"a", "b" (summaries), "comparison" (stats.WelchComparison),
    "lines"}. UsageError with fewer than 2 runs a side, or runs counted on different numbers of test images."""
    from .stats import welch_comparison

    if a.get("test_images") != b.get("test_images"):
        raise UsageError(
            f"the two groups were tested on different test sets ({a.get('test_images')} and "
            f"{b.get('test_images')} images)"
        )
    try:
        found = welch_comparison([r["test_acc"] for r in a["runs"]], [r["test_acc"] for r in b["runs"]])
    except ValueError as e:
        raise UsageError(str(e)) from None
    low, high = (100 * x for x in found.interval)
    verdict = (
        f"different at alpha {alpha:g}: {'A' if found.difference > 0 else 'B'} is more accurate over seeds"
        if found.p_value < alpha
        else f"not significantly different over seeds at alpha {alpha:g}"
    )
    lines = [
        f"A: {a['model']} over {_seeds(a['n'])}: {summary_text(a)}",
        f"B: {b['model']} over {_seeds(b['n'])}: {summary_text(b)}",
        f"A - B: {100 * found.difference:+.2f} points, Welch 95 % interval [{low:+.2f}, {high:+.2f}] points "
        f"(df {found.df:.1f}), p = {found.p_value:.3g}",
        verdict,
    ]
    return {"a": a, "b": b, "comparison": found, "lines": lines}
