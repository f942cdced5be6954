"""What identifies a model image: its repository, tags and labels, derived from the model and its data.

Two images with the same identity labels hold the same model, which is what makes builds idempotent
(a tag already holding the same model is not rebuilt) and lets the registry answer "is this model
already pushed?" without Docker.
"""

from __future__ import annotations

import re

from edge_training.exceptions import ContainerImageError

# Same namespace as the base image's own label (org.edge-training.base.version).
LABEL_PREFIX = "org.edge-training."
# Labels that say which model an image holds. Two images with the same values are the same model
# (the build time and the git commit of the scoring app do not change what is served).
IDENTITY_LABELS = ("model.name", "model.version", "data.fingerprint", "job.name")

_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def repository_name(model_name: str, *, prefix: str | None = None) -> str:
    """A registry repository for a model name: lower case, runs of other characters become '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", model_name.strip().lower())
    name = re.sub(r"[._-]{2,}", "-", name).strip("._-")
    parts = [p for p in (prefix or "").strip("/").split("/") if p] + [name]
    for part in parts:
        if not _REPO_COMPONENT.match(part):
            raise ContainerImageError(
                f"repository for model {model_name!r}: component {part!r} is not a valid registry path "
                "component (expected lower-case letters, digits and single . _ - separators)"
            )
    return "/".join(parts)


def fingerprint_tag(fingerprint: str) -> str:
    """``fp-`` plus the first 12 characters of the data fingerprint (an algorithm prefix is dropped)."""
    value = fingerprint.strip().lower()
    if ":" in value:
        value = value.split(":", 1)[1]
    value = re.sub(r"[^a-z0-9]", "", value)[:12]
    if len(value) < 6:
        raise ContainerImageError(
            f"data fingerprint {fingerprint!r}: expected at least 6 alphanumeric characters for the "
            f"fp- tag, found {len(value)}"
        )
    return f"fp-{value}"


def image_tags(model_version: str, data_fingerprint: str) -> list[str]:
    """The tags of a model image: the model version, then the data fingerprint's short form."""
    version = str(model_version).strip()
    if not _TAG.match(version):
        raise ContainerImageError(
            f"model version {model_version!r} is not a valid image tag (expected letters, digits, "
            "'_', '.', '-', at most 128 characters, not starting with '.' or '-')"
        )
    return [version, fingerprint_tag(data_fingerprint)]


def model_labels(*, model_name: str, model_version: str, data_fingerprint: str, job_name: str,
                 partition: str = "", data_days: str = "", git_commit: str = "", created: str = "") -> dict[str, str]:
    """The custom labels of a model image, keyed with LABEL_PREFIX (the Dockerfile sets the same).
    ``data_days``: the days the model learnt from, comma-separated (a training window's days)."""
    return {
        f"{LABEL_PREFIX}model.name": str(model_name),
        f"{LABEL_PREFIX}model.version": str(model_version),
        f"{LABEL_PREFIX}data.fingerprint": str(data_fingerprint),
        f"{LABEL_PREFIX}data.days": str(data_days or ""),
        f"{LABEL_PREFIX}job.name": str(job_name),
        f"{LABEL_PREFIX}partition": str(partition or ""),
        f"{LABEL_PREFIX}git.commit": str(git_commit or "unknown"),
        f"{LABEL_PREFIX}created": str(created),
    }


def image_labels(labels: dict[str, str], *, base_image: str, source: str = "") -> dict[str, str]:
    """Every label of a model image: the model's own (``model_labels``) and the OCI annotations."""
    p = LABEL_PREFIX
    name, version = labels[f"{p}model.name"], labels[f"{p}model.version"]
    return {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": labels[f"{p}git.commit"],
        "org.opencontainers.image.created": labels[f"{p}created"],
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.base.name": base_image,
        "org.opencontainers.image.description": f"Scoring service for model {name} version {version}",
        **labels,
    }


def label_instruction(labels: dict[str, str]) -> str:
    """One Dockerfile LABEL instruction setting every label, values literal (quoted, ``$`` not expanded).

    A label must be one line: a line break would end the instruction, so it is refused.
    """
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'

    for key, value in labels.items():
        if any(c in f"{key}{value}" for c in "\r\n"):
            raise ContainerImageError(f"image label {key!r}: expected one line, found a line break in {value!r}")
    return "LABEL " + " ".join(f"{quoted(k)}={quoted(str(v))}" for k, v in sorted(labels.items()))


def model_identity(labels: dict[str, str]) -> dict[str, str]:
    """The model's name and version as the scoring app reports them on /health (model/identity.json)."""
    return {"name": labels[f"{LABEL_PREFIX}model.name"], "version": labels[f"{LABEL_PREFIX}model.version"]}


def label_differences(expected: dict[str, str], found: dict[str, str] | None) -> dict[str, tuple[str, str | None]]:
    """Identity labels whose value differs: {label: (expected, found)}."""
    found = found or {}
    diffs = {}
    for key in IDENTITY_LABELS:
        full = f"{LABEL_PREFIX}{key}"
        if full in expected and found.get(full) != expected[full]:
            diffs[full] = (expected[full], found.get(full))
    return diffs
