# Baseline arm of the ScanNet200 comparison (198 instance classes, MinkowskiEngine backbone):
# OneFormer3D's own config from the checkout named by ONEFORMER3D_ROOT.
_base_ = ['{{$ONEFORMER3D_ROOT:}}/configs/oneformer3d_1xb4_scannet200.py']
