"""The one exception type users see: a sentence naming the problem and the fix, never a traceback."""


class FaceganError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""


class TrainingDiverged(FaceganError):
    """The losses became NaN or infinite; the run's checkpoints hold the last good state."""


class StorageFull(FaceganError):
    """A write failed for want of space: worth retrying once space is freed (a study retries such trials)."""
