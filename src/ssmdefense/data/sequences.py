"""Built-in sequence modes (``register_sequences``): how images and waveforms become sequences.

Images (C, H, W): ``pixels`` and ``rows``. Mono audio (1, T): ``frames``, ``samples`` and ``mel``.
The modules live in ``ssmdefense.models`` (``serialise.py``, ``audio.py``); this plugin only names
them, the same way a third-party dataset plugin names the mode of a new input kind.
"""

from ..hookspecs import hookimpl
from ..models.serialise import BUILTIN_SEQUENCES


@hookimpl
def register_sequences(register):
    for name, (factory, summary) in BUILTIN_SEQUENCES.items():
        register(name, factory, summary)
