#!/usr/bin/env bash
# Creates one of the project's virtual environments and installs a pinned stack into it.
#
#   tools/setup_env.sh                    .venv with constraints.txt (newest supported stack)
#   tools/setup_env.sh oldest             .venv-oldest with constraints-oldest.txt (oldest one)
#   tools/setup_env.sh clients            .venv-clients: .venv without mmpretrain, with the clients
#                                         extra (Hugging Face transformers; tests/test_clients.py)
#
# mmpretrain 1.2.0 cannot be imported beside transformers >= 4.57 (setup.py), so the clients extra
# gets an environment without mmpretrain. It holds no second copy of torch and the rest: its
# site-packages links to each entry of .venv's except mmpretrain's and pip's, and .venv's pip puts
# the packages that the clients extra adds to .venv's set into it (each pinned in constraints.txt;
# one that would replace a package of .venv stops the set-up, and `pip check` confirms the set).
# Rebuilt whenever .venv is.
#
# Idempotent: a stamp in the environment records the hash of everything that decides what gets
# installed (its constraints file, setup.py, this script); when it matches, the script returns
# at once.
#
# mmcv 2.1.0 has no usable binary wheel, so it is compiled with its ops against the
# environment's torch. pip's wheel cache keys a built wheel by its source, not by the torch it
# was compiled against, and would hand a wheel built for another torch to this environment
# (`import mmcv.ops` then fails with an undefined `at::_ops` symbol). So the wheel is built
# without pip's cache and kept in a wheelhouse of its own per torch version,
# ~/.cache/convmlp_mm/mmcv/<mmcv>-torch<torch>/. torch >= 2.14's headers require C++20 while
# mmcv 2.1.0's setup.py asks for C++17; where the installed torch's headers say so, the build
# raises that one flag.
#
# Cold first run on 2 cores: .venv ~20 min (torch from disk or ~4.8 GB download, mmcv compile
# ~15 min), .venv-oldest ~10 min (torch 2.1.2 ~2.5 GB download, mmcv compile ~6 min). With the
# mmcv wheelhouse and pip's cache warm, each takes 1-3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-default}" in
    default) VENV=.venv; CONSTRAINTS=constraints.txt ;;
    oldest) VENV=.venv-oldest; CONSTRAINTS=constraints-oldest.txt ;;
    clients) VENV=.venv-clients; CONSTRAINTS=constraints.txt ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "usage: $0 [default|oldest|clients] (got '$1')" >&2; exit 2 ;;
esac

