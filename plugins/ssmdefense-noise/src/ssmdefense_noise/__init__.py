"""ssmdefense-noise: an example third-party ssmdefense plugin.

Registers, through ssmdefense's pluggy hooks (entry point
``ssmdefense = ssmdefense-noise = ssmdefense_noise``):

- attack ``gaussian-noise``: Gaussian noise clipped into the L-inf eps-ball
  (``attack.GaussianNoiseAttack``; ssmdefense's built-in ``noise`` is the uniform one);
- defense ``noise-augment``: training on uniformly noised inputs (``defense.NoiseAugmentTrainer``).

The hook bodies import the implementations, so loading the plugin (``ssmdefense plugins``,
``ssmdefense --help``) imports neither torch nor ART by itself.
"""

import ssmdefense

__version__ = "0.1.0"


@ssmdefense.hookimpl
def register_attacks(register):
    from .attack import gaussian_noise

    register(
        "gaussian-noise",
        gaussian_noise,
        "Gaussian noise (std sigma) clipped into the L-inf eps-ball and the valid range",
    )


@ssmdefense.hookimpl
def register_defenses(register):
    from .defense import NoiseAugmentTrainer

    register(
        NoiseAugmentTrainer.name,
        NoiseAugmentTrainer,
        "Noise augmentation: train on x + uniform(-sigma, sigma), clipped to the valid range",
    )
