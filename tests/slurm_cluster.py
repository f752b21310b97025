"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd on this machine.

:func:`slurm_cluster` installs Debian's ``slurmctld slurmd slurm-client munge`` when they are
missing (as root, with ``apt-get``), writes a ``slurm.conf`` and a munge key under a fresh
directory, starts the three daemons in the foreground as child processes, waits until the node
is idle and yields the environment every client (``srun``, ``sbatch``, ``scancel``,
``scontrol``) needs (``SLURM_CONF``). On exit the daemons are stopped by pid. Nothing outside
the directory is touched apart from the packages.

The cluster has one node (this machine, ``hostname -s``) in the partition ``cpu``, declared with
twice the machine's CPUs (``config_overrides``), so that a mostly idle job (one waiting for its
time limit) runs beside the others; no accounting, non-default ports, ``proctrack/linuxproc`` and
``task/none`` (so it runs in a container without cgroups).
"""
import contextlib
import os
import os.path as osp
import shutil
import socket
import subprocess
import time
from typing import Dict, Iterator

from convmlp_mm.engine.hooks import slurm_job_fields
from tool_runner import free_port

PACKAGES = ['slurmctld', 'slurmd', 'slurm-client', 'munge']


class CannotInstall(RuntimeError):
    """Slurm is missing and this machine cannot install it (not root, or no apt-get)."""
PARTITION = 'cpu'


def install() -> None:
    """Installs the Slurm and munge daemons with apt-get if they are not on this machine."""
    if all(shutil.which(tool) for tool in ('slurmctld', 'slurmd', 'srun', 'munged')):
        return
    if os.geteuid() != 0 or not shutil.which('apt-get'):
        raise CannotInstall(f'Slurm is not installed and cannot be installed here (needs root and apt-get): '
                            f'install {" ".join(PACKAGES)}')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    install = ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *PACKAGES]
    for command in (['apt-get', 'update', '-qq'], install):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise RuntimeError(f'{" ".join(command)} failed ({proc.returncode}):\n'
                               f'{proc.stdout[-2000:]}{proc.stderr[-2000:]}')


def node_memory_mb() -> int:
    """What ``slurmd -C`` says this node has (RealMemory must not exceed it)."""
    out = subprocess.run(['slurmd', '-C'], capture_output=True, text=True, check=True).stdout
    return int(out.split('RealMemory=')[1].split()[0])


def write_config(root: str, host: str) -> str:
    munge_dir = osp.join(root, 'munge')
    lines = [
        'ClusterName=convmlp-test', f'SlurmctldHost={host}', f'SlurmctldPort={free_port()}',
        f'SlurmdPort={free_port()}', 'AuthType=auth/munge', f'AuthInfo=socket={munge_dir}/munge.socket',
        'SlurmUser=root', 'SlurmdUser=root', f'StateSaveLocation={root}/state', f'SlurmdSpoolDir={root}/spool',
        f'SlurmctldPidFile={root}/slurmctld.pid', f'SlurmdPidFile={root}/slurmd.pid',
        f'SlurmctldLogFile={root}/slurmctld.log', f'SlurmdLogFile={root}/slurmd.log',
        'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none', 'MpiDefault=none',
        'SchedulerType=sched/backfill', 'SelectType=select/cons_tres', 'SelectTypeParameters=CR_CPU',
        'JobAcctGatherType=jobacct_gather/none', 'AccountingStorageType=accounting_storage/none',
        'ReturnToService=2', 'KillWait=30', 'MinJobAge=600', 'JobRequeue=1', 'SlurmdParameters=config_overrides',
        f'NodeName={host} CPUs={2 * os.cpu_count()} RealMemory={min(node_memory_mb(), 4096)} State=UNKNOWN',
        f'PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP',
    ]
    path = osp.join(root, 'slurm.conf')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def wait_until(predicate, timeout: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tails = ''.join(f'\n--- {log}:\n{open(log).read()[-3000:]}' for log in logs if osp.exists(log))
    raise RuntimeError(f'Slurm test cluster: {what} did not happen within {timeout} s{tails}')


@contextlib.contextmanager
def slurm_cluster(root: str) -> Iterator[Dict[str, str]]:
    """Runs a single-node Slurm cluster under ``root`` (a fresh directory) and yields the
    environment for its clients."""
    install()
    host = socket.gethostname().split('.')[0]
    for sub in ('munge', 'state', 'spool'):
        os.makedirs(osp.join(root, sub))
    munge_dir = osp.join(root, 'munge')
    os.chmod(root, 0o755)
    os.chmod(munge_dir, 0o755)  # munged refuses a socket directory others cannot enter
    key = osp.join(munge_dir, 'munge.key')
    with open(key, 'wb') as f:
        f.write(os.urandom(1024))
    os.chmod(key, 0o400)
    conf = write_config(root, host)
    env = dict(os.environ, SLURM_CONF=conf)
    daemons = []
    try:
        daemons.append(subprocess.Popen(
            ['munged', '-F', '--force', f'--socket={munge_dir}/munge.socket', f'--key-file={key}',
             f'--pid-file={munge_dir}/munged.pid', f'--log-file={munge_dir}/munged.log',
             f'--seed-file={munge_dir}/munged.seed'], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: osp.exists(f'{munge_dir}/munge.socket'), 30, 'munged start', [f'{munge_dir}/munged.log'])
        for daemon in ('slurmctld', 'slurmd'):
            daemons.append(subprocess.Popen([daemon, '-D'], env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))

        def idle() -> bool:
            out = subprocess.run(['sinfo', '-h', '-o', '%T'], env=env, capture_output=True, text=True).stdout
            return out.strip() == 'idle'

        wait_until(idle, 60, 'the node becoming idle', [f'{root}/slurmctld.log', f'{root}/slurmd.log'])
        yield env
    finally:
        for proc in reversed(daemons):
            proc.terminate()
        for proc in reversed(daemons):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def job_state(env: Dict[str, str], job_id: str) -> Dict[str, str]:
    """``scontrol show job``'s fields (JobState, Restarts, ExitCode, ...) on this cluster."""
    return slurm_job_fields(job_id, env)
