"""`python -m qsight ARGS` (and `python -c CODE`) processes forked from a warm interpreter.

A fresh interpreter spends about 6 s importing torch, torchvision (which pulls in torch._dynamo), timm,
MLflow, W&B and Qiskit before qsight does any work; the suite starts about a hundred CLI processes. Here
one server process per test worker imports them once and forks a process for every command. Each is
still its own process, with its own pid, working folder, environment, argument list and output files,
exiting or killed as a user's would be: only the import time is saved.

What a fresh interpreter does at start-up and exit, the child does too (and it leaves alone what the
server made on import, such as W&B's temporary media folder, shared by every child): ``PYTHONPATH``
entries go first on ``sys.path``, the process is the main process to libraries that ask, torch's thread
count follows its ``OMP_NUM_THREADS``, NumPy's global generator gets fresh entropy (the server's would be
shared by every child), non-daemon threads are joined and ``atexit`` handlers run before it exits, and an
uncaught ``KeyboardInterrupt`` ends it by SIGINT.

``QSIGHT_TEST_FRESH=1`` starts every command in a fresh interpreter instead (the same results, slower);
``QSIGHT_TEST_LOG=FILE`` appends a JSON line per command: its arguments, CPU and wall seconds, exit code.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: What every `qsight run` imports: the server imports it once.
PRELOAD = ("torch", "torchvision", "torchvision.transforms.v2", "timm", "mlflow", "mlflow.pyfunc",
           "mlflow.store.tracking.sqlalchemy_store", "sqlalchemy.dialects.sqlite", "alembic.command", "wandb",
           "wandb.sdk.launch", "wandb.apis.public", "git", "opentelemetry.sdk.metrics", "qiskit", "qiskit_aer",
           "qiskit_ibm_runtime", "qiskit_ibm_runtime.transpiler.passes", "qsight.cli.app", "qsight.experiment.build",
           "qsight.training.trainer", "qsight.data.synthetic_set", "qsight.models.backbones", "qsight.quantum.head",
           "qsight.sinks.mlflow_sink", "qsight.sinks.wandb_sink")
FRESH = os.environ.get("QSIGHT_TEST_FRESH", "") not in ("", "0")
LOG = os.environ.get("QSIGHT_TEST_LOG", "")  # a file: one JSON line per command (argv, CPU and wall seconds)
SOCKET = "QSIGHT_LAUNCHER_SOCKET"
POLL = 0.02  # seconds between looks at a child's status file

# ---- the server (its own process: ``python -m tests.launcher``) -------------------------------------------------


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _finish() -> None:
    """What the interpreter does on the way out: join non-daemon threads, run atexit handlers, flush."""
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _become(job: dict[str, Any]) -> None:
    """In the forked child: become `python ARGV` started in `cwd` with `env`, then exit."""
    if job["new_session"]:
        os.setsid()
    stdio = job.get("stdio_pid")
    paths = [f"/proc/{stdio}/fd/{n}" for n in (0, 1, 2)] if stdio else [os.devnull, job["out"], job["err"]]
    for fd, path in enumerate(paths):
        target = os.open(path, os.O_RDONLY) if fd == 0 else os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    sys.path[:0] = [os.path.abspath(p) for p in job["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    importlib.invalidate_caches()
    _leave_server_folders()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    _set_threads(job["env"])
    code = 0
    try:
        _run_main(job["argv"])
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        _finish()
    except SystemExit as exc:
        code = _exit_code(exc)
    os._exit(code)


def _set_threads(env: dict[str, str]) -> None:
    """torch's intra-op threads as a fresh interpreter with `env` sets them (the fork keeps the server's):
    OMP_NUM_THREADS, at most the machine's default."""
    if "torch" in sys.modules:
        wanted = env.get("OMP_NUM_THREADS", "")
        sys.modules["torch"].set_num_threads(min(int(wanted), _THREADS) if wanted.isdigit() and int(wanted) > 0
                                             else _THREADS)


