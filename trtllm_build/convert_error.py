"""The converter's one error type, in its own module so the readers can raise it too."""


class ConvertError(ValueError):
    """The input model cannot be converted; the message names the file, tensor or value."""
