"""The stable serving address on the edge VM: a TCP proxy to whichever scoring container serves now.

EdgeServingHook runs it in a container on the VM's host network with the image's own python3
(``python3 -c <this file's text> <config json>``). Standard library only.

Config: ``{"listen_port": the stable port, "backend_file": path, "backend": "127.0.0.1:<port>"}``. The
backend file holds ``host:port`` and is read at every new connection, so a switch (an atomic rename of
that file, done with ``docker exec``) sends every later request to the new container while requests
already in flight finish on the old one. No request finds nothing listening: the old container is
stopped only after the switch.
"""

import asyncio
import json
import os
import sys


def read_backend(path):
    with open(path) as handle:
        host, port = handle.read().strip().rsplit(":", 1)
    return host, int(port)


def write_backend(path, backend):
    """Atomically point the proxy at ``backend`` (``host:port``)."""
    with open(path + ".new", "w") as handle:
        handle.write(backend)
    os.replace(path + ".new", path)


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def handle(client_reader, client_writer, backend_file):
    try:
        host, port = read_backend(backend_file)
        backend_reader, backend_writer = await asyncio.open_connection(host, port)
    except (OSError, ValueError) as exc:
        print("no backend: %s: %s" % (type(exc).__name__, exc), flush=True)
        client_writer.close()
        return
    try:
        await asyncio.gather(pipe(client_reader, backend_writer), pipe(backend_reader, client_writer))
    finally:
        for writer in (backend_writer, client_writer):
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already closed by the other side
                pass


async def serve(config):
    backend_file = config["backend_file"]
    if config.get("backend"):
        write_backend(backend_file, config["backend"])
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, backend_file), config.get("listen_host", "0.0.0.0"), config["listen_port"]
    )
    print("serving on port %d" % config["listen_port"], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "switch":
        write_backend(sys.argv[2], sys.argv[3])
    else:
        asyncio.run(serve(json.loads(sys.argv[1])))
