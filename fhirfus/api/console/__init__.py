"""The web console at ``/app`` for people: site coordinators, analysts and admins (router: ``pages``)."""
