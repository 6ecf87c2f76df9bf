"""``python tests/warm_python.py ARGS``: what ``python ARGS`` does, forked from the test worker's warm server.

torchrun starts its workers as ``python -u SCRIPT ARGS``; given this file as SCRIPT (``-m qsight ...``
as ARGS) each worker asks the server named by ``QSIGHT_LAUNCHER_SOCKET`` (`tests.launcher`) for a child
that runs ``python ARGS`` with this process's folder, environment and standard streams. This process
stays what torchrun watches: it passes on the signals it gets and exits as the child did. Without the
variable it becomes ``python ARGS`` itself. Only the standard library is imported here.
"""

import json
import os
import signal
import socket
import sys


def main() -> None:
    argv = sys.argv[1:]
    path = os.environ.get("QSIGHT_LAUNCHER_SOCKET")
    if not path:
        os.execv(sys.executable, [sys.executable, *argv])
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    job = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "stdio_pid": os.getpid(), "new_session": False}
    conn.sendall((json.dumps(job) + "\n").encode())
    answers = conn.makefile("r", encoding="utf-8")
    child = int(answers.readline())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda number, _frame: os.kill(child, number))
    line = answers.readline()
    code = int(line.split()[1]) if line.startswith("exit ") else 1
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
