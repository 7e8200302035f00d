"""Weight decay that spares the SSM parameters, as the reference implementations do.

The reference codebases exempt a state space layer's own parameters from weight decay: decaying
the log-rate of a diagonal state matrix towards 0 pulls every mode's rate to the same value, and
decaying log Δ pulls every channel's step to 1. Which parameters each model exempts is declared on
its layer class as ``no_weight_decay`` (names of that module's own parameters, kept by ``deepcopy``
and checkpoint round trips, which a per-parameter attribute is not); a parameter that carries
Mamba's ``_no_weight_decay`` marker (the convention of mamba_ssm, for plugins) is exempt too.

=========  ==========================================  =========================================
model      exempt (``no_weight_decay``)                reference
=========  ==========================================  =========================================
s4         log_dt, log_Lambda_re, Lambda_im, P, B      state-spaces/s4 ``register(..., lr)``
s4d        log_dt, log_A_real, A_imag                  state-spaces/s4 ``s4d.py``
dss        log_dt, (log_)Lambda_re, Lambda_im          ag1988/dss (built on the S4 codebase)
s5         log_dt, Lambda_re, Lambda_im, B             lindermanlab/S5 (the "ssm" optimizer group)
mamba      A_log, D                                    state-spaces/mamba ``_no_weight_decay``
mega       (none)                                      fairseq Mega decays every parameter
=========  ==========================================  =========================================

The exempt parameters get ``ssm_weight_decay`` (default 0.0; the training loop's
``-p ssm_weight_decay=...`` overrides it, e.g. to the ``weight_decay`` value to decay everything).
"""

from __future__ import annotations

import torch


def exempt_parameters(model: torch.nn.Module) -> list[str]:
    """Qualified names of the parameters of ``model`` that its layers exempt from weight decay."""
    names = []
    for prefix, module in model.named_modules():
        own = getattr(type(module), "no_weight_decay", ())
        for name, param in module.named_parameters(recurse=False):
            if name in own or getattr(param, "_no_weight_decay", False):
                names.append(f"{prefix}.{name}" if prefix else name)
    return names


def parameter_groups(model: torch.nn.Module, weight_decay: float, ssm_weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups: every parameter at ``weight_decay`` except the exempt SSM
    parameters (``exempt_parameters``) at ``ssm_weight_decay``. Groups are in a fixed order (the
    regular one first) and never empty, so an optimizer's state dict is the same from run to run."""
    exempt = set(exempt_parameters(model))
    regular = [p for name, p in model.named_parameters() if name not in exempt]
    ssm = [p for name, p in model.named_parameters() if name in exempt]
    groups = [{"params": regular, "weight_decay": weight_decay}]
    if ssm:
        groups.append({"params": ssm, "weight_decay": ssm_weight_decay})
    return groups
