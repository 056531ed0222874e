"""Exceptions that name the offending file (and line) and what is wrong with it."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad or missing input data.

    The message always starts with the file (and line, where there is one) so a
    user can find the problem without a traceback.
    """

    def __init__(self, path: str | Path | None, problem: str, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.problem = problem
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        # Survives pickling, so errors raised in worker processes arrive intact.
        return (type(self), (self.path, self.problem, self.line))


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or does not have the expected layout."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: the run as configured cannot give a model.

    Raised by `training.fit.fit_stages` after Keras' TerminateOnNaN stops the epoch; the runner
    reports the row as diverged (with where it happened) and goes on with the other rows.
    """

    def __init__(self, stage: str, epoch: int, where: str | Path | None = None):
        self.stage, self.epoch, self.where = stage, int(epoch), None if where is None else str(where)
        place = f" ({self.where})" if self.where else ""
        super().__init__(f"the training loss became NaN or infinite in stage {stage!r}, epoch {epoch}{place}")

    def __reduce__(self):
        return (type(self), (self.stage, self.epoch, self.where))
