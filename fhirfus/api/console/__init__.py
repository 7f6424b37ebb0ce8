"""The web console at ``/app`` for people: site coordinators, analysts and admins (``pages``)."""

from fhirfus.api.console.pages import router

__all__ = ["router"]
