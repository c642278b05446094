"""The Bento itself: resolved once in the driver (``source``), shipped to the nodes that run
its replicas (``shipping``), and the runtime env it brings (``runtime_env``)."""
