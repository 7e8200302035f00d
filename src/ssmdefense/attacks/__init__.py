"""Built-in attack plugins, one per file. Each factory returns an ART ``EvasionAttack``."""
