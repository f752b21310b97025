"""Clusters: preemption saves at an iteration boundary and resumes to the uninterrupted weights,
a stalled rank stops the job with every rank's stacks, and the Slurm launchers run on a real
single-node Slurm (slurmctld, slurmd and munged started by this module, 2 CPU tasks)."""
import glob
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest
import torch
from mmengine.config import Config

from convmlp_mm.data import generate, generate_classification
from convmlp_mm.engine.hooks import PreemptionHook, StallWatchdogHook
from convmlp_mm.cli import DEFAULT_STALL_TIMEOUT, add_run_hooks

import tool_runner
from slurm_cluster import PARTITION, CannotInstall, install, job_state, slurm_cluster

SLURM_ONLY = pytest.mark.stack_independent(
    'Slurm job control (scontrol, srun, requeue): Slurm and mmengine are the same on both stacks; gloo on torch 2.1 '
    'is covered by test_tools and test_resume')

pytestmark = pytest.mark.slow  # trainings, torchrun, a Slurm cluster

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
CLS = osp.join(ROOT, 'configs/quickstart/convmlp-s_shapes-cls.py')
# 16 training images in batches of 2: 8 iterations an epoch; drop path on, so that the random
# state matters; validation only after the last epoch
OPTIONS = ['train_cfg.max_epochs=3', 'train_cfg.val_interval=3', 'default_hooks.logger.interval=1',
           'train_dataloader.batch_size=2', 'randomness.seed=3', 'randomness.deterministic=True',
           'model.backbone.drop_path_rate=0.1', 'val_dataloader.num_workers=0',
           'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
           'test_dataloader.persistent_workers=False']


def clean_env(**extra) -> dict:
    """This environment without Slurm's job variables (the suite may itself run in a Slurm job)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
    return dict(env, PYTHONUNBUFFERED='1', VIRTUAL_ENV=sys.prefix, **extra)


def weights_and_optimizer(path):
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    return checkpoint['state_dict'], checkpoint['optimizer']['state'], checkpoint['meta']


def assert_same_training(path, reference):
    weights, optimizer, meta = weights_and_optimizer(path)
    ref_weights, ref_optimizer, ref_meta = weights_and_optimizer(reference)
    assert (meta['epoch'], meta['iter']) == (ref_meta['epoch'], ref_meta['iter'])
    assert weights.keys() == ref_weights.keys()
    different = [k for k in weights if not torch.equal(weights[k], ref_weights[k])]
    assert not different, f'{len(different)} of {len(weights)} tensors differ, e.g. {different[:3]}'
    for a, b in zip(optimizer.values(), ref_optimizer.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def wait_for(predicate, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, f'the run ended (exit code {proc.returncode}) before {what}'
        assert time.monotonic() < deadline, f'no {what} within {timeout} s'
        time.sleep(0.05)


def logged(work_dir, pattern: str) -> bool:
    """Whether the run's log (work_dir/<timestamp>/<timestamp>.log) has a line matching ``pattern``."""
    return any(re.search(pattern, open(log).read()) for log in glob.glob(osp.join(work_dir, '*', '*.log')))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('cluster')
    generate_classification(str(cwd / 'data/shapes_cls'), 16, 4, seed=5)
    generate(str(cwd / 'data/shapes'), num_train=8, num_val=2, size=(64, 80), seed=2)
    return cwd


# ----------------------------------------------------------------------------- hooks, by hand
def test_run_hooks_are_added_once_and_the_flag_decides_the_timeout():
    cfg = Config(dict(custom_hooks=[dict(type='RandomStateHook')]))
    add_run_hooks(cfg, None, preemption=True)
    assert [h['type'] for h in cfg.custom_hooks] == ['RandomStateHook', 'StallWatchdogHook', 'PreemptionHook']
    assert cfg.custom_hooks[1]['timeout'] == DEFAULT_STALL_TIMEOUT
    cfg = Config(dict(custom_hooks=[dict(type='StallWatchdogHook', timeout=30), dict(type='PreemptionHook')]))
    add_run_hooks(cfg, None, preemption=True)
    assert cfg.custom_hooks == [dict(type='StallWatchdogHook', timeout=30), dict(type='PreemptionHook')]
    add_run_hooks(cfg, 90, preemption=True)
    assert [(h['type'], h.get('timeout')) for h in cfg.custom_hooks] == [('PreemptionHook', None),
                                                                          ('StallWatchdogHook', 90)]
    add_run_hooks(cfg, 0, preemption=False)
    assert [h['type'] for h in cfg.custom_hooks] == ['PreemptionHook']
    with pytest.raises(ValueError, match=r'--stall-timeout -1: expected seconds > 0, or 0'):
        add_run_hooks(cfg, -1, preemption=False)


