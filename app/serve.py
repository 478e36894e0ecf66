"""``make app``: Voila serving ``app/explorers.ipynb`` to a room of students.

What plain ``voila app/explorers.ipynb`` lacks for a class (docs/course.md, "Serving the app to a
class"):

* the run browser's runs are ready before the first visitor: made once here, in a subprocess
  (the server never imports torch), and every kernel only reads them;
* at most ``--max-visitors`` live kernels: the next visitor gets a short "the app is full, try
  again in a minute" page (HTTP 503, refreshing itself), not a hang nor an out-of-memory kill;
* pages take turns to start their kernel (``--starts``, one per CPU core): a class arriving at
  once is served first come first served, and its slider moves do not queue behind the starts;
* idle kernels culled (jupyter_server's ``MappingKernelManager.cull_*``; never one whose page is
  still rendering), so the memory of closed tabs comes back, the server's freed heap included
  (``make app`` runs it on the C library's malloc for that);
  a kernel that dies is removed, not restarted empty (``restart_limit=0``): the page's watcher
  (template ``offline``) then says so and offers a reload;
* tracebacks only when listening on localhost; code execution refused as Voila always does
  (only comm and info messages reach a visitor's kernel).

Run by ``make app`` (``APP_*`` variables); ``python app/serve.py --help`` lists the options. Any
other argument goes to Voila as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "app" / "explorers.ipynb"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"  # what Voila's page asks for
#: Lab extensions of .venv that fail outside Lab.
DENY_EXTENSIONS = ("@jupyter/nbgrader", "jupyterlab-jupytext", "@jupyter-notebook/lab-extension")

FULL_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="60">
<title>The app is full</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 4em auto; line-height: 1.5">
<h1>The app is full</h1>
<p>{visitors} using the explorers, as many as this server holds. Try again in a
minute: this page reloads itself every 60 seconds.</p>
</body></html>
"""

# What one kernel does for the browser: find the runs to browse, else make the demo runs once
# (the same folder app/explorers.py falls back to). A subprocess: the server stays free of torch.
PREPARE_RUNS = """
import os, tempfile
from pathlib import Path
from dynacppo_lite.figures import project_root
from dynacppo_lite.widgets import demo_runs, find_runs
runs = Path(os.environ.get("DYNACPPO_RUNS") or project_root() / "runs")
if not find_runs(runs):
    runs = demo_runs(Path(tempfile.gettempdir()) / "dynacppo_lite_app")
print(runs)
"""


