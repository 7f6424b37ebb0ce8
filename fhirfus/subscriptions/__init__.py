"""R4 Subscriptions that fire: ``rest-hook`` notifications of matching writes.

- ``active``: the active Subscriptions of the database, their criteria compiled once by the search
  engine, cached per process and re-read when a write finds that the stored Subscriptions changed
  (in any process);
- ``matching``: the store's write observer — in the transaction of every write, the written
  versions are matched against the criteria (the compiled search restricted to their rows) and
  the matches queued in ``subscription_queue``, so a rolled-back write notifies nobody;
- ``queue``: the durable queue (leases, retries, order);
- ``delivery``: one notification as an HTTP request (payload, headers, HMAC signature);
- ``worker``: the delivery thread of a server process (at-least-once, in order per resource,
  exponential backoff, ``status`` ``error`` after repeated failures).
"""
