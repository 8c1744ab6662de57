#!/usr/bin/env bash
# Train OneFormer3D with its own Hungarian criterion (baseline) or with the Influencer loss.
#
#   tools/oneformer3d_train.sh DATASET VARIANT [extra tools/train.py arguments]
#     DATASET: s3dis (Area 5 held out) | scannet | scannet200
#     VARIANT: baseline | influencer
#
#   ONEFORMER3D_ROOT=/path/to/oneformer3d tools/oneformer3d_train.sh s3dis influencer
#   GPUS=4 ONEFORMER3D_ROOT=... tools/oneformer3d_train.sh s3dis baseline
#
# Resumes automatically when WORK_DIR already holds a checkpoint (mmengine's last_checkpoint);
# RESUME=0 starts over. Other settings: see tools/oneformer3d_common.sh and docs/oneformer3d.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/oneformer3d_common.sh"

[ $# -ge 2 ] || of3d_die "usage: $0 DATASET(s3dis|scannet|scannet200) VARIANT(baseline|influencer) [train.py args]"
of3d_config "$1" "$2"
shift 2
of3d_check_root tools/train.py

of3d_work_dir "$CONFIG_NAME"
args=("$CONFIG" --work-dir "$WORK_DIR")
# Only resume when there is something to resume from: OneFormer3D's train.py drops the config's
# load_from (the pretrained backbone) whenever --resume is given.
if [ "${RESUME:-1}" = "1" ] && [ -f "${WORK_DIR}/last_checkpoint" ]; then
    echo "resuming from $(cat "${WORK_DIR}/last_checkpoint")" >&2
    args+=(--resume)
fi
of3d_launch tools/train.py "${args[@]}" "$@"
