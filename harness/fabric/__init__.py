"""The fabric the nodes talk over (inventory ``cluster.fabric``): its model and
container flags (model.py), the collective library's variables from the vendor
spec (env.py), what the library chose according to its logs (nccl_log.py), the
per-host InfiniBand checks (preflight.py) and the allreduce case's bandwidth
table (busbw.py). Every module is pure: no SSH, no Docker."""