_THREADS = os.cpu_count() or 1  # torch's own count where OMP_NUM_THREADS is unset (set again after preload)
_server_exit_handlers: list[Any] = []  # atexit handlers registered while the server imported PRELOAD


def _leave_server_folders() -> None:
    """Temporary folders made on import (W&B's media folder) are the server's, shared by every child:
    a child's exit must not remove them."""
    for info in weakref.finalize._registry.values():  # type: ignore[attr-defined]
        info.atexit = False
    for handler in _server_exit_handlers:
        if isinstance(getattr(handler, "__self__", None), tempfile.TemporaryDirectory):
            atexit.unregister(handler)


def _preload() -> None:
    global _THREADS
    register = atexit.register

    def recorded(func: Any, *args: Any, **kwargs: Any) -> Any:
        _server_exit_handlers.append(func)
        return register(func, *args, **kwargs)

    atexit.register = recorded
    try:
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except ImportError as exc:  # a child imports what it needs itself, as a fresh process would
                print(f"tests.launcher: not preloaded: {name}: {exc}", file=sys.stderr)
    finally:
        atexit.register = register
    if "torch" in sys.modules and "OMP_NUM_THREADS" not in os.environ:
        _THREADS = sys.modules["torch"].get_num_threads()


def _run_main(argv: list[str]) -> None:
    """What ``python ARGV`` runs: ``-m MODULE ARGS`` or ``-c CODE ARGS``."""
    option, target, *rest = argv
    if option == "-m":
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *rest]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})


def _reap(jobs: dict[int, dict[str, Any]]) -> None:
    """Write the exit code of every ended child to its status file (atomically)."""
    while jobs:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        job = jobs.pop(pid, None)
        if job is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if LOG:
            line = {"argv": job["argv"], "cpu": round(usage.ru_utime + usage.ru_stime, 2),
                    "wall": round(time.monotonic() - job["started"], 2), "code": code}
            with open(LOG, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        if "conn" in job:  # a shim waits on its connection
            with contextlib.suppress(OSError):
                job["conn"].sendall(f"exit {code}\n".encode())
            job["conn"].close()
            continue
        status_file = job["status"]
        Path(f"{status_file}.tmp").write_text(str(code))
        os.replace(f"{status_file}.tmp", status_file)


def _start(job: dict[str, Any], jobs: dict[int, dict[str, Any]], listener: socket.socket) -> int:
    pid = os.fork()
    if pid == 0:
        listener.close()
        for other in jobs.values():
            if "conn" in other:
                other["conn"].close()
        _become(job)
    jobs[pid] = {**job, "started": time.monotonic()}
    return pid


def _accept(listener: socket.socket, jobs: dict[int, dict[str, Any]]) -> None:
    """A job from `tests/warm_python.py` (a worker of torchrun): its stdio are the shim's own."""
    conn, _ = listener.accept()
    with conn.makefile("r", encoding="utf-8") as fh:
        job = json.loads(fh.readline())
    pid = _start(job, jobs, listener)
    jobs[pid]["conn"] = conn
    conn.sendall(f"{pid}\n".encode())


def serve() -> None:
    """Import `PRELOAD`, then fork a child for each job: a JSON line on stdin (answered with its pid on
    stdout), or a connection to the socket named by ``QSIGHT_LAUNCHER_SOCKET``. Exit when stdin closes."""
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.environ[SOCKET])
    listener.listen(16)
    requests, answers = sys.stdin, sys.stdout
    answers.write("ready\n")
    answers.flush()
    jobs: dict[int, dict[str, Any]] = {}
    while True:
        readable, _, _ = select.select([requests, listener], [], [], POLL)
        _reap(jobs)
        if listener in readable:
            _accept(listener, jobs)
        if requests not in readable:
            continue
        line = requests.readline()
        if not line:
            return
        pid = _start(json.loads(line), jobs, listener)
        answers.write(f"{pid}\n")
        answers.flush()


# ---- the client (in the test process) ----------------------------------------------------------------------------

_server: subprocess.Popen[str] | None = None
_server_socket = ""
_server_lock = threading.Lock()