STAMP="$VENV/.convmlp_mm-stamp"
if [[ "$VENV" == .venv-clients ]]; then
    tools/setup_env.sh  # .venv first: this environment links to it
    want=$(cat "$CONSTRAINTS" setup.py tools/setup_env.sh .venv/.convmlp_mm-stamp | sha256sum | cut -d' ' -f1)
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -z "$(find "$VENV" -xtype l -print -quit)" ]]; then
        exit 0
    fi
    echo "[setup_env] $VENV: .venv without mmpretrain, with the clients extra"
    rm -rf "$VENV"
    "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv --without-pip "$VENV"
    source_site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # no pip either: a pip run here would change .venv through the links
    for entry in "$source_site"/*; do
        case "$(basename "$entry")" in
            mmpretrain|mmpretrain-*.dist-info|pip|pip-*.dist-info|__pycache__) ;;
            *) ln -s "$entry" "$site/" ;;
        esac
    done
    # the extra's requirements from the installed metadata; resolved against .venv (the same
    # packages but mmpretrain, which constrains none of them)
    clients=$(.venv/bin/python -c "import importlib.metadata as m; print(' '.join(r.split(';')[0].replace(' ', '') \
        for r in m.requires('convmlp_mm') if r.replace(' ', '').endswith('extra==\"clients\"')))")
    .venv/bin/python -m pip install --disable-pip-version-check -c "$CONSTRAINTS" --dry-run --quiet \
        --report "$VENV/report.json" $clients
    adds=$(.venv/bin/python - "$VENV/report.json" "$source_site" <<'PY'
import json, os, sys
from packaging.utils import canonicalize_name
report, site = sys.argv[1:]
installed = {canonicalize_name(entry.split('-')[0]) for entry in os.listdir(site) if entry.endswith('.dist-info')}
adds = [(item['metadata']['name'], item['metadata']['version']) for item in json.load(open(report))['install']]
replaced = [name for name, _ in adds if canonicalize_name(name) in installed]
if replaced:
    sys.exit('the clients extra would replace packages of .venv: ' + ' '.join(replaced))
print(' '.join(f'{name}=={version}' for name, version in adds))
PY
)
    .venv/bin/python -m pip install --disable-pip-version-check -c "$CONSTRAINTS" --no-deps --quiet \
        --target "$site" $adds
    rm "$VENV/report.json"
    pip_only=$(mktemp -d)
    ln -s "$source_site/pip" "$pip_only/pip"
    # every requirement met but pip itself (openmim's), which this environment leaves out
    broken=$(PYTHONPATH="$pip_only" "$VENV/bin/python" -m pip check | grep -v -e '^No broken requirements found' \
        -e ' requires pip, which is not installed' || true)
    rm -rf "$pip_only"
    [[ -z "$broken" ]] || { echo "[setup_env] $VENV: $broken" >&2; exit 1; }
    "$VENV/bin/python" -c "import importlib.util, convmlp_mm, scipy, timm, transformers; \
        assert importlib.util.find_spec('mmpretrain') is None"
    echo "$want" > "$STAMP"
    echo "[setup_env] environment ready: $VENV"
    exit 0
fi

want=$(cat "$CONSTRAINTS" setup.py tools/setup_env.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    exit 0
fi

PYTHON=$(command -v python3.11 || command -v python3)
echo "[setup_env] $VENV from $CONSTRAINTS with $($PYTHON --version)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS")

"${PIP[@]}" setuptools wheel ninja packaging
# torch first: mmcv compiles against it.
"${PIP[@]}" torch torchvision numpy

if ! "$VPY" -c "import mmcv.ops" 2>/dev/null; then
    mmcv_version=$(sed -n 's/^mmcv==//p' "$CONSTRAINTS")
    torch_version=$("$VPY" -c "import torch; print(torch.__version__)")
    wheelhouse="${HOME}/.cache/convmlp_mm/mmcv/${mmcv_version}-torch${torch_version}"
    if ! ls "$wheelhouse"/mmcv-*.whl >/dev/null 2>&1; then
        echo "[setup_env] compiling mmcv $mmcv_version with ops against torch $torch_version" \
             "(first time: 6-21 minutes on 2 cores)"
        build=$(mktemp -d)
        trap 'rm -rf "$build"' EXIT
        "$VPY" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
            --no-build-isolation "mmcv==$mmcv_version" -d "$build" >/dev/null
        tar -xzf "$build"/mmcv-*.tar.gz -C "$build"
        src=$(echo "$build"/mmcv-"$mmcv_version")
        include=$("$VPY" -c "import torch.utils.cpp_extension as c; print(c.include_paths()[0])")
        if grep -rqs "C++20 or later compatible compiler is required" "$include"; then
            echo "[setup_env] torch $torch_version's headers require C++20: building mmcv with -std=c++20"
            sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
        fi
        MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) "$VPY" -m pip wheel --disable-pip-version-check \
            --no-deps --no-build-isolation --no-cache-dir -w "$build/wheel" "$src"
        mkdir -p "$(dirname "$wheelhouse")"
        rm -rf "$wheelhouse.partial"
        mv "$build/wheel" "$wheelhouse.partial"
        mv "$wheelhouse.partial" "$wheelhouse"  # complete or absent
    fi
    "${PIP[@]}" --force-reinstall --no-deps "$wheelhouse"/mmcv-*.whl
    "${PIP[@]}" "$(ls "$wheelhouse"/mmcv-*.whl)"  # its dependencies
fi
"${PIP[@]}" --no-build-isolation -e ".[all]"
"$VPY" -c "import convmlp_mm, mmcv.ops, mmdet.models, mmseg.models, mmpretrain.models, timm"

# timm's own model tests (tests/test_timm.py runs them on our models) ship in its sdist only.
timm_version=$("$VPY" -c "import timm; print(timm.__version__)")
timm_tests="$VENV/share/timm-$timm_version"
if [[ ! -f "$timm_tests/tests/test_models.py" ]]; then
    fetch=$(mktemp -d)
    "$VPY" -m pip download --disable-pip-version-check --no-deps --no-binary :all: "timm==$timm_version" \
        -d "$fetch" >/dev/null
    tar -xzf "$fetch"/timm-"$timm_version".tar.gz -C "$fetch"
    mkdir -p "$timm_tests.partial"
    mv "$fetch/timm-$timm_version/tests" "$timm_tests.partial/tests"
    rm -rf "$fetch" "$timm_tests"
    mv "$timm_tests.partial" "$timm_tests"  # complete or absent
fi
echo "$want" > "$STAMP"
echo "[setup_env] environment ready: $VENV"
