"""A real OpenTelemetry Collector (tools/otelcol: the OTLP receiver, the file exporter)
as a test's process: it listens on free ports of 127.0.0.1 and writes everything it
receives, as OTLP JSON lines, to a file the test reads back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from tests.support.ozw_process import REPO
from tests.support.ports import free_port

BUILD = REPO / "tools" / "build-otelcol.sh"
READY = "Everything is ready"


def collector_binary() -> Path:
    """The collector of tools/otelcol, built once per release (a cache hit is instant)."""
    done = subprocess.run([str(BUILD)], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


class Collector:
    """One collector configuration; :meth:`run` may start it again on the same ports."""

    def __init__(self, binary: Path, workdir: Path, *, ports: Collector | None = None) -> None:
        """``ports``: listen where that (dead) collector did, as a restarted one would."""
        self.binary = binary
        self.grpc_port: int = ports.grpc_port if ports else free_port()
        self.http_port: int = ports.http_port if ports else free_port()
        self.output = workdir / "otlp.jsonl"
        self.config = workdir / "otelcol.yaml"
        # JSON is YAML; the collector's own telemetry is off (no port 8888 to share).
        self.config.write_text(
            json.dumps(
                {
                    "receivers": {
                        "otlp": {
                            "protocols": {
                                "grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"},
                                "http": {"endpoint": f"127.0.0.1:{self.http_port}"},
                            }
                        }
                    },
                    "exporters": {"file": {"path": str(self.output), "flush_interval": "100ms"}},
                    "service": {
                        "telemetry": {"metrics": {"level": "none"}},
                        "pipelines": {
                            "metrics": {"receivers": ["otlp"], "exporters": ["file"]},
                            "traces": {"receivers": ["otlp"], "exporters": ["file"]},
                        },
                    },
                }
            )
        )
        self.process: trio.Process | None = None
        self.log: list[str] = []

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    async def run(
        self, *, task_status: trio.TaskStatus[Collector] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled or killed; started once it says it is ready."""
        process = await trio.lowlevel.open_process(
            [str(self.binary), "--config", f"file:{self.config}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.process = process
        try:
            assert process.stderr is not None
            pending = b""
            ready = False
            async for chunk in process.stderr:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.log.append(line.decode(errors="replace"))
                    if not ready and READY in self.log[-1]:
                        ready = True
                        task_status.started(self)
            await process.wait()
            if not ready:
                raise AssertionError("the collector exited early:\n" + "\n".join(self.log))
        finally:
            # Stopped as an operator would (it writes out what it holds), killed if stuck.
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    with trio.move_on_after(10):
                        await process.wait()
                if process.returncode is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    await process.wait()

    def kill(self) -> None:
        """SIGKILL: a collector that dies, without flushing anything."""
        self.signal(signal.SIGKILL)

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def received(self) -> list[dict[str, Any]]:
        """Every OTLP request body the collector has finished writing, in order."""
        if not self.output.exists():
            return []
        # The file exporter may be mid-line: what follows the last newline is not whole.
        *whole, _ = self.output.read_text().split("\n")
        return [json.loads(line) for line in whole if line]


def metrics_of(
    batches: list[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(resource, scope, metric) of every metric in ``batches``."""
    for batch in batches:
        for rm in batch.get("resourceMetrics", []):
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    yield rm["resource"], sm["scope"], metric


def spans_of(
    batches: list[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(resource, scope, span) of every span in ``batches``."""
    for batch in batches:
        for rs in batch.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    yield rs["resource"], ss["scope"], span


def attributes(item: dict[str, Any]) -> dict[str, Any]:
    """An OTLP JSON attribute list as a dict of plain values."""
    return {
        kv["key"]: next(iter(kv["value"].values())) if kv["value"] else None
        for kv in item.get("attributes", [])
    }
