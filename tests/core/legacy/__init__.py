"""A frozen copy of the core's per-image Influencer path as it was before the batched rewrite
(commit e2169f4): the reference the batched criterion's equivalence tests compare against.
Test code only; nothing in the package imports it."""
