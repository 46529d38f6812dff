"""The part of a run context both MindSpore recipes share: which rank this is, and printing on rank 0 only."""


class RankLog:
    """Mixin for a (dataclass) run context with a ``rank`` field: ``primary`` and a rank-0-only ``log``."""

    @property
    def primary(self) -> bool:
        return self.rank == 0

    def log(self, *args, **kwargs) -> None:
        # the other ranks would repeat every line; their own records go to events with their rank
        if self.primary:
            print(*args, **kwargs)
