"""``python -m dynacppo_lite bench app``: the web app (``make app``) under a class of visitors.

For each N of ``--visitors``, a fresh ``make app`` (``APP_MAX_VISITORS=N``, its own port) and N
visitors who all arrive at once, each doing what a browser does, over HTTP and Voila's kernel
websocket (no browser: the visitors' own rendering runs on their machines, not on the server):

1. GET the page: Voila starts a kernel and runs the notebook; the page holds the kernel id and
   the explorers' widget views;
2. open the kernel's websocket and ask for the widgets' state (``jupyter.widget.control``):
   what the page's scripts need to draw the explorers. **first render** = 1 + 2;
3. move the first slider of each explorer by one step and wait for that explorer's new image
   from the kernel: **redraw**, per slider move, while the others are still arriving.

Then, the N visitors still connected: the server's memory (PSS of the server and its kernels:
shared libraries counted once), the CPU seconds the server and its kernels used per visitor (the
same on a busy machine), what visitor N+1 gets (the "full" page: HTTP 503), and, with
``--after-cull``, the memory once every visitor has left and the idle kernels were culled.

Writes a markdown table to stdout and to ``--out/app.md``, the numbers to ``--out/app.json``.
The machine is shared: each visitor costs about half a GiB; the suite refuses an N whose
kernels would not fit in the memory available now.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dynacppo_lite.bench.common import command_line, markdown_table, write_results
from dynacppo_lite.figures import project_root

SLIDERS = ("IntSliderModel", "FloatSliderModel", "FloatLogSliderModel")
#: A visitor's share of the server's memory (measured: ~0.35 GiB PSS, 0.5 GiB resident per kernel):
#: the suite refuses an N that would not fit.
KERNEL_GIB = 0.4


@dataclass
class Visit:
    """One visitor's numbers (seconds from arriving)."""

    status: int = 0
    first_render_s: float | None = None
    redraw_s: list[float] = field(default_factory=list)
    explorers: int = 0
    error: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _message(msg_type: str, content: dict[str, Any], session: str,
             metadata: dict[str, Any] | None = None) -> str:
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "bench",
              "session": session, "date": "", "version": "5.3"}
    return json.dumps({"header": header, "parent_header": {}, "metadata": metadata or {}, "content": content,
                       "channel": "shell", "buffers": []})


def _decode(frame: str | bytes) -> dict[str, Any]:
    """A message of jupyter_server's default websocket protocol (JSON text, or binary with
    buffers: a count, offsets, the JSON, the buffers)."""
    if isinstance(frame, str):
        return json.loads(frame)
    n = struct.unpack("!I", frame[:4])[0]
    offsets = [*struct.unpack(f"!{n}I", frame[4:4 + 4 * n]), len(frame)]
    msg = json.loads(frame[offsets[0]:offsets[1]])
    msg["buffers"] = [frame[a:b] for a, b in zip(offsets[1:-1], offsets[2:], strict=True)]
    return msg


