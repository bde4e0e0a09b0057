#!/usr/bin/env bash
# One install command for a fresh machine (Linux, Python >= 3.10 with pip):
#
#   bash tools/install.sh
#
# 1. torch: keeps an installed torch; installs torch==$TORCH_VERSION (default 2.13.0) otherwise.
# 2. build tools: setuptools<81 (mmcv's setup.py and mmengine import pkg_resources), wheel, ninja.
# 3. mmcv==2.1.0 with its compiled ops. There is no prebuilt wheel for torch > 2.1, so it is built
#    from the source archive against the installed torch (~17 min on 2 cores) and the wheel is cached
#    in $MMCV_WHEEL_CACHE (default ~/.cache/mm-transformer-plugins/wheels), keyed by Python, torch
#    and machine, so a later install takes seconds. Skipped when a matching mmcv is importable.
# 4. the mmcv wheel, mmengine 0.10.7, mmdet 3.3.0, mmdet3d 1.4.0, nuscenes-devkit 1.2.0, numpy<2.
# 5. this project, editable, with its test, nuScenes and deployment (ONNX) extras.
# 6. a check that everything imports.
#
# Idempotent: a second run checks and skips. Uses $PYTHON (default python3) and its pip; run it
# inside the virtual environment you want to use. Stops with a message naming the failed step.
set -euo pipefail

PYTHON=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
MMCV_VERSION=2.1.0
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CURRENT_STEP="start"

on_error() {
    echo "" >&2
    echo "install.sh: FAILED at step '${CURRENT_STEP}'. See the output above." >&2
}
trap on_error ERR

step() {
    CURRENT_STEP="$2"
    echo ""
    echo "==> [$1/6] $2"
}

pip_install() {
    # The installed torch is pinned so that no dependency replaces it with another build.
    "$PYTHON" -m pip install --disable-pip-version-check "$@" "torch==$(torch_version)"
}

torch_version() {
    "$PYTHON" -c 'import torch; print(torch.__version__)'
}

step 1 "torch"
if "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "keeping the installed torch $(torch_version)"
else
    "$PYTHON" -m pip install --disable-pip-version-check "torch==${TORCH_VERSION}"
fi

step 2 "build tools (setuptools<81, wheel, ninja, numpy<2)"
pip_install -q "setuptools<81" wheel ninja "numpy<2"

step 3 "mmcv==${MMCV_VERSION} with compiled ops"
mmcv_spec="mmcv==${MMCV_VERSION}"
if "$PYTHON" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '${MMCV_VERSION}'" 2>/dev/null; then
    echo "mmcv ${MMCV_VERSION} with ops already importable"
else
    key=$("$PYTHON" -c 'import platform, sys, torch; print(f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}-{platform.machine()}")')
    cache_dir="${MMCV_WHEEL_CACHE:-$HOME/.cache/mm-transformer-plugins/wheels}/${key}"
    mkdir -p "$cache_dir"
    wheel=$(ls "$cache_dir"/mmcv-${MMCV_VERSION}-*.whl 2>/dev/null | head -n 1 || true)
    if [[ -z "$wheel" ]]; then
        log="$cache_dir/build.log"
        echo "no cached wheel for ${key}: building mmcv ${MMCV_VERSION} from source (about 17 min on 2 cores)"
        echo "build log: $log"
        build_dir=$(mktemp -d)
        # --no-build-isolation: mmcv's setup.py compiles against the torch installed here.
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PYTHON" -m pip wheel --no-deps --no-build-isolation \
            --disable-pip-version-check -w "$build_dir" "mmcv==${MMCV_VERSION}" >"$log" 2>&1 &
        build_pid=$!
        start=$SECONDS
        while kill -0 "$build_pid" 2>/dev/null; do
            sleep 30
            echo "  ... building mmcv: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s elapsed"
        done
        if ! wait "$build_pid"; then
            tail -n 40 "$log" >&2
            false
        fi
        mv "$build_dir"/mmcv-${MMCV_VERSION}-*.whl "$cache_dir"/
        rm -rf "$build_dir"
        wheel=$(ls "$cache_dir"/mmcv-${MMCV_VERSION}-*.whl | head -n 1)
    else
        echo "using the cached wheel $wheel"
    fi
    mmcv_spec="$wheel"
fi

step 4 "mmcv, mmengine 0.10.7, mmdet 3.3.0, mmdet3d 1.4.0, nuscenes-devkit 1.2.0"
pip_install -q "$mmcv_spec" mmengine==0.10.7 mmdet==3.3.0 mmdet3d==1.4.0 nuscenes-devkit==1.2.0 "numpy<2" "setuptools<81"

step 5 "this project (editable, with its test, lint, nuScenes and ONNX deployment extras)"
pip_install -q -e "${REPO_ROOT}[tests,lint,nuscenes,deploy]"

step 6 "check imports"
"$PYTHON" - <<'EOF'
import mmcv, mmcv.ops, mmdet, mmdet3d, mmengine, numpy, onnxruntime, torch
import projects
print(f'torch {torch.__version__} | mmcv {mmcv.__version__} | mmengine {mmengine.__version__} | '
      f'mmdet {mmdet.__version__} | mmdet3d {mmdet3d.__version__} | numpy {numpy.__version__} | '
      f'onnxruntime {onnxruntime.__version__}')
EOF
echo ""
echo "install.sh: done."
