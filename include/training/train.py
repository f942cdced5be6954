"""Train a failure classifier on daily data partitions; the Azure ML job's command runs this file.

Runs inside the stack's base image (Debian bookworm: python3, scikit-learn 1.2, pandas, joblib,
matplotlib) and uses nothing else, so the serving image built from the same base image loads the model
with the same library versions.

    python train.py --data <input folder> [--data <input folder> ...] --output <output folder>
                    [--label failure] [--test-size 0.2] [--seed 0] [--min-seconds 0]

It reads every CSV part under each --data folder (one per day of a training window; markers such as
``_SUCCESS`` and ``*_manifest.json`` are not data and are ignored), trains on the numeric feature
columns, evaluates on a held-out split, and writes exactly these files to --output:

    model.joblib            a scikit-learn Pipeline (joblib), loaded by include/serving/score.py
    metrics.json            held-out metrics, row counts, features, label, library versions
    MODEL_CARD.md           what the model is, how it was trained, how it scored
    feature_importance.png  feature importances (matplotlib, Agg backend)

``--min-seconds N`` keeps the job running until N seconds have passed since the script started (it waits
after writing the outputs): a training that takes a known time on the VM, for benchmarks of the
scheduling around it (bench/backfill.py). 0, the default, never waits.

No row, sample or value of the training data is written: the data may not leave the premises, while
the outputs are uploaded to Azure ML. Only aggregate metrics and column names go out.

The file is importable without scikit-learn or pandas (those are imported where they are used), so
input discovery and validation can be unit-tested anywhere.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

OUTPUT_FILES = ("model.joblib", "metrics.json", "MODEL_CARD.md", "feature_importance.png")
# Columns that identify a reading rather than describe the machine: never features.
DEFAULT_ID_COLUMNS = ("device_id", "timestamp")
METRIC_DIGITS = 4


class TrainingInputError(ValueError):
    """The input folder does not hold usable training data. The message names the folder."""


def find_csv_parts(data_dir: Path) -> list[Path]:
    """Every ``*.csv`` file under ``data_dir`` (recursively, sorted). Markers and manifests are skipped."""
    if not data_dir.exists():
        raise TrainingInputError(f"input folder {data_dir} does not exist")
    if not data_dir.is_dir():
        raise TrainingInputError(f"input {data_dir} is not a folder (expected a folder of CSV parts)")
    parts = sorted(p for p in data_dir.rglob("*.csv") if p.is_file())
    if not parts:
        found = sorted(p.name for p in data_dir.rglob("*") if p.is_file())[:10]
        raise TrainingInputError(
            f"input folder {data_dir} has no CSV parts (expected *.csv files); found: {found or 'nothing'}"
        )
    return parts


def check_headers(parts: list[Path], label: str, data_dir: Path) -> list[str]:
    """The common header of all parts; raise when a part's header differs or lacks the label."""
    header: list[str] | None = None
    for part in parts:
        with part.open(newline="", encoding="utf-8") as handle:
            row = next(csv.reader(handle), None)
        if not row:
            # An empty part contributes no rows; count_rows() decides whether anything is left.
            continue
        row = [c.strip() for c in row]
        if header is None:
            header = row
        elif row != header:
            raise TrainingInputError(
                f"CSV part {part} in {data_dir} has columns {row}, expected the same columns as the "
                f"other parts: {header}"
            )
    if header is None:
        raise TrainingInputError(f"input folder {data_dir}: all {len(parts)} CSV parts are empty")
    if label not in header:
        raise TrainingInputError(
            f"input folder {data_dir}: label column {label!r} not found; columns are {header}"
        )
    return header


def count_rows(parts: list[Path]) -> int:
    """Data rows (excluding headers) over all parts, without loading them into memory."""
    total = 0
    for part in parts:
        with part.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            total += sum(1 for row in reader if row)
    return total


def load_frame(parts: list[Path]):
    import pandas as pd

    frames = [pd.read_csv(p) for p in parts if p.stat().st_size > 0]
    frames = [f for f in frames if len(f.columns)]
    return pd.concat(frames, ignore_index=True)


def select_features(frame, label: str, id_columns: tuple[str, ...], data_dir: Path) -> list[str]:
    """Numeric columns other than the label and the identifiers, in file order."""
    import pandas as pd

    features = [
        c for c in frame.columns
        if c != label and c not in id_columns and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    ]
    if not features:
        raise TrainingInputError(
            f"input folder {data_dir}: no numeric feature columns besides label {label!r} and "
            f"identifiers {list(id_columns)}; columns are {list(frame.columns)}"
        )
    return features