def test_bad_hook_arguments_are_named():
    with pytest.raises(ValueError, match=r"signals=\['SIGTREM'\]\): \['SIGTREM'\] not allowed; expected .*SIGUSR1"):
        PreemptionHook(signals=['SIGTREM'])
    with pytest.raises(ValueError, match=r'timeout=0, exit_delay=10.0\): timeout must be > 0'):
        StallWatchdogHook(timeout=0)


@pytest.mark.parametrize('job_id, preset, expected', [('12345', None, '22345'), ('7', None, '20007'),
                                                      ('7', '31000', '31000')])
def test_slurm_jobs_started_by_our_launcher_get_their_own_port(tmp_path, job_id, preset, expected):
    """tools/slurm_launch.sh gives each job MASTER_PORT 20000 + job id mod 10000 unless it is set
    (srun is a stand-in here that sets the job id and runs the task command)."""
    srun = tmp_path / 'bin/srun'
    srun.parent.mkdir()
    srun.write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
                    f'export SLURM_JOB_ID={job_id}\nexec "$@"\n')
    srun.chmod(0o755)
    task = tmp_path / 'task.py'
    task.write_text('import os\nprint("port", os.environ["MASTER_PORT"])\n')
    env = dict(os.environ, PATH=f'{srun.parent}:{os.environ["PATH"]}', PYTHON=sys.executable)
    env.pop('MASTER_PORT', None)
    if preset:
        env['MASTER_PORT'] = preset
    script = os.path.relpath(task, os.path.join(ROOT, 'tools'))
    out = subprocess.run([os.path.join(ROOT, 'tools/slurm_launch.sh'), script, 'partition', 'job'], env=env,
                         capture_output=True, text=True, timeout=60)
    assert f'port {expected}' in out.stdout, out.stderr


def test_the_watchdog_leaves_a_run_that_raised_alone():
    """A run that ended with an exception (so no after_train) is not a stall: the watchdog
    stops instead of ending the process (which would end this test session)."""

    class Loop:
        def run(self, hook):
            hook._start(types.SimpleNamespace(logger=types.SimpleNamespace(handlers=[])), self,
                        'before the first training iteration')
            raise RuntimeError('training failed')

    hook = StallWatchdogHook(timeout=0.3, exit_delay=0)
    with pytest.raises(RuntimeError, match='training failed'):
        Loop().run(hook)
    time.sleep(1.5)
    assert hook._thread is None and hook._deadline is None


# -------------------------------------------------------------------------- local preemption
FPN = osp.join(ROOT, 'configs/quickstart/fpn_convmlp-s_shapes.py')
# name: config, options, the log line of the first iteration after the first checkpoint (the
# signal is sent once it is written, so the run has left the checkpoint's own iteration), the last
# checkpoint, iterations of a pass over the data (an epoch)
RUNS = {
    'classification-by-epoch': (CLS, [*OPTIONS, 'default_hooks.checkpoint.interval=1'],
                                r'Epoch\(train\)\s+\[2\]\[\s*1/8\]', 'epoch_3.pth', 8),
    'segmentation-by-iteration': (FPN, [
        'train_cfg.max_iters=12', 'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=4',
        'default_hooks.checkpoint.max_keep_ckpts=-1', 'default_hooks.logger.interval=1',
        'train_dataloader.batch_size=2',
        'randomness.seed=3', 'randomness.deterministic=True', 'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'], r'Iter\(train\)\s+\[\s*5/12\]', 'iter_12.pth', 4),
}


@pytest.mark.parametrize('run,signum,workers', [
    ('classification-by-epoch', signal.SIGTERM, 1),
    pytest.param('classification-by-epoch', signal.SIGUSR1, 0, marks=pytest.mark.stack_independent(
        'signal handling is Python\'s; the bit-identical resume on torch 2.1 is the SIGTERM case')),
    pytest.param('segmentation-by-iteration', signal.SIGTERM, 0, marks=pytest.mark.stack_independent(
        'the same loops and hooks as the SIGTERM epoch case, which runs on torch 2.1'))],
                         ids=['SIGTERM-epochs-1-worker', 'SIGUSR1-epochs-no-workers', 'SIGTERM-iterations-no-workers'])