class KernelSocket:
    """A visitor's websocket to its kernel, as the page's scripts open it."""

    def __init__(self, ws: Any, session: str) -> None:
        self.ws, self.session = ws, session

    @classmethod
    async def open(cls, base_ws: str, kernel_id: str) -> KernelSocket:
        from tornado.websocket import websocket_connect

        session = uuid.uuid4().hex
        ws = await websocket_connect(f"{base_ws}api/kernels/{kernel_id}/channels?session_id={session}",
                                     max_message_size=256 * 1024 * 1024)
        return cls(ws, session)

    def send(self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self.ws.write_message(_message(msg_type, content, self.session, metadata))

    async def wait_for(self, match: Any, timeout: float) -> dict[str, Any]:
        """The next message for which ``match(msg)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await asyncio.wait_for(self.ws.read_message(), deadline - time.monotonic())
            if frame is None:
                raise ConnectionError("the kernel's websocket closed")
            msg = _decode(frame)
            if match(msg):
                return msg

    async def widget_states(self, timeout: float) -> dict[str, Any]:
        comm = uuid.uuid4().hex
        self.send("comm_open", {"comm_id": comm, "target_name": "jupyter.widget.control", "data": {}},
                  {"version": "1.0.0"})  # ipywidgets 8's control protocol
        self.send("comm_msg", {"comm_id": comm, "data": {"method": "request_states"}})
        msg = await self.wait_for(lambda m: m["msg_type"] == "comm_msg"
                                  and m["content"]["comm_id"] == comm, timeout)
        return msg["content"]["data"]["states"]

    def close(self) -> None:
        self.ws.close()


def _children(states: dict[str, Any], model_id: str) -> list[str]:
    return [c.removeprefix("IPY_MODEL_") for c in states[model_id]["state"].get("children", [])]


def explorer_parts(states: dict[str, Any], view_id: str) -> tuple[str, str, dict] | None:
    """(first slider, image, slider state) of an explorer's layout: controls | image + summary."""
    controls, figure = _children(states, view_id)[:2]
    sliders = [c for c in _children(states, controls) if states[c]["model_name"] in SLIDERS]
    images = [c for c in _children(states, figure) if states[c]["model_name"] == "ImageModel"]
    if not sliders or not images:
        return None
    return sliders[0], images[0], states[sliders[0]]["state"]


def _moved(state: dict[str, Any]) -> float:
    """The slider's value one step on (back if at the top)."""
    v, step = state["value"], state.get("step") or 1
    if "base" in state:  # a log slider: the step is in the exponent
        up = v * state["base"] ** step
        return up if up <= state["base"] ** state["max"] else v / state["base"] ** step
    return v + step if v + step <= state["max"] else v - step


async def visit(base: str, visit_: Visit, sockets: list[KernelSocket], timeout: float) -> None:
    """One visitor: the page, the widgets' state, one move of each explorer's first slider."""
    from tornado.httpclient import AsyncHTTPClient

    t0 = time.monotonic()
    try:
        page = await AsyncHTTPClient().fetch(base, request_timeout=timeout, raise_error=False)
        visit_.status = page.code
        if page.code != 200:
            visit_.error = f"HTTP {page.code}"
            return
        html = page.body.decode()
        kernel = re.search(r'"kernelId":\s*"([0-9a-f-]+)"', html)
        views = re.findall(r'"model_id":\s*"([0-9a-f]{32})"', html)
        if kernel is None or not views:
            visit_.error = "no kernel or no widgets in the page"
            return
        ws = await KernelSocket.open(base.replace("http", "ws", 1), kernel.group(1))
        sockets.append(ws)
        states = await ws.widget_states(timeout)
        visit_.first_render_s = time.monotonic() - t0
        visit_.explorers = len(views)
        for view in views:
            parts = explorer_parts(states, view)
            if parts is None:
                continue
            slider, image, state = parts
            t1 = time.monotonic()
            ws.send("comm_msg", {"comm_id": slider, "data": {"method": "update", "state": {
                "value": _moved(state)}, "buffer_paths": []}})
            await ws.wait_for(lambda m, image=image: m["msg_type"] == "comm_msg"
                              and m["content"]["comm_id"] == image
                              and m["content"]["data"].get("method") == "update", timeout)
            visit_.redraw_s.append(time.monotonic() - t1)
    except Exception as exc:  # a visitor that failed is a result, not a crash of the suite
        visit_.error = f"{type(exc).__name__}: {exc}"[:200]


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def server_pss_mib(pid: int) -> tuple[float, int]:
    """PSS of a process tree (MiB; shared pages split between their users) and its kernels."""
    total, kernels = 0.0, 0
    for p in process_tree(pid):
        try:
            total += p.memory_full_info().pss / 2**20
            kernels += "ipykernel_launcher" in " ".join(p.cmdline())
        except psutil.Error:
            pass
    return total, kernels


def kernel_count(pid: int) -> int:
    return server_pss_mib(pid)[1]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process tree's live processes."""
    total = 0.0
    for p in process_tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def wait_pool_warm(pid: int, pool: int, timeout: float = 600, window_s: float = 5.0) -> float:
    """Wait until preheated kernels exist and the server's tree is idle (under 0.2 CPU over
    ``window_s``): the class arrives after the pool is warm. Voila may lose a pool kernel that
    dies while starting (seen once in 20), so an idle tree with fewer than ``pool`` kernels also
    counts as warm. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        before = tree_cpu_s(pid)
        time.sleep(window_s)
        if kernel_count(pid) >= min(pool, 1) and tree_cpu_s(pid) - before < 0.2 * window_s:
            return time.monotonic() - t0
    raise RuntimeError(f"bench app: the pool of {pool} kernels was not warm within {timeout:.0f} s")


class AppServer:
    """``make app`` on a free port, in its own session (make and Voila stop together)."""

    def __init__(self, *, max_visitors: int, cull_idle: int, cull_interval: int, log: Path,
                 host: str = "127.0.0.1", runs: str | None = None, pool: int = 0,
                 starts: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{self.port}/"
        env = {**os.environ, **({"DYNACPPO_RUNS": runs} if runs else {})}
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["make", "-s", "app", f"APP_PORT={self.port}", f"APP_HOST={host}",
             f"APP_MAX_VISITORS={max_visitors}", f"APP_CULL_IDLE={cull_idle}",
             f"APP_CULL_INTERVAL={cull_interval}", f"APP_POOL={pool}", f"APP_STARTS={starts}"],
            cwd=project_root(), env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_up(self, timeout: float = 300) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "voila/static/", timeout=2)
                return
            except urllib.error.HTTPError:  # a 404 answer: it is up
                return
            except OSError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start: see {self.log.name}") from exc
                time.sleep(0.5)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        except ProcessLookupError:  # it had stopped
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


async def load(server: AppServer, n: int, *, timeout: float, after_cull: float | None,
               settle_s: float = 5.0) -> dict[str, Any]:
    """N visitors at once on a running server; the row of the table."""
    from tornado.httpclient import AsyncHTTPClient

    # Tornado's client queues all but 10 requests at once (and times the rest out): a class is
    # N browsers, each with its own connection.
    AsyncHTTPClient.configure(None, max_clients=max(10, 2 * n + 2))
    idle_mib, _ = server_pss_mib(server.proc.pid)
    cpu0 = tree_cpu_s(server.proc.pid)
    visits = [Visit() for _ in range(n)]
    sockets: list[KernelSocket] = []
    t0 = time.monotonic()
    await asyncio.gather(*(visit(server.url, v, sockets, timeout) for v in visits))
    all_in_s = time.monotonic() - t0
    await asyncio.sleep(settle_s)
    loaded_mib, kernels = server_pss_mib(server.proc.pid)
    # CPU seconds do not depend on what else runs on the machine: the cost of a visitor's start
    # and slider moves, comparable across runs where the timings are not.
    cpu_s = tree_cpu_s(server.proc.pid) - cpu0
    extra = Visit()  # visitor N+1, the N still connected
    await visit(server.url, extra, sockets, timeout)
    alive = server.proc.poll() is None and kernel_count(server.proc.pid) >= 1
    renders = [v.first_render_s for v in visits if v.first_render_s is not None]
    redraws = [r for v in visits for r in v.redraw_s]
    row: dict[str, Any] = {
        "N": n, "served": f"{len(renders)}/{n}",
        "first render median s": statistics.median(renders) if renders else None,
        "first render worst s": max(renders) if renders else None,
        "redraw median s": statistics.median(redraws) if redraws else None,
        "redraw worst s": max(redraws) if redraws else None,
        "redraws": f"{len(redraws)}/{sum(v.explorers for v in visits)}",
        "idle MiB": idle_mib, "loaded MiB": loaded_mib, "kernels": kernels,
        "MiB per visitor": (loaded_mib - idle_mib) / n, "CPU s per visitor": cpu_s / n,
        "visitor N+1": {503: "503 full page"}.get(extra.status, f"HTTP {extra.status}"),
        "server up": "yes" if alive else "NO", "all in s": all_in_s,
        "errors": sorted({v.error for v in visits if v.error}),
    }
    for ws in sockets:  # every tab closes
        ws.close()
    if after_cull is not None:
        deadline = time.monotonic() + after_cull
        while kernel_count(server.proc.pid) and time.monotonic() < deadline:
            await asyncio.sleep(5)
        row["after cull MiB"] = server_pss_mib(server.proc.pid)[0]
        row["after cull kernels"] = kernel_count(server.proc.pid)
        row["after cull / idle"] = row["after cull MiB"] / idle_mib
    return row


COLUMNS = ["N", "served", "first render median s", "first render worst s", "redraw median s",
           "redraw worst s", "idle MiB", "loaded MiB", "MiB per visitor", "CPU s per visitor",
           "visitor N+1", "server up"]


def run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    need_gib = n * KERNEL_GIB
    free_gib = psutil.virtual_memory().available / 2**30
    if need_gib > free_gib - 2:
        raise SystemExit(f"bench app: {n} visitors need ~{need_gib:.0f} GiB, {free_gib:.1f} GiB "
                         "available now")
    server = AppServer(max_visitors=n, cull_idle=args.cull_idle, cull_interval=args.cull_interval,
                       log=Path(tempfile.gettempdir()) / f"dynacppo_bench_app_voila_{n}.log",
                       pool=args.pool, runs=args.runs, starts=args.starts)
    try:
        server.wait_up()
        time.sleep(3)  # the idle size once the server settled
        if args.pool:
            print(f"bench app: pool of {args.pool} warm after "
                  f"{wait_pool_warm(server.proc.pid, args.pool):.0f} s", flush=True)
        row = asyncio.run(load(server, n, timeout=args.timeout,
                               after_cull=args.cull_idle + 3 * args.cull_interval + 30
                               if args.after_cull else None))
    finally:
        server.stop()
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dynacppo_lite bench app",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--visitors", type=int, nargs="+", default=[5, 10, 20, 30])
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a visitor waits at most")
    p.add_argument("--pool", type=int, default=0, help="APP_POOL: preheated kernels")
    p.add_argument("--starts", type=int, default=0,
                   help="APP_STARTS: pages that start their kernel at once (0: one per core)")
    p.add_argument("--runs", default=None, help="DYNACPPO_RUNS for the app (default: its own)")
    p.add_argument("--after-cull", action="store_true",
                   help="after the visitors leave, wait for the cull and measure the memory")
    p.add_argument("--cull-idle", type=int, default=60, help="APP_CULL_IDLE for the run")
    p.add_argument("--cull-interval", type=int, default=10, help="APP_CULL_INTERVAL for the run")
    p.add_argument("--out", type=Path, default=Path("figures/benchmarks/app"))
    args = p.parse_args(argv)
    if any(n < 1 for n in args.visitors):
        p.error(f"--visitors must be 1 or more, not {args.visitors}")
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run(n, args) for n in args.visitors]
    columns = COLUMNS + (["after cull MiB", "after cull / idle"] if args.after_cull else [])
    write_results(args.out, "app", "The web app under N visitors arriving at once",
                  markdown_table(rows, columns), rows,
                  command_line("app", argv if argv is not None else []), started)
    return 0 if all(r["server up"] == "yes" for r in rows) else 1
