"""Pure logic of the container image hook: names, labels, stream parsing, smoke-test verdicts, context."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge_training.exceptions import ContainerImageError, RegistryAuthError, RegistryPushError, SmokeTestError
from edge_training.hooks import container_image as ci
from edge_training.hooks import docker_ssh
from edge_training.hooks import docker_streams as streams
from edge_training.hooks import image_identity as identity
from edge_training.hooks import registry_client as registry
from edge_training.hooks import smoke_test as smoke

DOCKERFILE = ci.DEFAULT_SERVING_DIR / "Dockerfile"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("name, prefix, expected", [
    ("failure-classifier", None, "failure-classifier"),
    ("Failure Classifier v2", None, "failure-classifier-v2"),
    ("edge__model..x", "models", "models/edge-model-x"),
])
def test_repository_name(name, prefix, expected):
    assert identity.repository_name(name, prefix=prefix) == expected


def test_repository_name_refuses_empty():
    with pytest.raises(ContainerImageError, match="valid registry path"):
        identity.repository_name("__")


def test_tags_are_version_then_fingerprint_short_form():
    assert identity.image_tags("7", "sha256:0123456789ABCDEF0123") == ["7", "fp-0123456789ab"]
    assert identity.image_tags(3, "deadbeefcafe1234") == ["3", "fp-deadbeefcafe"]
    with pytest.raises(ContainerImageError, match="not a valid image tag"):
        identity.image_tags("-1", "deadbeefcafe")
    with pytest.raises(ContainerImageError, match="at least 6"):
        identity.image_tags("1", "abc")


def test_image_labels_carry_the_model_labels_and_the_oci_annotations_and_the_dockerfile_none():
    """The labels are appended to the context's Dockerfile as one instruction with literal values, so the
    Dockerfile declares neither labels nor the build args their values would need: its only ARG is BASE_IMAGE."""
    text = DOCKERFILE.read_text()
    labels = identity.model_labels(model_name="m", model_version="1", data_fingerprint="f" * 16, job_name="j",
                                   partition="2026-11-10", git_commit="c" * 40, created="2026-12-01T00:00:00Z")
    full = identity.image_labels(labels, base_image="b:1", source="https://git.example/edge")
    assert labels.items() <= full.items()
    assert full["org.opencontainers.image.revision"] == "c" * 40
    assert full["org.opencontainers.image.created"] == "2026-12-01T00:00:00Z"
    assert full["org.opencontainers.image.base.name"] == "b:1"
    assert full["org.opencontainers.image.source"] == "https://git.example/edge"
    assert full["org.opencontainers.image.version"] == "1" and full["org.opencontainers.image.title"] == "m"
    assert identity.model_identity(labels) == {"name": "m", "version": "1"}
    declared = {word.split("=")[0] for line in re.findall(r"^ARG (.+)$", text, flags=re.M) for word in line.split()}
    assert declared == {"BASE_IMAGE"}
    assert not re.search(r"^(LABEL|ENV MODEL)", text, flags=re.M)


def test_the_label_instruction_keeps_values_literal_and_refuses_a_line_break():
    line = identity.label_instruction({"b": 'say "hi" for $HOME \\ now', "a": ""})
    assert line == 'LABEL "a"="" "b"="say \\"hi\\" for \\$HOME \\\\ now"'
    with pytest.raises(ContainerImageError, match="expected one line, found a line break"):
        identity.label_instruction({"org.opencontainers.image.description": "two\nlines"})


def test_dockerfile_copies_the_model_last():
    """The model COPY is the last instruction, so a new model invalidates one layer (and the labels' step)."""
    lines = DOCKERFILE.read_text().splitlines()
    instructions = [line.split()[0] for line in lines if line and not line.startswith((" ", "#"))]
    assert instructions[-1] == "COPY" and [line for line in lines if line.startswith("COPY ")][-1].startswith(
        "COPY model/")
    assert instructions.index("COPY") < instructions.index("CMD") < len(instructions) - 1



def test_label_differences_only_on_identity():
    a = identity.model_labels(model_name="m", model_version="1", data_fingerprint="fff111", job_name="j", created="t1")
    b = identity.model_labels(model_name="m", model_version="1", data_fingerprint="fff111", job_name="j", created="t2",
                        git_commit="other")
    assert identity.label_differences(a, b) == {}
    c = dict(b, **{f"{identity.LABEL_PREFIX}job.name": "j2"})
    assert identity.label_differences(a, c) == {f"{identity.LABEL_PREFIX}job.name": ("j", "j2")}
    assert set(identity.label_differences(a, None)) == {f"{identity.LABEL_PREFIX}{k}" for k in identity.IDENTITY_LABELS}


def test_parse_build_stream_marks_cached_steps():
    stream = [
        {"stream": "Step 1/4 : ARG BASE_IMAGE=x\n"},
        {"stream": "Step 2/4 : FROM x\n"}, {"stream": " ---> 1234\n"},
        {"stream": "Step 3/4 : COPY score.py /opt/serving/score.py\n"}, {"stream": " ---> Using cache\n"},
        {"stream": " ---> 5678\n"},
        {"stream": "Step 4/4 : COPY model/ /opt/model/\n"}, {"stream": " ---> 9abc\n"},
        {"aux": {"ID": "sha256:9abc"}}, {"stream": "Successfully built 9abc\n"},
    ]
    report = streams.parse_build_stream(stream)
    assert report.image_id == "sha256:9abc"
    assert report.cached_steps == [3]
    assert [s.instruction for s in report.steps][-1] == "COPY model/ /opt/model/"


def test_parse_build_stream_error_names_the_step():
    stream = [{"stream": "Step 2/3 : RUN false\n"}, {"error": "The command '/bin/sh -c false' returned 1"}]
    with pytest.raises(ContainerImageError, match=r"failed at step 2 \(RUN false\).*returned 1"):
        streams.parse_build_stream(stream, image="r/m:1")
    with pytest.raises(ContainerImageError, match="without an image id"):
        streams.parse_build_stream([{"stream": "Step 1/1 : FROM x\n"}])


def test_parse_push_stream():
    ok = [{"status": "Pushing"}, {"status": f"1: digest: {DIGEST} size: 1234"},
          {"aux": {"Tag": "1", "Digest": DIGEST, "Size": 1234}}]
    assert streams.parse_push_stream(ok, ref="r:1", registry="reg") == DIGEST
    assert streams.parse_push_stream(ok[:2], ref="r:1", registry="reg") == DIGEST
    with pytest.raises(RegistryAuthError, match="refused the push of r:1.*login and password"):
        streams.parse_push_stream([{"errorDetail": {"message": "unauthorized: authentication required"},
                               "error": "unauthorized: authentication required"}], ref="r:1", registry="reg")
    with pytest.raises(RegistryPushError, match="blob upload unknown"):
        streams.parse_push_stream([{"error": "blob upload unknown"}], ref="r:1", registry="reg")
    with pytest.raises(RegistryPushError, match="without a digest"):
        streams.parse_push_stream([{"status": "Pushing"}], ref="r:1", registry="reg")


@pytest.mark.parametrize("body, rows, message", [
    ({"predictions": [0, 1]}, 3, "expected 3 predictions"),
    ({"result": []}, 1, "'predictions' list"),
    ([1], 1, "'predictions' list"),
    ({"predictions": [0, "1"]}, 2, "all numbers or all strings"),
    ({"predictions": [None]}, 1, "NoneType"),
    ({"predictions": [True]}, 1, "bool"),
    ({"predictions": [1], "probabilities": [1.5]}, 1, "probabilities between 0 and 1"),
])
def test_check_predictions_refuses(body, rows, message):
    with pytest.raises(SmokeTestError) as err:
        smoke.check_predictions(body, rows, image="img")
    assert message in str(err.value)


def test_check_predictions_accepts():
    assert smoke.check_predictions({"predictions": [0, 1, 0], "probabilities": [0.1, 0.9, 0.2]}, 3, image="i") == [0, 1, 0]
    assert smoke.check_predictions({"predictions": ["ok"]}, 1, image="i") == ["ok"]


class _ScoringApp(BaseHTTPRequestHandler):
    """A stand-in for the scoring app: /health lists two features, /score answers one prediction per row."""

    def do_GET(self):  # noqa: N802 - the http.server interface
        self._answer(200, {"status": "ok", "features": ["a", "b"]} if self.path == "/health" else {})

    def do_POST(self):  # noqa: N802
        rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["rows"]
        self._answer(200, {"predictions": [int(sum(r.values()) > 2) for r in rows]})

    def _answer(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def run_probe(config: dict) -> dict:
    """The shipped probe, run as the hook runs it in the container: ``python3 -c <source> <config>``."""
    proc = subprocess.run([sys.executable, "-c", smoke.smoke_probe_source(), json.dumps(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_smoke_probe_file_scores_synthetic_rows_from_the_features_health_reports():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScoringApp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        verdict = run_probe({"port": server.server_address[1], "timeout": 10, "rows": []})
    finally:
        server.shutdown()
    assert verdict["stage"] == "done" and verdict["status"] == 200 and verdict["rows"] == 3
    assert smoke.check_predictions(verdict["body"], verdict["rows"], image="img") == [0, 1, 1]


def test_smoke_probe_file_reports_an_app_that_never_answers():
    verdict = run_probe({"port": smoke.free_port(), "timeout": 1, "rows": [{"a": 1.0}]})
    assert verdict["stage"] == "health" and "Connection refused" in verdict["error"], verdict


def test_www_authenticate():
    assert registry.parse_www_authenticate('Bearer realm="https://r/oauth2/token",service="r",scope="repository:a:pull"') == (
        "bearer", {"realm": "https://r/oauth2/token", "service": "r", "scope": "repository:a:pull"})
    assert registry.parse_www_authenticate('Basic realm="Registry Realm"')[0] == "basic"


def test_context_holds_serving_files_and_only_the_model_files(tmp_path):
    serving = tmp_path / "serving"
    serving.mkdir()
    (serving / "Dockerfile").write_text("FROM x\n")
    (serving / "score.py").write_text("print(1)\n")
    (serving / "__pycache__").mkdir()
    (serving / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"x")
    download = tmp_path / "download" / "named-outputs" / "model"
    download.mkdir(parents=True)
    for name in ("model.joblib", "metrics.json", "MODEL_CARD.md", "feature_importance.png", "data.csv", "std_log.txt"):
        (download / name).write_text(name)
    labels = identity.image_labels(identity.model_labels(model_name="m", model_version="4", data_fingerprint="f" * 16,
                                                         job_name="j"), base_image="b:1")
    ctx = ci.prepare_context(serving_dir=serving, model_dir=tmp_path / "download", dest=tmp_path / "ctx",
                             labels=labels)
    files = sorted(p.relative_to(ctx).as_posix() for p in ctx.rglob("*") if p.is_file())
    assert files == ["Dockerfile", "model/MODEL_CARD.md", "model/feature_importance.png", "model/identity.json",
                     "model/metrics.json", "model/model.joblib", "score.py"]
    assert json.loads((ctx / "model" / "identity.json").read_text()) == {"name": "m", "version": "4"}
    # The labels: one instruction appended to the context's copy of the Dockerfile (the serving one unchanged).
    assert (ctx / "Dockerfile").read_text() == f"FROM x\n\n{identity.label_instruction(labels)}\n"
    assert (serving / "Dockerfile").read_text() == "FROM x\n"
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in ctx.rglob("*"))


def test_model_folder_errors(tmp_path):
    with pytest.raises(ContainerImageError, match="does not exist"):
        ci.resolve_model_dir(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.joblib").write_text("")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.joblib").write_text("")
    with pytest.raises(ContainerImageError, match="exactly one model.joblib, found 2"):
        ci.resolve_model_dir(tmp_path)
    with pytest.raises(ContainerImageError, match="expected a Dockerfile"):
        ci.prepare_context(serving_dir=tmp_path, model_dir=tmp_path / "a", dest=tmp_path / "ctx", labels={})


def test_image_url():
    from edge_training.links.container_image import image_url

    assert image_url("reg:5000", "m", DIGEST) == f"https://reg:5000/v2/m/manifests/{DIGEST}"
    assert image_url("r", "m", DIGEST, template="https://portal/{registry}/{repository}/{digest}") == \
        f"https://portal/r/m/{DIGEST}"


def test_docker_client_kwargs_from_the_connection():
    kw = docker_ssh.docker_client_kwargs("unix:///var/run/docker.sock", None, {"network_mode": "host"})
    assert kw["base_url"] == "unix:///var/run/docker.sock" and kw["tls"] is False and kw["timeout"] == 600
    assert docker_ssh.docker_client_kwargs(None, None, {})["base_url"] == "unix:///var/run/docker.sock"
    assert docker_ssh.docker_client_kwargs("tcp://10.0.0.4", 2376, {})["base_url"] == "tcp://10.0.0.4:2376"
    assert docker_ssh.docker_client_kwargs("tcp://10.0.0.4:2375", 2376, {})["base_url"] == "tcp://10.0.0.4:2375"
    ssh = docker_ssh.docker_client_kwargs("ssh://edgeops@edgevm", 47122, {"use_ssh_client": True, "timeout": 30})
    assert ssh["base_url"] == "ssh://edgeops@edgevm:47122" and ssh["use_ssh_client"] is True and ssh["timeout"] == 30
    with pytest.raises(ContainerImageError, match="expected unix://, tcp:// or ssh://"):
        docker_ssh.docker_client_kwargs("edgevm:2375", None, {})


def test_parse_host_key_with_and_without_type():
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIIjlw4ykkK/QD4iR3PxNFQZXOLMEMZiSHQubBlej9Bfa"
    key_type, key = docker_ssh.parse_host_key(f"ssh-ed25519 {blob}")
    assert key_type == "ssh-ed25519" and key.get_base64() == blob
    assert docker_ssh.parse_host_key(blob)[0] == "ssh-ed25519"
