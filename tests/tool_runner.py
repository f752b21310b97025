"""Runs Python tools as a user runs them (``python SCRIPT ARGS`` or ``python -m MODULE ARGS``:
a fresh process, its own argv, working directory, environment, standard streams and exit code)
without paying for importing torch and the OpenMMLab stack at every start.

A zygote process imports the modules every run of our tools imports (``PRELOAD``), runs nothing
else, and forks one child per run. The child detaches stdin, points stdout and stderr at files,
sets argv, ``sys.path[0]``, the working directory and the environment, runs the script as
``__main__`` and ends as an interpreter ends (``SystemExit``'s code, 1 and a traceback for an
exception, atexit handlers run, streams flushed). What a fork cannot give is left to real
subprocesses: tests that signal a process group, launchers (``dist_train.sh``, Slurm, torchrun)
and the tests of what importing does (tests/test_plugin.py).

Measured on 2 cores: a tool start costs about 0.1 s here instead of 6-10 s of imports.
"""
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Dict, Optional, Sequence

# what `import convmlp_mm` and the registries' scope imports load in every run of our tools
PRELOAD = ('torch', 'torchvision', 'mmengine.runner', 'mmcv.ops', 'mmdet.models', 'mmseg.models',
           'mmpretrain.models', 'timm', 'convmlp_mm', 'convmlp_mm.cli')
# variables that the interpreter or the preloaded modules read when they start: a run that sets
# them differently from this process gets a real subprocess
READ_AT_START = ('PYTHONPATH', 'PYTHONHASHSEED', 'PYTHONWARNINGS', 'PYTHONSAFEPATH', 'PYTHONNOUSERSITE',
                 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'CUDA_VISIBLE_DEVICES', 'TORCH_HOME', 'XDG_CACHE_HOME')


def _serve(reply_fd: int) -> None:  # pragma: no cover (runs in the zygote)
    import atexit
    import importlib
    import importlib.util
    import runpy
    import traceback
    for name in PRELOAD:  # those installed: .venv-clients has no mmpretrain
        if importlib.util.find_spec(name.split('.')[0]) is not None:
            importlib.import_module(name)
    replies = os.fdopen(reply_fd, 'w', buffering=1)
    replies.write('ready\n')
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid:
            replies.write(f'{pid}\n')
            _, status = os.waitpid(pid, 0)
            replies.write(f'{os.waitstatus_to_exitcode(status)}\n')
            continue
        # the child: the process the user's `python ...` would have started
        os.setsid()
        replies.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request['stdout']), (2, request['stderr'])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.stdin = open(0, closefd=False)
        os.chdir(request['cwd'])
        os.environ.clear()
        os.environ.update(request['env'])
        target, args = request['target'], request['args']
        code = 0
        try:
            if target.startswith('-m '):
                sys.argv = [target[3:], *args]
                sys.path[0] = request['cwd']
                runpy.run_module(target[3:], run_name='__main__', alter_sys=True)
            else:
                sys.argv = [target, *args]
                sys.path[0] = os.path.dirname(os.path.abspath(target))
                runpy.run_path(target, run_name='__main__')
        except SystemExit as exit_:
            code = exit_.code
        except BaseException:  # what the interpreter prints for an uncaught exception
            traceback.print_exc()
            code = 1
        if code is not None and not isinstance(code, int):  # sys.exit('message')
            print(code, file=sys.stderr)
            code = 1
        # the interpreter's own exit: atexit handlers (logging's flush among them), the streams;
        # not the C libraries' exit handlers, which may wait for threads of the zygote that a fork
        # does not copy (onnxruntime's thread pool hangs there)
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)


class ToolRunner:
    """One zygote per test process; ``run`` serves one tool run at a time."""

    def __init__(self):
        self.started_with = {name: os.environ.get(name) for name in READ_AT_START}
        read, write = os.pipe()
        self._lock = threading.Lock()
        start = (f'import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); '
                 f'import tool_runner; sys.path.pop(0); tool_runner._serve({write})')
        self._proc = subprocess.Popen([sys.executable, '-c', start], stdin=subprocess.PIPE, text=True,
                                      pass_fds=(write, ))
        os.close(write)
        self._replies = os.fdopen(read, 'r', buffering=1)
        self._ready = False  # the zygote imports while the caller goes on; run() waits for it

    def _readline(self, timeout: float) -> Optional[str]:
        ready, _, _ = select.select([self._replies], [], [], timeout)
        return self._replies.readline().strip() if ready else None

    def run(self, command: Sequence, cwd, env: Optional[Dict[str, str]] = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
        """``subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)`` for a
        command ``[sys.executable, SCRIPT, ...]`` or ``[sys.executable, '-m', MODULE, ...]``."""
        command = [str(c) for c in command]
        assert command[0] == sys.executable, command
        target, args = (f'-m {command[2]}', command[3:]) if command[1] == '-m' else (command[1], command[2:])
        with self._lock, tempfile.TemporaryDirectory() as streams:
            if not self._ready:
                assert self._readline(600) == 'ready', 'the tool zygote did not start'
                self._ready = True
            request = dict(target=target, args=args, cwd=str(cwd), env=dict(os.environ if env is None else env),
                           stdout=os.path.join(streams, 'out'), stderr=os.path.join(streams, 'err'))
            self._proc.stdin.write(json.dumps(request) + '\n')
            self._proc.stdin.flush()
            pid = int(self._readline(60))
            code = self._readline(timeout)
            if code is None:
                os.killpg(pid, signal.SIGKILL)
                self._readline(60)
                raise subprocess.TimeoutExpired(command, timeout)
            out, err = (open(os.path.join(streams, name)).read() for name in ('out', 'err'))
        return subprocess.CompletedProcess(command, int(code), out, err)

    def close(self) -> None:
        self._proc.stdin.close()
        if not self._ready:  # never used: no need to wait for its imports
            self._proc.kill()
        self._proc.wait(60)


def free_port() -> int:
    """A TCP port for a launcher's rendezvous: free now, and below the kernel's ephemeral range, so
    that no socket gets it before the launcher binds it (``bind(0)`` and outgoing connections, gloo's
    between the ranks of a parallel test among them, take ports from that range). Drawn at random
    from the system's entropy, so parallel test processes seeded alike draw different ports."""
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            first_ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768  # Linux's default
    for port in random.SystemRandom().sample(range(10000, first_ephemeral), 100):
        with socket.socket() as probe:
            try:
                probe.bind(('', port))
            except OSError:
                continue
            return port
    raise RuntimeError(f'no free TCP port between 10000 and {first_ephemeral} after 100 tries')


_runner: Optional[ToolRunner] = None


def start() -> None:
    """Starts this process's zygote now, so that it imports while other work goes on."""
    global _runner
    if _runner is None:
        _runner = ToolRunner()


def run(command: Sequence, cwd, env: Optional[Dict[str, str]] = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """``subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)``;
    a Python script or module runs in a child of this process's zygote (started at the first call)."""
    command = [str(c) for c in command]
    start()
    if (command[0] != sys.executable or not (command[1] == '-m' or command[1].endswith('.py'))
            or any((env or os.environ).get(name) != value for name, value in _runner.started_with.items())):
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return _runner.run(command, cwd, env, timeout)


def close() -> None:
    global _runner
    if _runner is not None:
        _runner.close()
        _runner = None
