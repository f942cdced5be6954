"""Runs inside the job's container on the edge VM (python3 stdlib only): the AML "job runtime".

Shipped by the double into the job's work dir. It downloads the inputs straight from their storage account
(shared-key auth at x-ms-version 2019-07-07, the Stack Hub ceiling, with the stack CA), runs the user's
command with stdout/stderr in user_logs/std_log.txt, uploads the declared outputs and the log to the
workspace storage, and reports its phase in .azureml/status.json, which the double polls over SSH.
The storage bytes never pass through the control plane.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from email.utils import formatdate
from urllib.parse import quote, urlsplit

ROOT = "/azureml-job"
META = ROOT + "/.azureml"
API_VERSION = "2019-07-07"

_child = None
_cancelled = False


def write_status(phase, **extra):
    payload = {"phase": phase, "time": time.time()}
    payload.update(extra)
    tmp = META + "/status.json.tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, META + "/status.json")


class Blob:
    """The few Blob REST calls a job needs, signed with the account's shared key."""

    def __init__(self, account, key, endpoint, ca_file):
        self.account = account
        self.key = base64.b64decode(key)
        parts = urlsplit(endpoint)
        self.host = parts.hostname
        self.port = parts.port or 443
        self.ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()

    def _sign(self, verb, path, query, headers):
        canon_headers = "".join(
            "%s:%s\n" % (k, headers[k]) for k in sorted(headers) if k.startswith("x-ms-")
        )
        canon_resource = "/" + self.account + path
        for k in sorted(query):
            canon_resource += "\n%s:%s" % (k.lower(), query[k])
        length = headers.get("Content-Length", "")
        if length == "0":
            length = ""
        to_sign = "\n".join([
            verb, "", "", length, "", headers.get("Content-Type", ""), "", "", "", "", "", "",
        ]) + "\n" + canon_headers + canon_resource
        sig = base64.b64encode(hmac.new(self.key, to_sign.encode("utf-8"), hashlib.sha256).digest()).decode()
        return "SharedKey %s:%s" % (self.account, sig)

    def request(self, verb, container, blob="", query=None, body=b"", extra_headers=None):
        query = dict(query or {})
        path = "/" + container + ("/" + quote(blob) if blob else "")
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION,
                   "Content-Length": str(len(body))}
        headers.update(extra_headers or {})
        headers["Authorization"] = self._sign(verb, path, query, headers)
        qs = "&".join("%s=%s" % (k, quote(str(v), safe="")) for k, v in query.items())
        last = None
        for attempt in range(5):
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=120)
            try:
                conn.request(verb, path + ("?" + qs if qs else ""), body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError as exc:
                last = exc
                time.sleep(0.5 * (attempt + 1))
                continue
            finally:
                conn.close()
            if resp.status in (500, 503) and attempt < 4:
                time.sleep(0.5 * (attempt + 1))
                continue
            if resp.status >= 300:
                raise RuntimeError("%s https://%s:%s%s answered %s: %s" % (
                    verb, self.host, self.port, path, resp.status, data[:300].decode("utf-8", "replace")))
            return data
        raise RuntimeError("%s https://%s:%s%s failed: %r" % (verb, self.host, self.port, path, last))

    def list(self, container, prefix):
        names, marker = [], ""
        while True:
            query = {"restype": "container", "comp": "list", "prefix": prefix}
            if marker:
                query["marker"] = marker
            root = ET.fromstring(self.request("GET", container, query=query))
            for blob in root.iter("Blob"):
                names.append(blob.findtext("Name"))
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return names

    def download(self, container, blob, dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as fh:
            fh.write(self.request("GET", container, blob))

    def upload(self, container, blob, path):
        with open(path, "rb") as fh:
            data = fh.read()
        self.request("PUT", container, blob, body=data,
                     extra_headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"})


def client(spec, ca_file):
    return Blob(spec["account"], spec["key"], spec["endpoint"], ca_file)


def fetch_input(name, spec, ca_file):
    blob = client(spec, ca_file)
    dest = spec["dest"]
    os.makedirs(dest, exist_ok=True)
    prefix = spec["path"].lstrip("/")
    if spec["type"] == "uri_file":
        blob.download(spec["container"], prefix, os.path.join(dest, os.path.basename(prefix)))
        return 1
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    names = [n for n in blob.list(spec["container"], prefix) if not n.endswith("/")]
    if not names:
        raise RuntimeError("input %r: no blobs under %s/%s on %s" % (name, spec["container"], prefix,
                                                                     spec["endpoint"]))
    for n in names:
        blob.download(spec["container"], n, os.path.join(dest, n[len(prefix):]))
    return len(names)


def push_folder(spec, local, ca_file):
    blob = client(spec, ca_file)
    count = 0
    prefix = spec["path"].strip("/")
    for dirpath, _dirs, files in os.walk(local):
        for f in files:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, local).replace(os.sep, "/")
            blob.upload(spec["container"], prefix + "/" + rel, full)
            count += 1
    return count


def on_term(signum, frame):
    global _cancelled
    _cancelled = True
    if _child is not None and _child.poll() is None:
        try:
            os.killpg(_child.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def tail(path, lines=15):
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join([l for l in text.splitlines() if l.strip()][-lines:])


def main():
    global _child
    signal.signal(signal.SIGTERM, on_term)
    with open(META + "/job.json") as fh:
        job = json.load(fh)
    os.remove(META + "/job.json")  # holds storage keys; not needed on disk once read
    ca_file = META + "/ca.crt" if os.path.exists(META + "/ca.crt") else None
    log_path = ROOT + "/user_logs/std_log.txt"
    os.makedirs(ROOT + "/user_logs", exist_ok=True)
    write_status("Preparing")
    try:
        for name, spec in job["inputs"].items():
            fetch_input(name, spec, ca_file)
        for name in job["outputs"]:
            os.makedirs(ROOT + "/outputs/" + name, exist_ok=True)
    except Exception as exc:  # noqa: BLE001
        with open(log_path, "a") as log:
            log.write("AzureML job runtime: resolving inputs failed: %s\n" % exc)
        write_status("Done", exit_code=None, error="Resolving inputs failed: %s" % exc)
        return 1
    if _cancelled:
        write_status("Done", exit_code=None, canceled=True)
        return 1
    env = dict(os.environ)
    env.update(job["env"])
    started = time.time()
    write_status("Running", start=started)
    with open(log_path, "ab", buffering=0) as log:
        _child = subprocess.Popen(["bash", "-c", job["command"]], stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=ROOT + "/code", env=env,
                                  start_new_session=True)
        rc = _child.wait()
    ended = time.time()
    if _cancelled:
        write_status("Done", exit_code=rc, canceled=True, start=started, end=ended)
        return 1
    write_status("Finalizing", exit_code=rc, start=started, end=ended)
    error = None
    try:
        if rc == 0:
            for name, spec in job["outputs"].items():
                push_folder(spec, ROOT + "/outputs/" + name, ca_file)
    except Exception as exc:  # noqa: BLE001
        error = "Uploading outputs failed: %s" % exc
    if rc != 0 and error is None:
        error = ("Execution failed. User process 'bash' exited with status code %d. Please check log file "
                 "'user_logs/std_log.txt' for error details. Error: %s" % (rc, tail(log_path)))
    write_status("Done", exit_code=rc, error=error, start=started, end=ended)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001
        write_status("Done", exit_code=None, error="AzureML job runtime crashed: " + traceback.format_exc()[-800:])
        sys.exit(1)
