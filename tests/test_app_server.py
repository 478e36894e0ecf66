"""``make app`` served to a class, checked against a running server (``make check-site``).

* a small load test: 3 visitors at once (``bench app``'s code), each gets the explorers and a
  redraw of every explorer's slider; visitor 4 gets the "full" page; once they leave, the idle
  kernels are culled and the server's memory is back near its idle size;
* nothing exposed: served on an address other than localhost (127.0.0.2 stands in for the
  class's network), a cell that fails shows no traceback (on 127.0.0.1 it does: the check can
  fail), and an ``execute_request`` sent on a visitor's kernel websocket does not run.

Skipped without Voila (the ``docs`` extra).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dynacppo_lite.bench.app import AppServer, KernelSocket, load, process_tree, server_pss_mib

ROOT = Path(__file__).resolve().parents[1]
CULL_IDLE, CULL_INTERVAL = 30, 2  # short, so that the test sees the memory come back


@pytest.fixture(autouse=True, scope="module")
def _voila() -> None:
    if not Path(sys.executable).with_name("voila").is_file():
        pytest.skip("no Voila: pip install '.[docs]' (make check-site installs it)")


@contextmanager
def _server(tmp: Path, **kwargs) -> Iterator[AppServer]:
    server = AppServer(log=tmp / "voila.log", **kwargs)
    try:
        server.wait_up()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def broken_runs(tmp_path_factory) -> str:
    """A run whose progress.csv lacks the columns the browser draws: its cell raises."""
    root = tmp_path_factory.mktemp("broken_runs")
    (root / "bad").mkdir()
    (root / "bad" / "progress.csv").write_text("a,b\n1,2\n")
    return str(root)


def test_three_visitors_at_once_then_the_full_page_then_the_memory_back(tmp_path) -> None:
    with _server(tmp_path, max_visitors=3, cull_idle=CULL_IDLE, cull_interval=CULL_INTERVAL) as server:
        time.sleep(3)
        row = asyncio.run(load(server, 3, timeout=240, after_cull=CULL_IDLE + 60))
        print("\n" + ", ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}"
                               for k, v in row.items()))
        assert row["served"] == "3/3" and row["redraws"] == "9/9", row["errors"]
        assert row["visitor N+1"] == "503 full page" and row["server up"] == "yes"
        assert row["after cull kernels"] == 0
        # Every kernel's memory came back: what remains is the server's own, within 20% of what
        # the visitors had added (~8 MiB after 5 visitors: docs/course.md).
        assert row["after cull MiB"] - row["idle MiB"] < 0.2 * (row["loaded MiB"] - row["idle MiB"])


def test_pages_take_turns_to_start_their_kernel(tmp_path) -> None:
    """APP_STARTS=1: of two visitors arriving at once, the second one's kernel starts once the
    first one's page is served (by default, one start per core at a time)."""
    from tornado.httpclient import AsyncHTTPClient

    async def two(url: str) -> list:
        return await asyncio.gather(*(AsyncHTTPClient().fetch(url, request_timeout=240)
                                      for _ in range(2)))

    with _server(tmp_path, max_visitors=2, cull_idle=0, cull_interval=60, starts=1) as server:
        assert all(b"kernelId" in page.body for page in asyncio.run(two(server.url)))
        log = Path(server.log.name).read_text()
    assert re.findall(r"Kernel started|Page served", log) == ["Kernel started", "Page served"] * 2


def _page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=240) as reply:
        return reply.read().decode()


def test_a_remote_visitor_sees_no_traceback(tmp_path, broken_runs) -> None:
    with _server(tmp_path, max_visitors=2, cull_idle=0, cull_interval=60, host="127.0.0.2",
                 runs=broken_runs) as server:
        html = _page(server.url)
        log = Path(server.log.name).read_text()
    assert "Error at server while executing cell" in log  # the run browser's cell did fail
    leaked = [s for s in ("Traceback", "FileNotFoundError", "config.json", str(ROOT)) if s in html]
    assert not leaked, f"a remote visitor sees {leaked}"


def _serve():
    """``app/serve.py`` as a module."""
    sys.path.insert(0, str(ROOT / "app"))
    try:
        import serve
    finally:
        sys.path.remove(str(ROOT / "app"))
    return serve


