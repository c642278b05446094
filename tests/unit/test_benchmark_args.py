"""``benchmarks/run.py`` refuses what it cannot run at once, before it builds or starts
anything: unknown workloads and modes, and throughput mode while HAProxy's fixed ports
are taken (the smoke run in ``tests/benchmarks/`` must fail then, not quietly run less)."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from _support import ROOT

RUN = ROOT / "benchmarks" / "run.py"


def _run(out: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(RUN), "--duration", "1", "--rounds", "1", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "building" not in done.stdout, done.stdout
    assert not out.exists()  # no results: nothing ran
    return done


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _taken(port: int) -> Iterator[None]:
    """``port`` on 127.0.0.1 accepts connections for the block: held here, or already by
    whatever holds it (a HAProxy left by a high-throughput Ray, say)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            if not _accepts(port):
                pytest.skip(f"port {port} is bound but accepts no connections")
        else:
            sock.listen()
        yield


@pytest.mark.parametrize("port", [8404, 9101])
def test_throughput_mode_refused_while_a_haproxy_port_is_taken(
    port: int, tmp_path: pathlib.Path
) -> None:
    if port != 8404 and _accepts(8404):
        pytest.skip("8404 is taken too, and checked first")
    with _taken(port):
        done = _run(tmp_path / "out", "--modes", "throughput", "--workloads", "iris")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {port}" in done.stderr and "HAProxy" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--workloads", "iris,nope"], "unknown workload(s) ['nope']"),
        (["--one-ray", "--workloads", "iris", "--modes", "default,fast"], "unknown mode(s)"),
    ],
)
def test_unknown_workloads_and_modes_refused(
    args: list[str], error: str, tmp_path: pathlib.Path
) -> None:
    done = _run(tmp_path / "out", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert error in done.stderr, done.stderr
