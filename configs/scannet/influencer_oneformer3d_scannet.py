# Influencer arm of the ScanNet comparison: the baseline with the instance criterion replaced
# by the matching-free Influencer criterion; nothing else changes. Keys left out take the
# adapter's defaults (formulation='exclusive', attr/rep/excl/bg weights 1.0, rep_margin 1.0,
# non_object_weight 0.1); docs/oneformer3d.md lists them.
#
# The baseline's SparseMatcher only lets a query match the instance that contains its
# superpoint (``query_masks``); the Influencer criterion has no matcher, so that restriction
# does not apply (query_masks is accepted and unused). The ScanNet decoder runs without
# objectness, so loss_weight has no third (score) entry. Wall / floor superpoints are
# background for the instance loss here: lower bg_weight if early training is unstable.
_base_ = ['./baseline_oneformer3d_scannet.py']

custom_imports = dict(imports=['oneformer3d', 'projects.oneformer3d'], allow_failed_imports=False)

model = dict(
    criterion=dict(
        inst_criterion=dict(
            _delete_=True,
            type='OneFormer3DInfluencerCriterion',
            num_classes={{_base_.num_instance_classes}},
            loss_weight=[0.5, 1.0],  # [classification, influencer mask loss]
            iter_matcher=True)))  # accepted for compatibility; there is no matcher
