"""`python -m qsight ARGS` (and `python -c CODE`) processes forked from a warm interpreter.

A fresh interpreter spends about 6 s importing torch, torchvision (which pulls in torch._dynamo), timm,
MLflow, W&B and Qiskit before qsight does any work; the suite starts about a hundred CLI processes. Here
one server process per test worker (multiprocessing's forkserver) imports them once and forks a process
for every command. Each is still its own process, with its own pid, working folder, environment,
argument list and output files, exiting or killed as a user's would be: only the import time is saved.

What a fresh interpreter does at start-up and exit, the child does too (and it leaves alone what the
server made on import, such as W&B's temporary media folder, shared by every child): ``PYTHONPATH`` entries go first
on ``sys.path``, the process is the main process to libraries that ask, NumPy's global generator gets
fresh entropy (the server's would be shared by every child), non-daemon threads are joined and ``atexit``
handlers run before it exits, and an uncaught ``KeyboardInterrupt`` ends it by SIGINT.

``QSIGHT_TEST_FRESH=1`` starts every command in a fresh interpreter instead (the same results, slower).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import select
import signal
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
PRELOAD = ("torch", "torchvision", "timm", "mlflow", "wandb", "qiskit", "qiskit_aer", "qiskit_ibm_runtime",
           "mlflow.store.tracking.sqlalchemy_store", "qsight.cli.app", "qsight.experiment.build")
FRESH = os.environ.get("QSIGHT_TEST_FRESH", "") not in ("", "0")
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
    for fd, path in ((0, os.devnull), (1, job["out"]), (2, job["err"])):
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
    register = atexit.register

    def recorded(func: Any, *args: Any, **kwargs: Any) -> Any:
        _server_exit_handlers.append(func)
        return register(func, *args, **kwargs)

    atexit.register = recorded
    try:
        for name in PRELOAD:
            importlib.import_module(name)
    finally:
        atexit.register = register


def _run_main(argv: list[str]) -> None:
    """What ``python ARGV`` runs: ``-m MODULE ARGS`` or ``-c CODE ARGS``."""
    option, target, *rest = argv
    if option == "-m":
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *rest]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})


def _reap(status_files: dict[int, str]) -> None:
    """Write the exit code of every ended child to its status file (atomically)."""
    while status_files:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        path = status_files.pop(pid, None)
        if path is not None:
            Path(f"{path}.tmp").write_text(str(os.waitstatus_to_exitcode(status)))
            os.replace(f"{path}.tmp", path)


def serve() -> None:
    """Import `PRELOAD`, then fork a child for each job read from stdin (one JSON line) and answer its pid;
    exit when stdin closes."""
    _preload()
    requests, answers = sys.stdin, sys.stdout
    answers.write("ready\n")
    answers.flush()
    status_files: dict[int, str] = {}
    while True:
        readable, _, _ = select.select([requests], [], [], POLL)
        _reap(status_files)
        if not readable:
            continue
        line = requests.readline()
        if not line:
            return
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _become(job)
        status_files[pid] = job["status"]
        answers.write(f"{pid}\n")
        answers.flush()


# ---- the client (in the test process) ----------------------------------------------------------------------------

_server: subprocess.Popen[str] | None = None
_server_lock = threading.Lock()


def _ask(job: dict[str, Any]) -> int:
    """Send a job to this process's server (started on first use) and return the child's pid."""
    global _server
    with _server_lock:
        if _server is None or _server.poll() is not None:
            root = str(Path(__file__).resolve().parents[1])
            _server = subprocess.Popen([sys.executable, "-m", "tests.launcher"], cwd=root, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       env={**os.environ, "PYTHONPATH": root})
            assert _server.stdout is not None and _server.stdout.readline() == "ready\n", "launcher did not start"
        stdin, stdout = _server.stdin, _server.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(job) + "\n")
        stdin.flush()
        return int(stdout.readline())


class Launched:
    """A running `python -m qsight ARGS`: a subset of `subprocess.Popen` (pid, poll, wait, returncode, kill)
    plus the text it wrote to stdout and stderr."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: dict[str, str], new_session: bool,
                 merge_output: bool) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="qsight-cli-")
        folder = Path(self._tmp.name)
        self._out, self._status = folder / "stdout", folder / "status"
        self._err = self._out if merge_output else folder / "stderr"
        self.args = [sys.executable, *argv]
        self._fresh: subprocess.Popen[bytes] | None = None
        if FRESH:
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

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def __del__(self) -> None:
        self._tmp.cleanup()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def launch(args: Sequence[str], *, cwd: Path, env: dict[str, str], new_session: bool = False,
           merge_output: bool = False) -> Launched:
    """Start `python -m qsight ARGS` in `cwd` with exactly `env` as its environment."""
    return Launched(["-m", "qsight", *args], cwd, env, new_session, merge_output)


def launch_code(code: str, *args: str, cwd: Path, env: dict[str, str]) -> Launched:
    """Start `python -c CODE ARGS` in `cwd` with exactly `env` as its environment."""
    return Launched(["-c", code, *args], cwd, env, False, False)


if __name__ == "__main__":
    serve()
