"""The root of what the jobs refuse to do because of what was asked (an alias that would chain, an
unknown key): the message says why, and callers answer with it (the CLI exits 2, worker.errors)."""


class Refused(ValueError):
    """A request that cannot be honoured; ``str(error)`` says why, in one line."""