def _running_server() -> subprocess.Popen[str]:
    """This process's server, started on first use."""
    global _server, _server_socket
    if _server is None or _server.poll() is not None:
        root = str(Path(__file__).resolve().parents[1])
        folder = tempfile.mkdtemp(prefix="qsight-launcher-")  # a short path: socket names are limited to 108 bytes
        path = _server_socket = os.path.join(folder, "server.sock")
        _server = subprocess.Popen([sys.executable, "-m", "tests.launcher"], cwd=root, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   env={**os.environ, "PYTHONPATH": root, SOCKET: path})
        assert _server.stdout is not None and _server.stdout.readline() == "ready\n", "launcher did not start"
        atexit.register(_stop_server, _server, folder)
    return _server


def shim_env() -> dict[str, str]:
    """The environment that lets `tests/warm_python.py` (torchrun's workers) fork from the server; none
    with ``QSIGHT_TEST_FRESH`` (the shim then runs a fresh interpreter)."""
    if FRESH:
        return {}
    with _server_lock:
        _running_server()
    return {SOCKET: _server_socket}


def _ask(job: dict[str, Any]) -> int:
    """Send a job to this process's server (started on first use) and return the child's pid."""
    with _server_lock:
        server = _running_server()
        stdin, stdout = server.stdin, server.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(job) + "\n")
        stdin.flush()
        return int(stdout.readline())


def _stop_server(server: subprocess.Popen[str], folder: str) -> None:
    """Close the server's input (it exits) and reap it, so its children's CPU time counts as ours; remove
    its socket's folder."""
    with contextlib.suppress(OSError, ValueError):
        if server.stdin is not None:
            server.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


class Launched:
    """A running `python ARGV`: a subset of `subprocess.Popen` (pid, poll, wait, returncode, kill) plus the
    text it wrote to stdout and stderr."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: dict[str, str], new_session: bool = False,
                 merge_output: bool = False, *, fresh: bool = FRESH) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="qsight-cli-")
        folder = Path(self._tmp.name)
        self._out, self._status = folder / "stdout", folder / "status"
        self._err = self._out if merge_output else folder / "stderr"
        self.args = [sys.executable, *argv]
        self._fresh: subprocess.Popen[bytes] | None = None
        if fresh:
            with self._out.open("ab") as out, self._err.open("ab") as err:
                self._fresh = subprocess.Popen(self.args, cwd=cwd, env=env,
                                               stdout=out, stderr=err, start_new_session=new_session)
            self.pid = self._fresh.pid
        else:
            self.pid = _ask({"argv": list(argv), "cwd": str(cwd), "env": env, "out": str(self._out),
                             "err": str(self._err), "status": str(self._status), "new_session": new_session})

    @property
    def returncode(self) -> int | None:
        if self._fresh is not None:
            return self._fresh.returncode
        return int(self._status.read_text()) if self._status.exists() else None

    def poll(self) -> int | None:
        if self._fresh is not None:
            return self._fresh.poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (negative: the signal that ended it); `subprocess.TimeoutExpired` after `timeout`."""
        if self._fresh is not None:
            return self._fresh.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.returncode) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(POLL)
        return code

    def output(self) -> tuple[str, str]:
        """stdout and stderr as written so far (the same text twice when they were merged)."""
        return _read(self._out), _read(self._err)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end (killing the process after `timeout`, as `subprocess.run` does); its output."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        return self.output()

    def completed(self, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """What `subprocess.run` returns for it: `communicate`, then exit code and output."""
        out, err = self.communicate(timeout)
        return subprocess.CompletedProcess(self.args, self.wait(), out, err)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def __del__(self) -> None:
        self._tmp.cleanup()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def launch_code(code: str, *args: str, cwd: Path, env: dict[str, str]) -> Launched:
    """Start `python -c CODE ARGS` in `cwd` with exactly `env` as its environment."""
    return Launched(["-c", code, *args], cwd, env, False, False)


if __name__ == "__main__":
    serve()
