# Influencer arm of the ScanNet200 comparison: only the instance criterion changes
# (notes in influencer_oneformer3d_scannet.py apply here too).
_base_ = ['./baseline_oneformer3d_scannet200.py']

custom_imports = dict(imports=['oneformer3d', 'projects.oneformer3d'], allow_failed_imports=False)

model = dict(
    criterion=dict(
        inst_criterion=dict(
            _delete_=True,
            type='InfluencerCriterion',
            num_classes={{_base_.num_instance_classes}},
            loss_weight=[0.5, 1.0],
            non_object_weight=0.1,
            formulation='exclusive',
            attr_weight=1.0,
            rep_weight=1.0,
            excl_weight=1.0,
            bg_weight=1.0,
            rep_margin=1.0,
            temperature=None,  # None: the core default of the formulation
            iter_matcher=True)))
