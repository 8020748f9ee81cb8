"""The RL objectives: BGPO and its baselines, by name.

| name | objective | memory in ``n_t`` |
|---|---|---|
| ``bgpo`` | Taylor/Jensen lower bound of VRPO's objective (ablations: ``bound=taylor|jensen``) | constant |
| ``bgpo-taylor``, ``bgpo-jensen`` | the paper's Table-3 ablations, as names | constant |
| ``vrpo`` | ``exp(mean_j d_ij)·A_i`` (VRPO-OL on-policy, VRPO-OFF with μ > 1) | linear |
| ``vrpo-exact`` | VRPO's exact gradient, streamed after a no-grad coefficient pass | constant |
| ``diffu-grpo`` | d1's one-step estimator with clipped per-token ratios, optional k3 KL | constant |
"""

from __future__ import annotations

import difflib
import inspect

from bgpo.algorithms.advantages import group_advantages
from bgpo.algorithms.base import Objective, SampleContext, Terms, masked_mean
from bgpo.algorithms.bgpo import BGPO
from bgpo.algorithms.diffu_grpo import DiffuGRPO
from bgpo.algorithms.vrpo import VRPO, ExactVRPO

_REGISTRY = {
    "bgpo": (BGPO, {}),
    "bgpo-taylor": (BGPO, {"bound": "taylor"}),
    "bgpo-jensen": (BGPO, {"bound": "jensen"}),
    "vrpo": (VRPO, {}),
    "vrpo-exact": (ExactVRPO, {}),
    "diffu-grpo": (DiffuGRPO, {}),
}
ALGORITHMS = tuple(_REGISTRY)


def _option_names(cls) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters) - {"self", "options"}
    return names


def get_objective(name: str, **options) -> Objective:
    """Build the objective called ``name`` with ``options`` (clear errors for unknown ones)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, ALGORITHMS, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ValueError(f"unknown algorithm {name!r}{hint}; valid: {', '.join(ALGORITHMS)}")
    cls, preset = _REGISTRY[name]
    valid = _option_names(cls)
    for key in options:
        if key not in valid:
            raise ValueError(
                f"algorithm {name!r} has no option {key!r}; valid: {', '.join(sorted(valid))}"
            )
    return cls(**{**preset, **options})


__all__ = [
    "ALGORITHMS",
    "BGPO",
    "DiffuGRPO",
    "ExactVRPO",
    "Objective",
    "SampleContext",
    "Terms",
    "VRPO",
    "get_objective",
    "group_advantages",
    "masked_mean",
]