def test_a_signal_saves_at_the_next_iteration_and_resume_ends_bit_identical(data, run, signum, workers):
    """A signal after the first checkpoint: the run saves iter_N.pth at the end of that iteration
    and exits with 128 + the signal; `--resume` skips the trained batches (in the middle of an
    epoch, or across passes over the data) and ends with the weights and optimizer state of an
    uninterrupted run (augmentations in data workers or in the main process; drop path on)."""
    config, run_options, after_first, last, epoch = RUNS[run]
    options = ['--cfg-options', *run_options, f'train_dataloader.num_workers={workers}',
               'train_dataloader.persistent_workers=False']
    whole, parts = data / f'whole-{run}-{workers}', data / f'parts-{run}-{workers}'
    env = clean_env()
    reference = tool_runner.run([sys.executable, TRAIN, config, '--work-dir', whole, *options], data, env)
    assert reference.returncode == 0, reference.stderr[-3000:]

    proc = subprocess.Popen([sys.executable, TRAIN, config, '--work-dir', str(parts), *options], cwd=data, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: logged(parts, after_first), 600, f'log line {after_first!r}', proc)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, out[-3000:]
    saved = open(parts / 'last_checkpoint').read().strip()
    step = int(re.fullmatch(r'.*iter_(\d+)\.pth', saved).group(1))
    assert epoch < step < 3 * epoch, saved
    assert f'{signal.Signals(signum).name} received; saving a checkpoint after iteration {step}' in out
    assert 'requeue' not in out  # not a Slurm job
    assert not osp.exists(parts / last)

    resumed = tool_runner.run([sys.executable, TRAIN, config, '--work-dir', parts, '--resume', *options], data, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if config == CLS and step % epoch:
        assert f'resumed in the middle of epoch {step // epoch + 1}: skipping its {step % epoch} trained batches' in \
            resumed.stdout + resumed.stderr
    assert_same_training(parts / last, whole / last)


# ------------------------------------------------------------------------------- stalled rank
SLEEPY_HOOK = '''
import time

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SleepOnRankOne(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if get_rank() == 1 and runner.iter == 2:
            time.sleep(3600)  # stalls without failing
'''


@pytest.mark.stack_independent('faulthandler and threads are Python\'s; a 2-process gloo run on torch 2.1 is '
                               'test_tools\' and test_resume\'s')
def test_a_stalled_rank_stops_the_job_with_every_ranks_stacks(data):
    (data / 'sleepy_hook.py').write_text(SLEEPY_HOOK)
    config = data / 'stalled_rank.py'
    config.write_text(f"_base_ = {CLS!r}\n"
                      "custom_imports = dict(imports=['convmlp_mm', 'sleepy_hook'], allow_failed_imports=False)\n"
                      "custom_hooks = [dict(type='RandomStateHook'), dict(type='SleepOnRankOne')]\n")
    env = clean_env(PYTHONPATH=str(data), PORT=str(tool_runner.free_port()))
    start = time.monotonic()
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools/dist_train.sh'), str(config), '2', '--work-dir', str(data / 'stalled'),
         '--stall-timeout', '10', '--cfg-options', *OPTIONS, 'train_dataloader.batch_size=1',
         'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False'],
        cwd=data, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert elapsed < 180, f'took {elapsed:.0f} s'
    dumps = {rank: '\n'.join(line[len(f'[rank {rank}] '):] for line in out.splitlines()
                              if line.startswith(f'[rank {rank}] ')) for rank in (0, 1)}
    for rank, dump in dumps.items():
        pattern = (rf'^StallWatchdogHook: rank {rank} of 2 \(pid \d+\) made no progress for 10 s; last progress: '
                   rf'.*^StallWatchdogHook: rank {rank} stops with exit code 124$')
        assert re.search(pattern, dump, re.S | re.M), out[-5000:]
    assert 'sleepy_hook.py' in dumps[1] and 'in after_train_iter' in dumps[1]
    assert 'sleepy_hook.py' not in dumps[0] and 'convmlp_mm/engine/hooks/' in dumps[0]  # waiting in a collective
    log = glob.glob(str(data / 'stalled/*/*.log'))
    assert len(log) == 1 and 'StallWatchdogHook: rank 0 of 2' in open(log[0]).read()


