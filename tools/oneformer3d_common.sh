#!/usr/bin/env bash
# Shared by tools/oneformer3d_train.sh and tools/oneformer3d_test.sh (sourced, not run).
#
# Environment:
#   ONEFORMER3D_ROOT  OneFormer3D checkout (required): its tools/train.py and tools/test.py are the
#                     entry points, its configs are the baselines, its data/ and work_dirs/tmp/
#                     hold the datasets and pretrained weights its configs point at.
#   GPUS              number of GPUs on this machine (default 1); >1 launches one process per GPU
#                     with torch.distributed.run and mmengine's "pytorch" launcher.
#   PORT              rendezvous port for GPUS > 1 (default 29500).
#   WORK_DIR          output folder (default: <InfluencerFormer>/work_dirs/<config name>).
#   PYTHON            interpreter (default: python).
#   DRY_RUN=1         print the command instead of running it.

IF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
GPUS="${GPUS:-1}"
PORT="${PORT:-29500}"

of3d_die() {
    echo "error: $*" >&2
    exit 2
}

# of3d_config DATASET VARIANT -> sets CONFIG and CONFIG_NAME
of3d_config() {
    local dataset="$1" variant="$2" stem
    case "$variant" in
        baseline|influencer) ;;
        *) of3d_die "variant must be 'baseline' or 'influencer', got '${variant}'" ;;
    esac
    case "$dataset" in
        s3dis) stem="oneformer3d_s3dis-area-5"; CONFIG_DIR="s3dis" ;;
        scannet) stem="oneformer3d_scannet"; CONFIG_DIR="scannet" ;;
        scannet200) stem="oneformer3d_scannet200"; CONFIG_DIR="scannet" ;;
        *) of3d_die "dataset must be one of s3dis, scannet, scannet200; got '${dataset}'" ;;
    esac
    CONFIG_NAME="${variant}_${stem}"
    CONFIG="${IF_ROOT}/configs/${CONFIG_DIR}/${CONFIG_NAME}.py"
    [ -f "$CONFIG" ] || of3d_die "config not found: ${CONFIG}"
}

# of3d_check_root ENTRY  (ENTRY: tools/train.py or tools/test.py)
of3d_check_root() {
    if [ -z "${ONEFORMER3D_ROOT:-}" ]; then
        of3d_die "ONEFORMER3D_ROOT is not set. Point it at your OneFormer3D checkout, e.g.
    git clone https://github.com/filaPro/oneformer3d /path/to/oneformer3d
    export ONEFORMER3D_ROOT=/path/to/oneformer3d
(see docs/oneformer3d.md)"
    fi
    [ -d "$ONEFORMER3D_ROOT" ] || of3d_die "ONEFORMER3D_ROOT=${ONEFORMER3D_ROOT} is not a directory"
    [ -f "${ONEFORMER3D_ROOT}/$1" ] || of3d_die "ONEFORMER3D_ROOT=${ONEFORMER3D_ROOT} has no $1; is it a OneFormer3D checkout?"
    [ -d "${ONEFORMER3D_ROOT}/oneformer3d" ] || of3d_die "ONEFORMER3D_ROOT=${ONEFORMER3D_ROOT} has no oneformer3d/ package"
    ONEFORMER3D_ROOT="$(cd "$ONEFORMER3D_ROOT" && pwd)"
    export ONEFORMER3D_ROOT
    # OneFormer3D's package and this repository's projects.oneformer3d must both import.
    export PYTHONPATH="${ONEFORMER3D_ROOT}:${IF_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
    case "$GPUS" in
        ''|*[!0-9]*|0) of3d_die "GPUS must be a positive integer, got '${GPUS}'" ;;
    esac
}

# of3d_work_dir CONFIG_NAME -> sets WORK_DIR (absolute: the launch changes directory)
of3d_work_dir() {
    WORK_DIR="${WORK_DIR:-${IF_ROOT}/work_dirs/$1}"
    case "$WORK_DIR" in
        /*) ;;
        *) WORK_DIR="${PWD}/${WORK_DIR}" ;;
    esac
}

# of3d_launch ENTRY ARGS...  -- runs from ONEFORMER3D_ROOT (its configs use data/ and work_dirs/tmp/
# relative to it); single process, or one per GPU through torch.distributed.run.
of3d_launch() {
    local entry="$1"
    shift
    local cmd
    if [ "$GPUS" -gt 1 ]; then
        cmd=("$PYTHON" -m torch.distributed.run --nproc_per_node="$GPUS" --master_port="$PORT"
             "$entry" --launcher pytorch "$@")
    else
        cmd=("$PYTHON" "$entry" "$@")
    fi
    if [ "${DRY_RUN:-0}" = "1" ]; then
        echo "cd ${ONEFORMER3D_ROOT}"
        echo "PYTHONPATH=${PYTHONPATH}"
        printf '%q ' "${cmd[@]}"
        echo
        return 0
    fi
    cd "$ONEFORMER3D_ROOT" || of3d_die "cannot cd to ${ONEFORMER3D_ROOT}"
    exec "${cmd[@]}"
}
