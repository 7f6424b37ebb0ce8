"""The hub side of a multicentre study: pull a site server's Bulk Data export into this one."""
