"""The benchmark harness behind ``boltraft bench`` (docs/benchmarks.md).

Modules: ``hist`` (HDR histogram helpers), ``disk`` (``bench disk``), ``floor``
(``bench floor``), ``workload`` (the multi-process client driver), ``clientops`` (its
operators for a real cluster), ``localcluster`` (child ``boltraft serve`` processes, started
through ``node``, the benchmark's launcher), ``clusterbench`` (``bench cluster`` and
``bench sweep``), ``stages`` (the per-batch stage recorder and the fsync-delay test knob the
launcher installs in a node), ``breakdown`` (a run's stage breakdown), ``result`` (the
result JSON schema), ``report`` (matplotlib charts).

Every latency is recorded in microseconds into ``hist``'s histograms; every result file is
a ``result.SCHEMA`` document.
"""
