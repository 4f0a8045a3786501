"""The one exception type of the data layer."""

from backbone_lab.errors import user_facing


@user_facing
class DataError(ValueError):
    """A data/config problem the user can fix; the message is one actionable line."""
