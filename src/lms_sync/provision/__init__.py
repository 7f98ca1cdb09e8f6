"""``lms-sync provision``: keep a vendor's user list in step with the persons of other sources.

:mod:`.plan` decides (pure), :mod:`.run` reads the warehouse, talks to the source's
:class:`~lms_sync.connectors.base.Provisioner` and records what it sent.
"""