# ------------------------------------------------------------------------------------- Slurm
@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    try:
        install()
    except CannotInstall as reason:  # a user's machine; CI runs as root and installs it
        pytest.skip(str(reason))
    with slurm_cluster(str(tmp_path_factory.mktemp('slurm'))) as env:
        yield env


def slurm_env(cluster, **extra):
    """The clients' environment; each job's rendezvous on a port free now (the launcher's default,
    20000 + job id, is tested above; tests running beside the cluster must not collide with it)."""
    return dict(clean_env(GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1', GRES='none', **extra),
                SLURM_CONF=cluster['SLURM_CONF'], MASTER_PORT=str(tool_runner.free_port()))


SLURM_OPTIONS = ['--cfg-options', *OPTIONS, 'train_dataloader.num_workers=1', 'default_hooks.checkpoint.interval=3']


PACED_HOOK = '''
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class PaceTraining(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        time.sleep(1)  # a long run that leaves the CPUs to others
'''


@pytest.fixture(scope='module')
def time_limited_job(cluster, data):
    """A 2-task training job with a one-minute limit, paced to an iteration a second; submitted
    before the other Slurm jobs, so that its minute passes while they run (the cluster's node has
    twice the machine's CPUs)."""
    (data / 'paced_hook.py').write_text(PACED_HOOK)
    config = data / 'paced.py'
    hooks = [*Config.fromfile(CLS).custom_hooks, dict(type='PaceTraining')]
    config.write_text(f"_base_ = {CLS!r}\n"
                      "custom_imports = dict(imports=['convmlp_mm', 'paced_hook'], allow_failed_imports=False)\n"
                      f"custom_hooks = {hooks!r}\n")
    options = ['--cfg-options', *OPTIONS, 'train_cfg.max_epochs=1000', 'train_cfg.val_interval=1000',
               'default_hooks.checkpoint.interval=1000', 'train_dataloader.num_workers=0']
    job, _, read_log, env = submit_training(cluster, data, 'limited', options, '--time=1', config=config,
                                            PYTHONPATH=str(data))
    yield job, read_log, env
    subprocess.run(['scancel', job], env=env)


@pytest.fixture(scope='module')
def slurm_run(cluster, data, time_limited_job):
    """One uninterrupted 2-task training through tools/slurm_train.sh (the time-limited job
    submitted first)."""
    work = data / 'slurm_whole'
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools/slurm_train.sh'), PARTITION, 'convmlp-train', CLS, str(work),
                           *SLURM_OPTIONS], cwd=data, env=slurm_env(cluster, SRUN_ARGS='--label'),
                          capture_output=True, text=True, timeout=900)
    return work, proc


@pytest.mark.xdist_group('slurm')  # one cluster, one reference training
@SLURM_ONLY
def test_slurm_train_two_cpu_tasks_write_one_checkpoint(slurm_run):
    work, proc = slurm_run
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]  # srun returns 0 only when both tasks exit 0
    assert 'Distributed launcher: slurm' in out and 'GPU number: 2' in out  # mmengine's environment report
    assert {line.split(':', 1)[0].strip() for line in out.splitlines() if re.match(r'\s*[01]: ', line)} == {'0', '1'}
    assert sorted(osp.basename(p) for p in glob.glob(str(work / '*.pth'))) == ['epoch_3.pth']


@pytest.mark.xdist_group('slurm')  # one cluster, one reference training
@SLURM_ONLY
def test_slurm_test_two_cpu_tasks_report_metrics_once(slurm_run, cluster, data):
    work, _ = slurm_run
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools/slurm_test.sh'), PARTITION, 'convmlp-test', CLS,
                           str(work / 'epoch_3.pth'), '--work-dir', str(data / 'slurm_test')], cwd=data,
                          env=slurm_env(cluster), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert out.count('metrics:') == 1 and re.search(r'accuracy/top1: \d', out), out[-2000:]