def prepare_runs() -> str:
    """The folder the run browser will show, demo runs made there first if needed."""
    out = subprocess.run([sys.executable, "-c", PREPARE_RUNS], check=True, stdout=subprocess.PIPE,
                         text=True)
    return out.stdout.strip().splitlines()[-1]


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def trim_heap() -> bool:
    """Return the heap's free memory to the system (glibc's ``malloc_trim``); False where the C
    library has none."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def make_voila_class() -> type:
    """Voila with a visitor limit on the notebook's page (imported late: ``--help`` and the
    tests of the argument handling need no Voila)."""
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
    from jupyter_client.localinterfaces import local_ips
    from jupyter_core.utils import ensure_async
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from traitlets import Int
    from voila.app import Voila
    from voila.tornado.handler import TornadoVoilaHandler
    from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler

    class KernelWebsocketHandler(VoilaKernelWebsocketHandler):
        """Voila 0.5.13's kernel websocket, minus a hang: it reads the header of every binary
        message as the v1 protocol lays it out, and with a client of jupyter_server's default
        protocol (no subprotocol asked) that first number is ~2**60 offsets: the server spins
        and its memory grows without end (found by the load test). Such messages skip it; they
        are never the execute_input it filters (those carry no buffers)."""

        def write_message(self, message: Any, binary: bool = False) -> Any:
            if isinstance(message, bytes) and self.selected_subprotocol != V1_PROTOCOL:
                return super(VoilaKernelWebsocketHandler, self).write_message(message, binary)
            return super().write_message(message, binary)

    class ClassKernelManager(AsyncMappingKernelManager):
        """The visitors' kernels. One whose page is still rendering is never culled: it works
        for its visitor, yet the culler may see it idle with no connection and shut it down
        mid-start (seen when a class's starts outlasted the cull timeout). After shutdowns the
        server frees what the kernels left in reference cycles, which Python's collector reaches
        seldom (~1.5 MiB a visitor, until then), and hands its freed heap back to the system
        (glibc keeps it otherwise)."""

        _trim: asyncio.TimerHandle | None = None

        async def cull_kernel_if_idle(self, kernel_id: str) -> None:
            if kernel_id not in self.parent.reserved:
                await super().cull_kernel_if_idle(kernel_id)

        async def shutdown_kernel(self, kernel_id: str, now: bool = False, restart: bool = False) -> None:
            await super().shutdown_kernel(kernel_id, now=now, restart=restart)
            if self._trim is None:  # once for the kernels shut down together
                self._trim = asyncio.get_running_loop().call_later(1.0, self._trim_heap)

        def _trim_heap(self) -> None:
            self._trim = None
            gc.collect()
            trim_heap()

    class _ReservedKernel:
        """The kernel manager as the page handler sees it: the visitor's kernel is started under
        the id reserved at admission, so that it is counted once, starting or started."""

        def __init__(self, manager: Any, kernel_id: str) -> None:
            self._manager, self._kernel_id = manager, kernel_id

        def __getattr__(self, name: str) -> Any:
            return getattr(self._manager, name)

        async def start_kernel(self, *args: Any, **kwargs: Any) -> str:
            return await ensure_async(self._manager.start_kernel(*args, kernel_id=self._kernel_id,
                                                                 **kwargs))

    class FullAwareVoilaHandler(TornadoVoilaHandler):
        """The notebook's page; past ``max_visitors`` visitors, the "full" page instead."""

        async def get(self, path: str | None = None) -> None:
            app: ClassVoila = self.settings["voila"]
            visitors = app.visitors()
            if app.max_visitors and visitors >= app.max_visitors:
                self.set_status(503)
                self.set_header("Retry-After", "60")
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.set_header("Cache-Control", "no-store")
                app.log.warning("app full: %d visitors, one more refused", visitors)
                self.finish(FULL_PAGE.format(
                    visitors="1 visitor is" if visitors == 1 else f"{visitors} visitors are"))
                return
            # Admitted: counted from now on (tornado runs one handler at a time up to an await,
            # so a class arriving at once is counted one by one), though its kernel starts later.
            kernel_id = str(uuid.uuid4())
            app.reserved.add(kernel_id)
            self._reserved = _ReservedKernel(self.settings["kernel_manager"], kernel_id)
            try:
                async with app.starting:
                    await super().get(path)
                    app.log.info("Page served: kernel %s", kernel_id)
            finally:
                app.reserved.discard(kernel_id)  # live now (listed), or failed to start

        @property
        def kernel_manager(self) -> Any:
            return getattr(self, "_reserved", None) or self.settings["kernel_manager"]

    class ClassVoila(Voila):
        max_visitors = Int(0, config=True, help="Live kernels at most (0: no limit).")
        max_starts = Int(0, config=True, help="Pages that start their kernel at once, at most "
                                              "(0: one per CPU core).")
        KernelManager = ClassKernelManager

        def initialize(self, argv: list[str] | None = None) -> None:
            self.reserved: set[str] = set()
            super().initialize(argv)
            # A class arriving at once: the starts take turns (first come, first served) rather
            # than share the cores all together, so that the first visitors get their page
            # early, not all near the end, and their slider moves do not queue behind a room's
            # kernel starts. The last one waits as long (the same work in all).
            self.starting = asyncio.Semaphore(self.max_starts or cpu_cores())
            self.voila_configuration.multi_kernel_manager_class = self.KernelManager

        def visitors(self) -> int:
            """Visitors' kernels, live or admitted and starting, less a preheated pool's unused
            ones (a pooled kernel taken by a visitor is counted twice while its page renders)."""
            km = self.kernel_manager
            pooled = sum(len(pool) for pool in getattr(km, "_pools", {}).values())
            return max(0, len(set(km.list_kernel_ids()) | self.reserved) - pooled)

        def init_handlers(self) -> list:
            ours = {TornadoVoilaHandler: FullAwareVoilaHandler,
                    VoilaKernelWebsocketHandler: KernelWebsocketHandler}
            # Loaded now what the first kernel start loads once and keeps (the kernel's spec,
            # read through ipykernel and so IPython; the machine's addresses, through psutil):
            # ~4 MiB that the server holds from its first visitor on, so that its size before a
            # class is the size it returns to after one.
            self.kernel_spec_manager.get_kernel_spec(NATIVE_KERNEL_NAME)  # the notebook's kernel
            local_ips()
            return [(h[0], ours.get(h[1], h[1]), *h[2:]) for h in super().init_handlers()]

    return ClassVoila


def voila_args(opts: argparse.Namespace) -> list[str]:
    """The Voila command line for these options."""
    local = opts.host in LOCAL_HOSTS
    args = [str(NOTEBOOK), "--no-browser", "--template=offline", f"--Voila.ip={opts.host}",
            f"--port={opts.port}",
            # A traceback shows the server's paths and code: only to someone on this machine.
            f"--show_tracebacks={local}",
            f"--ClassVoila.max_visitors={opts.max_visitors}",
            f"--ClassVoila.max_starts={opts.starts}",
            f"--MappingKernelManager.cull_idle_timeout={opts.cull_idle}",
            f"--MappingKernelManager.cull_interval={opts.cull_interval}",
            f"--MappingKernelManager.cull_connected={opts.cull_connected}",
            # A dead kernel is removed (the page then says so), not restarted without its widgets.
            "--KernelRestarter.restart_limit=0",
            *(f"--VoilaConfiguration.extension_denylist={x}" for x in DENY_EXTENSIONS)]
    if opts.pool:
        # Preheated kernels have run the notebook before anyone asks (Voila: incompatible with
        # progressive rendering, which is off by default).
        args += ["--preheat_kernel=True", f"--pool_size={opts.pool}"]
    return args


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="app/serve.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: everyone)")
    p.add_argument("--port", type=int, default=8866)
    p.add_argument("--max-visitors", type=int, default=20,
                   help="live kernels at most; the next visitor gets the 'full' page (0: no limit)")
    p.add_argument("--cull-idle", type=int, default=600,
                   help="seconds after which an idle kernel is shut down (0: never)")
    p.add_argument("--cull-interval", type=int, default=60, help="seconds between idle checks")
    p.add_argument("--cull-connected", type=int, choices=(0, 1), default=0,
                   help="1: also cull kernels whose tab is still open (their page then offers a reload)")
    p.add_argument("--pool", type=int, default=0, help="preheated kernels kept ready (0: none)")
    p.add_argument("--starts", type=int, default=0,
                   help="pages that start their kernel at once; the others wait their turn "
                        "(0: one per CPU core)")
    opts, rest = p.parse_known_args(argv)
    for name in ("max_visitors", "cull_idle", "cull_interval", "pool", "starts"):
        if getattr(opts, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be 0 or more, not {getattr(opts, name)}")
    if opts.cull_idle and opts.cull_interval <= 0:
        p.error("--cull-interval must be positive when --cull-idle is set")
    opts.cull_connected = bool(opts.cull_connected)
    return opts, rest


def main(argv: list[str] | None = None) -> None:
    # make app runs the server on the C library's malloc (PYTHONMALLOC=malloc): once a class has
    # gone, trim_heap hands back its freed pages, where Python's allocator keeps every 1 MiB
    # arena that still holds an object (~20 MiB after 20 visitors at once). The kernels keep
    # Python's allocator, quicker for their figures.
    os.environ.pop("PYTHONMALLOC", None)
    opts, rest = parse(sys.argv[1:] if argv is None else argv)
    os.environ["DYNACPPO_RUNS"] = prepare_runs()  # the kernels inherit it
    print(f"app: browsing runs in {os.environ['DYNACPPO_RUNS']}", flush=True)
    make_voila_class().launch_instance(voila_args(opts) + rest)


if __name__ == "__main__":
    main()