def prepare_label(frame, label: str, data_dir: Path):
    """The label as 0/1 integers; rows without a label are dropped."""
    import pandas as pd

    frame = frame[frame[label].notna()]
    values = frame[label]
    if pd.api.types.is_bool_dtype(values):
        values = values.astype(int)
    classes = sorted(pd.unique(values).tolist())
    if len(classes) != 2:
        raise TrainingInputError(
            f"input folder {data_dir}: label {label!r} must have exactly two classes to train a "
            f"failure classifier, found {len(classes)}"
        )
    if set(classes) != {0, 1}:
        raise TrainingInputError(
            f"input folder {data_dir}: label {label!r} must be 0/1 (or true/false); found other values"
        )
    return frame, values.astype(int)


def build_pipeline(seed: int):
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("impute", SimpleImputer(strategy="median")),
        ("model", GradientBoostingClassifier(random_state=seed)),
    ])


def evaluate(pipeline, x_test, y_test) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    predicted = pipeline.predict(x_test)
    scores = pipeline.predict_proba(x_test)[:, 1]
    metrics = {
        "accuracy": accuracy_score(y_test, predicted),
        "f1": f1_score(y_test, predicted, zero_division=0),
        "precision": precision_score(y_test, predicted, zero_division=0),
        "recall": recall_score(y_test, predicted, zero_division=0),
        # ROC AUC needs both classes in the held-out split; None says it could not be measured.
        "roc_auc": roc_auc_score(y_test, scores) if len(set(y_test.tolist())) == 2 else None,
    }
    return {k: (round(float(v), METRIC_DIGITS) if v is not None else None) for k, v in metrics.items()}


