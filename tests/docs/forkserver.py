"""A fork server for the docs test: ``scitune`` commands start in milliseconds instead of seconds.

Every ``scitune ...`` line of the docs would otherwise pay Python's start-up and the import of torch and
transformers (3-6 s here) before doing a second of work. The docs test puts a ``scitune`` shim first on the PATH;
the shim hands its arguments, working folder, environment and standard streams (as file descriptors) to this
server over a Unix socket; the server, which imported scitune, torch and transformers once and never computes,
forks a child that runs ``scitune.cli.main(argv)`` in that folder with those streams and that environment, and
reports its exit status. The command line is exactly the one in the docs; only the process start differs.
``SCITUNE_DOCS_REAL_CLI=1`` turns the shim off (every line then starts the real entry point).

Signals: the shim forwards SIGTERM/SIGINT/SIGHUP to the child (a background server stops when its block's process
group is stopped), and the server kills a child whose shim went away.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import traceback
from pathlib import Path

SHIM = """#!{python} -I
import json, os, signal, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({path!r})
msg = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
socket.send_fds(s, [struct.pack("!I", len(msg)) + msg], [0, 1, 2])
def recv(n):
    buf = b""
    while len(buf) < n:
        part = s.recv(n - len(buf))
        if not part:
            sys.exit("scitune shim: the docs fork server went away")
        buf += part
    return buf
pid = struct.unpack("!i", recv(4))[0]
def forward(sig, frame):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, forward)
sys.exit(struct.unpack("!i", recv(4))[0])
"""


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    (size,) = struct.unpack("!I", data[:4])
    body = data[4:]
    while len(body) < size:
        part = conn.recv(size - len(body))
        if not part:
            raise ConnectionError("request cut short")
        body += part
    return json.loads(body), fds


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the command, then leave without returning into the server."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own streams, as a new process has them)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = ["scitune", *request["argv"]]
        from scitune.cli import main

        code = main(list(request["argv"]))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 (reported like an uncaught error of a real process)
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code if isinstance(code, int) else 1)


def _watch(conn: socket.socket, pid: int) -> None:
    """Report the child's exit status to its shim; kill the child if the shim goes away first."""
    with conn:
        conn.sendall(struct.pack("!i", pid))
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                conn.sendall(struct.pack("!i", code if code >= 0 else 128 - code))
                return
            readable, _, _ = select.select([conn], [], [], 0.1)
            if readable and not conn.recv(1, socket.MSG_PEEK):  # the shim is gone: so is its command
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return


def serve(path: str) -> None:
    """Import what commands need, then fork a child per request until killed."""
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import scitune.cli.common  # noqa: F401
    import scitune.loader  # noqa: F401
    import scitune.processor  # noqa: F401

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = sock.accept()
        try:
            request, fds = _recv_request(conn)
        except (OSError, ValueError, ConnectionError):
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            sock.close()
            conn.close()
            _child(request, fds)
        for fd in fds:
            os.close(fd)
        threading.Thread(target=_watch, args=(conn, pid), daemon=True).start()


def write_shim(bin_dir: Path, socket_path: str) -> Path:
    """A ``scitune`` executable in ``bin_dir`` that runs its command through the server at ``socket_path``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "scitune"
    shim.write_text(SHIM.format(python=sys.executable, path=socket_path))
    shim.chmod(0o755)
    return shim


if __name__ == "__main__":
    serve(sys.argv[1])