def test_tracebacks_are_asked_for_only_on_localhost() -> None:
    serve = _serve()
    for host, shown in [("127.0.0.1", True), ("localhost", True), ("0.0.0.0", False),
                        ("192.168.1.5", False)]:
        args = serve.voila_args(serve.parse([f"--host={host}"])[0])
        assert f"--show_tracebacks={shown}" in args and f"--Voila.ip={host}" in args
    with pytest.raises(SystemExit):
        serve.parse(["--max-visitors=-1"])


def test_the_culler_spares_a_rendering_page_and_the_heap_is_trimmed_once_after_shutdowns(
        monkeypatch) -> None:
    """The culler may see a starting kernel idle, with no connection yet (seen when a class's
    starts outlast the cull timeout): a kernel whose page is still rendering is not culled. Once
    kernels are shut down, the server's freed heap goes back to the system, once for a batch."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    serve = _serve()
    assert serve.trim_heap() is sys.platform.startswith("linux")  # glibc's malloc_trim
    app = serve.make_voila_class()()
    app.reserved = {"rendering"}
    culled, shut, trims = [], [], []

    async def cull(self, kernel_id):
        culled.append(kernel_id)

    async def shutdown(self, kernel_id, now=False, restart=False):
        shut.append(kernel_id)

    monkeypatch.setattr(AsyncMappingKernelManager, "cull_kernel_if_idle", cull)
    monkeypatch.setattr(AsyncMappingKernelManager, "shutdown_kernel", shutdown)
    monkeypatch.setattr(serve, "trim_heap", lambda: trims.append(1))
    km = app.KernelManager(parent=app)

    async def run() -> None:
        for kernel_id in ("rendering", "idle"):
            await km.cull_kernel_if_idle(kernel_id)
        for kernel_id in ("a", "b", "c"):
            await km.shutdown_kernel(kernel_id)
        await asyncio.sleep(1.5)

    asyncio.run(run())
    assert culled == ["idle"] and shut == ["a", "b", "c"] and trims == [1]


def test_the_server_loads_at_start_what_its_first_kernel_start_keeps(tmp_path) -> None:
    """Its size before a class is then the size it returns to after one (the kernel's spec read
    through ipykernel and IPython, the machine's addresses through psutil: ~4 MiB)."""
    import subprocess

    code = ("import sys; sys.path.insert(0, 'app'); import serve\n"
            "app = serve.make_voila_class()()\n"
            "app.initialize(serve.voila_args(serve.parse(['--port=0'])[0]))\n"
            f"app.connection_dir = {str(tmp_path)!r}\n"
            "app.init_settings()\n"
            "print([m for m in ('IPython', 'psutil') if m in sys.modules])\n"
            "app.init_handlers()\n"
            "print([m for m in ('IPython', 'psutil') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.splitlines()
    assert out == ["[]", "['IPython', 'psutil']"]


def test_an_execute_request_on_a_visitors_kernel_does_not_run(tmp_path) -> None:
    proof = tmp_path / "executed"

    async def attempt(url: str) -> dict:
        import re

        html = _page(url)
        kernel = re.search(r'"kernelId":\s*"([0-9a-f-]+)"', html).group(1)
        ws = await KernelSocket.open(url.replace("http", "ws", 1), kernel)
        ws.send("execute_request", {"code": f"open({str(proof)!r}, 'w').write('ran')",
                                    "silent": False, "store_history": False,
                                    "user_expressions": {}, "allow_stdin": False})
        await asyncio.sleep(5)
        states = await ws.widget_states(60)  # the kernel still answers what the page may send
        ws.close()
        return states

    with _server(tmp_path, max_visitors=2, cull_idle=0, cull_interval=60, host="127.0.0.2") as server:
        states = asyncio.run(attempt(server.url))
        assert any(s["model_name"] == "ImageModel" for s in states.values())
        assert not proof.exists(), "code sent by a visitor ran in the kernel"
        assert server_pss_mib(server.proc.pid)[1] == 1
        # While here: the server allocates with malloc (its freed pages go back after a class),
        # its kernel with Python's allocator (the default).
        allocators = {"server" if "serve.py" in " ".join(p.cmdline()) else "kernel":
                      p.environ().get("PYTHONMALLOC")
                      for p in process_tree(server.proc.pid) if p.name().startswith("python")}
        assert allocators == {"server": "malloc", "kernel": None}
