# Baseline arm of the S3DIS comparison: OneFormer3D's own Area-5 config (train on Areas
# 1, 2, 3, 4, 6; evaluate on Area 5), inherited unchanged from the user's OneFormer3D checkout.
#
# mmengine replaces ``{{$ONEFORMER3D_ROOT:}}`` with that environment variable before it resolves
# ``_base_``; the empty default turns a missing variable into an explicit KeyError
# ("`ONEFORMER3D_ROOT` cannot be found in `os.environ`") instead of a wrong path.
# See docs/oneformer3d.md.
_base_ = ['{{$ONEFORMER3D_ROOT:}}/configs/oneformer3d_1xb2_s3dis-area-5.py']