def submit_training(cluster, data, name, options, sbatch_options='', config=CLS, **env):
    """sbatch of a 2-task tools/slurm_train.sh job (requeueable, its output appended to one
    file) with ``env`` added to the clients' environment; returns the job id, its work dir, a
    reader of its output and that environment."""
    work, log = data / f'slurm_{name}', data / f'slurm_{name}.out'
    script = data / f'{name}.sh'
    script.write_text(textwrap.dedent(f'''\
        #!/bin/bash
        #SBATCH --partition={PARTITION} --ntasks=2 --cpus-per-task=1 --requeue --open-mode=append {sbatch_options}
        #SBATCH --output={log}
        exec bash {ROOT}/tools/slurm_train.sh {PARTITION} convmlp-{name} {config} {work} {' '.join(options)}
        '''))
    env = slurm_env(cluster, **env)
    job = subprocess.run(['sbatch', '--parsable', f'--chdir={data}', str(script)], env=env, capture_output=True,
                         text=True, check=True).stdout.strip().split(';')[0]
    return job, work, lambda: open(log).read() if osp.exists(log) else '', env


def start_requeued_job_now(env, job):
    """Waits until Slurm has requeued ``job``, then lets it start at once: a requeued job may
    start no sooner than about two minutes later, and the tests do not wait for that."""
    wait_for(lambda: job_state(env, job).get('Restarts') == '1', 300, 'requeue')
    wait_for(lambda: job_state(env, job).get('JobState') == 'PENDING', 120, 'pending state')
    subprocess.run(['scontrol', 'update', f'JobId={job}', 'StartTime=now'], env=env, check=True)


@pytest.mark.xdist_group('slurm')  # one cluster, one reference training
@SLURM_ONLY
def test_slurm_preemption_requeues_and_the_requeued_job_ends_bit_identical(slurm_run, cluster, data):
    """sbatch runs slurm_train.sh; `scancel --signal=USR1` (what `--signal=USR1@N` sends before a
    time limit) mid-run: the tasks save iter_N.pth, Slurm requeues the job, the requeued job
    resumes by itself and ends with the uninterrupted run's weights."""
    reference, _ = slurm_run
    job, work, read_log, env = submit_training(cluster, data, 'preempted', SLURM_OPTIONS)
    wait_for(lambda: 'Epoch(train) [2][' in read_log(), 600, 'second epoch')
    subprocess.run(['scancel', '--signal=USR1', job], env=env, check=True)
    start_requeued_job_now(env, job)
    wait_for(lambda: job_state(env, job).get('JobState') in ('COMPLETED', 'FAILED', 'CANCELLED'), 900, 'job end')
    out = read_log()
    assert job_state(env, job)['JobState'] == 'COMPLETED', out[-4000:]
    step = int(re.search(r'SIGUSR1 received; saving a checkpoint after iteration (\d+)', out).group(1))
    assert 4 < step < 12  # 2 tasks of 2 images: 4 iterations an epoch
    if step % 4:
        assert f'skipping its {step % 4} trained batches' in out
    assert f'Slurm job {job} requeued' in out and 'Slurm requeued this job (1 times): resuming' in out
    assert_same_training(work / 'epoch_3.pth', reference / 'epoch_3.pth')


@pytest.mark.xdist_group('slurm')  # one cluster, one reference training
@SLURM_ONLY
def test_slurm_time_limit_requeues_and_scancel_does_not(time_limited_job):
    """A job past its time limit (Slurm's SIGTERM, reason TimeLimit) saves and is requeued; the
    requeued job, cancelled with a plain `scancel` (SIGTERM too), saves and stays cancelled."""
    job, read_log, env = time_limited_job
    # submitted with the first Slurm test; the limit is one minute, enforced within half a minute more
    start_requeued_job_now(env, job)
    out = read_log().partition('Slurm requeued this job (1 times)')[0]
    assert re.search(r'SIGTERM received; saving a checkpoint after iteration \d+', out), out[-3000:]
    assert f'Slurm job {job} requeued' in out
    after_requeue = lambda: read_log().partition('Slurm requeued this job (1 times)')[2]  # noqa: E731
    wait_for(lambda: 'Epoch(train)' in after_requeue(), 300, 'training after the requeue')
    subprocess.run(['scancel', job], env=env, check=True)
    wait_for(lambda: job_state(env, job).get('JobState') not in ('RUNNING', 'COMPLETING'), 120, 'cancel')
    state = job_state(env, job)
    out = after_requeue()
    assert (state['JobState'], state['Restarts']) == ('CANCELLED', '1'), out[-3000:]
    assert re.search(r'SIGTERM received; saving a checkpoint after iteration \d+', out), out[-3000:]
    assert f'Slurm job {job} is not requeued: SIGTERM before its time limit comes from scancel' in out
