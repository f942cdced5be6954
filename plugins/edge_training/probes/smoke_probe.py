"""The model image's smoke-test client, run inside the container with the image's own python3.

The hook runs it with ``docker exec <container> python3 -c <this file's text> <config json>``, so it
reaches the scoring app the same way whether Docker is local or on the edge VM, on the host network or a
bridge. Standard library only (it runs on the image's interpreter). It prints one JSON line, which the
hook judges: ``{"stage": "health" | "score", "error": ...}`` when the app did not answer, else
``{"stage": "done", "health": ..., "status": ..., "body": ..., "rows": n, "request": the rows sent}``.

Config: ``{"port": the app's port, "timeout": seconds to wait for /health, "rows": rows to score}``;
without rows it scores three synthetic rows built from the features /health reports.
"""

import json
import sys
import time
import urllib.error
import urllib.request


def wait_for_health(base: str, timeout: float) -> tuple[dict | None, str]:
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=3) as response:
                return json.loads(response.read()), last
        except Exception as exc:  # noqa: BLE001 - any failure means "not up yet"; the last one is reported
            last = "%s: %s" % (type(exc).__name__, exc)
            time.sleep(0.25)
    return None, last


def main(config: dict) -> dict:
    base = "http://127.0.0.1:%d" % config["port"]
    health, last = wait_for_health(base, config["timeout"])
    if health is None:
        return {"stage": "health", "error": last}
    rows = config["rows"] or [{f: float(i + j) for j, f in enumerate(health.get("features") or [])}
                              for i in range(3)]
    request = urllib.request.Request(base + "/score", data=json.dumps({"rows": rows}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except Exception as exc:  # noqa: BLE001 - reported to the hook, which fails the smoke test with it
        return {"stage": "score", "error": "%s: %s" % (type(exc).__name__, exc)}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = body[:300].decode("utf-8", "replace")
    return {"stage": "done", "health": health, "status": status, "body": parsed, "rows": len(rows), "request": rows}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
