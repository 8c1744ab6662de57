# Baseline arm of the ScanNet (v2, 18 instance classes) comparison: OneFormer3D's own config,
# inherited unchanged from the checkout named by ONEFORMER3D_ROOT (see
# configs/s3dis/baseline_oneformer3d_s3dis-area-5.py for how the variable is resolved).
_base_ = ['{{$ONEFORMER3D_ROOT:}}/configs/oneformer3d_1xb4_scannet.py']
