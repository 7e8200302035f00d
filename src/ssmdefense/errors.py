"""Exceptions a user can act on. The CLI turns each into one line and exit status 2."""


class SSMDefenseError(ValueError):
    """Base class: a bad name, parameter, file or shape given by the user."""


class UnknownNameError(SSMDefenseError, KeyError):
    """A registry has no entry by that name; the message lists the known ones."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(SSMDefenseError):
    """Two plugins registered the same name; the message names both sources."""


class CheckpointError(SSMDefenseError):
    """A checkpoint is missing, corrupt or does not match its configuration."""


class TrainingDiverged(SSMDefenseError):
    """The training loss stopped being a finite number; the run keeps its last good epoch."""


class RankLost(SSMDefenseError):
    """Another process of a distributed run stopped (killed, crashed or out of memory): this one
    cannot go on. The run directory is kept for ``--resume``."""
