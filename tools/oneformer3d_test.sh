#!/usr/bin/env bash
# Evaluate a OneFormer3D checkpoint (baseline or Influencer variant) with OneFormer3D's test.py.
#
#   tools/oneformer3d_test.sh DATASET VARIANT CHECKPOINT [extra tools/test.py arguments]
#     CHECKPOINT: a .pth file, or "last" for WORK_DIR's latest checkpoint
#
#   ONEFORMER3D_ROOT=... FIX_SPCONV=1 tools/oneformer3d_test.sh s3dis influencer last
#
# FIX_SPCONV=1 first runs OneFormer3D's tools/fix_spconv_checkpoint.py (its README does this
# between training and testing spconv models) into a new "<checkpoint>.spconv-fixed.pth"; the
# original file is left alone. Published OneFormer3D checkpoints are already converted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/oneformer3d_common.sh"

[ $# -ge 3 ] || of3d_die "usage: $0 DATASET VARIANT CHECKPOINT|last [test.py args]"
of3d_config "$1" "$2"
CHECKPOINT="$3"
shift 3
of3d_check_root tools/test.py

of3d_work_dir "$CONFIG_NAME"
if [ "$CHECKPOINT" = "last" ]; then
    [ -f "${WORK_DIR}/last_checkpoint" ] || of3d_die "no ${WORK_DIR}/last_checkpoint; train first or give a .pth path"
    CHECKPOINT="$(cat "${WORK_DIR}/last_checkpoint")"
fi
[ -f "$CHECKPOINT" ] || [ "${DRY_RUN:-0}" = "1" ] || of3d_die "checkpoint not found: ${CHECKPOINT}"
CHECKPOINT="$(cd "$(dirname "$CHECKPOINT")" && pwd)/$(basename "$CHECKPOINT")"

if [ "${FIX_SPCONV:-0}" = "1" ]; then
    fixed="${CHECKPOINT%.pth}.spconv-fixed.pth"
    if [ ! -f "$fixed" ] || [ "$CHECKPOINT" -nt "$fixed" ]; then
        if [ "${DRY_RUN:-0}" = "1" ]; then
            echo "$PYTHON tools/fix_spconv_checkpoint.py --in-path $CHECKPOINT --out-path $fixed"
        else
            (cd "$ONEFORMER3D_ROOT" && "$PYTHON" tools/fix_spconv_checkpoint.py --in-path "$CHECKPOINT" --out-path "$fixed")
        fi
    fi
    CHECKPOINT="$fixed"
fi
of3d_launch tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "${WORK_DIR}/test" "$@"
