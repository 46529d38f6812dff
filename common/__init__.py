"""Framework-free helpers shared by the five recipes (stdlib + numpy; Pillow/matplotlib imported lazily).

One module per job: ``banner`` (the ModelZoo "Final result" banner), ``runrecord`` (``${CaseName}.log``
and ``${CaseName}.json``), ``throughput`` (steady-state images/sec), ``rank_table`` (HCCL rank tables),
``safe_pickle`` and ``cifar`` (untrusted CIFAR pickles), ``imagefolder`` (ImageNet-style folders),
``checkpoint`` (atomic writes), ``summary`` (per-epoch CSV and curves), ``progress`` (progress line),
``config`` (config file < command line), ``compare`` (compare run records).
"""
