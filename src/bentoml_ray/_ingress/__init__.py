"""The public HTTP surface, shared by both kinds of Bento; it runs in the ingress replica.

``app.public_ingress`` is the one builder: the traffic timeout (``timeout``), then the
guards (``media_types``, ``body_limit``, ``metrics``) and the direct path to an API's
endpoint (``gate``), then the service's own app under the route prefix.
"""
