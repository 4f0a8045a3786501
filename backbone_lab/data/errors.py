"""The one exception type of the data layer."""


class DataError(ValueError):
    """A data/config problem the user can fix; the message is one actionable line."""
