# Sourced by the launchers (dist_launch.sh, slurm_launch.sh): sets PYTHON to the activated
# virtual environment's python, else this checkout's .venv's, else `python` on the PATH.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    PYTHON=$VIRTUAL_ENV/bin/python
elif [[ -x "$HERE/../.venv/bin/python" ]]; then
    PYTHON=$HERE/../.venv/bin/python
else
    PYTHON=python
fi
