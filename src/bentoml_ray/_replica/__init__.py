"""What runs inside every replica, whatever the kind of Bento: the worker threads of sync
user code, the bridge from those threads to the replica's event loop, calls to other
deployments and their retries, and the batching runtime."""
