"""kibble: fine-tune timm classifiers with Lightning + Hydra and clean their labels in rounds."""

__version__ = "0.1.0"


class KibbleError(ValueError):
    """A user-facing input problem: the message names the file, the row and the fix."""
