"""A WS-Discovery client made of the `wsdiscovery` package, driven over stdin/stdout.

Runs under .venv-peers/bin/python (inside a network namespace in the tests). Prints one JSON
object per line: {"event": "ready"}, {"event": "hello", ...}, {"event": "bye", "epr": ...},
{"event": "probe", "services": [...]}. Reads JSON commands, one per line:
{"cmd": "probe", "types": [[namespace, local], ...], "scopes": [...], "timeout": 2,
 "address": null, "port": null} and {"cmd": "quit"}.
"""

import json
import sys
import threading

from wsdiscovery import QName, Scope
from wsdiscovery.discovery import ThreadedWSDiscovery

lock = threading.Lock()


def emit(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def describe(service):
    return {
        "epr": service.getEPR(),
        "types": [[t.getNamespace(), t.getLocalname()] for t in service.getTypes()],
        "scopes": [s.getValue() for s in service.getScopes()],
        "xaddrs": list(service.getXAddrs()),
        "metadata_version": service.getMetadataVersion(),
    }


class Client(ThreadedWSDiscovery):
    """The library keeps no MetadataVersion for services it hears of (it stores 1); take
    the announced value from the parsed envelope the library hands to its Hello handler."""

    def _handle_hello(self, env, addr):
        self.last_hello_version = int(env.getMetadataVersion() or 0)
        super()._handle_hello(env, addr)


def main():
    wsd = Client()

    def on_hello(service):
        emit({"event": "hello", **describe(service), "metadata_version": wsd.last_hello_version})

    wsd.setRemoteServiceHelloCallback(on_hello)
    wsd.setRemoteServiceByeCallback(lambda epr: emit({"event": "bye", "epr": epr}))
    wsd.start()
    emit({"event": "ready"})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "quit":
                break
            if command["cmd"] == "probe":
                wsd.clearRemoteServices()
                types = [
                    QName(ns, local, f"t{i}")
                    for i, (ns, local) in enumerate(command.get("types") or [])
                ]
                scopes = [Scope(s) for s in command.get("scopes") or []]
                found = wsd.searchServices(
                    types=types or None,
                    scopes=scopes or None,
                    address=command.get("address"),
                    port=command.get("port"),
                    timeout=command.get("timeout", 2),
                )
                emit({"event": "probe", "services": [describe(s) for s in found]})
    finally:
        wsd.stop()


if __name__ == "__main__":
    main()
