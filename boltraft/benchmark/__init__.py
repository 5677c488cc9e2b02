"""The benchmark harness: disk, cluster workload, stage breakdown, slow-disk sweep and charts.

Modules: ``hist`` (HDR histogram helpers), ``disk`` (``boltraft bench disk``), ``result`` (the
result JSON schema), ``workload`` (the multi-process driver), ``localcluster`` (child
``boltraft serve`` processes), ``stages`` (the per-batch stage recorder and the fsync-delay
test knob used by the server), ``report`` (matplotlib charts), ``sweep``.
"""