def write_importance_png(path: Path, features: list[str], importances: list[float], metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(len(features)), key=lambda i: importances[i])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(features) + 1.8))
    ax.barh([features[i] for i in order], [importances[i] for i in order], color="#2b6cb0")
    ax.set_xlabel("feature importance (impurity decrease)")
    auc = metrics.get("roc_auc")
    ax.set_title(
        f"accuracy {metrics['accuracy']:.3f}   f1 {metrics['f1']:.3f}   "
        f"ROC AUC {auc:.3f}" if auc is not None else
        f"accuracy {metrics['accuracy']:.3f}   f1 {metrics['f1']:.3f}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_card(metrics: dict) -> str:
    importances = metrics["feature_importance"]
    lines = [
        "# Model card: equipment failure classifier",
        "",
        f"Trained {metrics['trained_at']} by `include/training/train.py`.",
        "",
        "## Model",
        "",
        f"- Estimator: `{metrics['model_type']}` in a scikit-learn Pipeline with median imputation.",
        f"- Predicts `{metrics['label']}` (0/1) from the numeric columns: "
        + ", ".join(f"`{f}`" for f in metrics["features"]) + ".",
        "- Identifier columns are never features: " + ", ".join(f"`{c}`" for c in metrics["id_columns"]) + ".",
        f"- Libraries: scikit-learn {metrics['sklearn_version']}, pandas {metrics['pandas_version']}, "
        f"Python {metrics['python_version']}. Load it with the same versions (the serving image uses the "
        "same base image as training).",
        "",
        "## Evaluation",
        "",
        f"Held-out split: {metrics['test_size']:.0%} of rows, stratified, seed {metrics['seed']}. "
        f"{metrics['rows_train']} training rows, {metrics['rows_test']} test rows from "
        f"{metrics['csv_parts']} CSV parts.",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for key in ("accuracy", "roc_auc", "f1", "precision", "recall"):
        value = metrics[key]
        lines.append(f"| {key} | {'n/a' if value is None else f'{value:.4f}'} |")
    lines += [
        f"| positive rate (test) | {metrics['positive_rate_test']:.4f} |",
        "",
        "## Feature importance",
        "",
        "![feature importance](feature_importance.png)",
        "",
        "| feature | importance |",
        "| --- | --- |",
    ]
    for name, value in sorted(importances.items(), key=lambda kv: -kv[1]):
        lines.append(f"| `{name}` | {value:.4f} |")
    lines += [
        "",
        "## Data handling",
        "",
        "Only aggregate metrics and column names leave the training folder. No rows, samples or values of",
        "the training data are written to the outputs.",
        "",
    ]
    return "\n".join(lines)


def train(data_dir: Path | list[Path], output_dir: Path, *, label: str = "failure", test_size: float = 0.2,
          seed: int = 0, id_columns: tuple[str, ...] = DEFAULT_ID_COLUMNS) -> dict:
    """Train on the CSV parts of every folder in ``data_dir`` (one or a list), evaluate and write the
    outputs. Returns the metrics written to metrics.json."""
    if not 0.0 < test_size < 1.0:
        raise TrainingInputError(f"--test-size must be between 0 and 1 (exclusive), got {test_size}")
    folders = list(data_dir) if isinstance(data_dir, (list, tuple)) else [data_dir]
    parts = [part for folder in folders for part in find_csv_parts(folder)]
    # Errors name the folder, or every folder of a window (the functions below use it in messages only).
    data_dir = folders[0] if len(folders) == 1 else ", ".join(str(f) for f in folders)
    check_headers(parts, label, data_dir)
    if count_rows(parts) == 0:
        raise TrainingInputError(f"input folder {data_dir}: {len(parts)} CSV parts hold no data rows")

    import joblib
    import pandas as pd
    import sklearn
    from sklearn.model_selection import train_test_split

    frame = load_frame(parts)
    features = select_features(frame, label, id_columns, data_dir)
    frame, y = prepare_label(frame, label, data_dir)
    x = frame[features].astype("float64")
    if len(x) < 10:
        raise TrainingInputError(f"input folder {data_dir}: {len(x)} labelled rows, need at least 10")
    stratify = y if y.value_counts().min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=stratify
    )

    pipeline = build_pipeline(seed)
    pipeline.fit(x_train, y_train)
    metrics = evaluate(pipeline, x_test, y_test)
    importances = [float(v) for v in pipeline.named_steps["model"].feature_importances_]

    metrics.update({
        "rows_train": int(len(x_train)),
        "rows_test": int(len(x_test)),
        "csv_parts": len(parts),
        "input_folders": len(folders),
        "positive_rate_test": round(float(y_test.mean()), METRIC_DIGITS),
        "features": features,
        "label": label,
        "id_columns": list(id_columns),
        "feature_importance": {f: round(v, METRIC_DIGITS) for f, v in zip(features, importances)},
        "model_type": type(pipeline.named_steps["model"]).__name__,
        "model_file": "model.joblib",
        "test_size": test_size,
        "seed": seed,
        "sklearn_version": sklearn.__version__,
        "pandas_version": pd.__version__,
        "joblib_version": joblib.__version__,
        "python_version": platform.python_version(),
        "trained_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    })

    output_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, output_dir / "model.joblib")
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (output_dir / "MODEL_CARD.md").write_text(model_card(metrics))
    write_importance_png(output_dir / "feature_importance.png", features, importances, metrics)
    return metrics


def hold_until(started: float, min_seconds: float, *, clock=time.monotonic, sleep=time.sleep) -> float:
    """Wait until ``min_seconds`` have passed since ``started`` (a ``clock`` reading). Returns the wait."""
    remaining = started + min_seconds - clock()
    if remaining <= 0:
        return 0.0
    sleep(remaining)
    return remaining


def non_negative_seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the failure classifier on daily data partitions.")
    parser.add_argument("--data", required=True, type=Path, action="append",
                        help="folder with a partition's CSV parts; repeat it for each day of a window")
    parser.add_argument("--output", required=True, type=Path, help="folder for model and model card")
    parser.add_argument("--label", default="failure", help="0/1 label column (default: failure)")
    parser.add_argument("--test-size", type=float, default=0.2, help="held-out fraction (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="split and model seed (default 0)")
    parser.add_argument("--id-columns", default=",".join(DEFAULT_ID_COLUMNS),
                        help="comma-separated identifier columns never used as features")
    parser.add_argument("--min-seconds", type=non_negative_seconds, default=0.0,
                        help="keep running until this many seconds have passed since the start, outputs "
                             "written (a training of known length, for benchmarks; default 0: no wait)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    id_columns = tuple(c.strip() for c in args.id_columns.split(",") if c.strip())
    try:
        metrics = train(args.data, args.output, label=args.label, test_size=args.test_size,
                        seed=args.seed, id_columns=id_columns)
    except TrainingInputError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    summary = {k: metrics[k] for k in ("accuracy", "roc_auc", "f1", "rows_train", "rows_test", "input_folders")}
    print(f"train.py: wrote {', '.join(OUTPUT_FILES)} to {args.output}: {json.dumps(summary)}")
    if args.min_seconds:
        print(f"train.py: --min-seconds {args.min_seconds:g}: running until then", flush=True)
        waited = hold_until(started, args.min_seconds)
        print(f"train.py: waited {waited:.1f} s; {time.monotonic() - started:.1f} s in all")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
