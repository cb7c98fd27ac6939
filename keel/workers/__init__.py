"""The worker runtime: app declarations and loading, clients and workers, the embedded dev
stack and the long-running ``keel worker`` / ``keel dev`` processes."""
