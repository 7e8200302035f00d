"""ssmdefense-noise: an example third-party ssmdefense plugin.

Registers, through ssmdefense's pluggy hooks (entry point ``ssmdefense = noise = ssmdefense_noise``):

- attack ``noise``: uniform random noise in the L-inf eps-ball (``attack.NoiseAttack``);
- defense ``noise-augment``: training on uniformly noised inputs (``defense.NoiseAugmentTrainer``).

The hook bodies import the implementations, so loading the plugin (``ssmdefense plugins``,
``ssmdefense --help``) imports neither torch nor ART by itself.
"""

import ssmdefense

__version__ = "0.1.0"


@ssmdefense.hookimpl
def register_attacks(register):
    from .attack import noise

    register("noise", noise, "Uniform random noise in the L-inf eps-ball, clipped to the valid range")


@ssmdefense.hookimpl
def register_defenses(register):
    from .defense import NoiseAugmentTrainer

    register(NoiseAugmentTrainer.name, NoiseAugmentTrainer,
             "Noise augmentation: train on x + uniform(-sigma, sigma), clipped to the valid range")
