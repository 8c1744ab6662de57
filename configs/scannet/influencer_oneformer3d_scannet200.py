# Influencer arm of the ScanNet200 comparison: only the instance criterion changes
# (notes in influencer_oneformer3d_scannet.py apply here too).
_base_ = ['./baseline_oneformer3d_scannet200.py']

custom_imports = dict(imports=['oneformer3d', 'projects.oneformer3d'], allow_failed_imports=False)

model = dict(
    criterion=dict(
        inst_criterion=dict(
            _delete_=True,
            type='OneFormer3DInfluencerCriterion',
            num_classes={{_base_.num_instance_classes}},
            loss_weight=[0.5, 1.0],
            iter_matcher=True)))
