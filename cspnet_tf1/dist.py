"""Data-parallel training across processes, with TensorFlow's own collectives in TF1 graph mode.

The launcher (test/train_*_8p.sh) starts one ``train.py`` per device. Two engines, chosen by what the
launcher set:
- ``TF_CONFIG`` (CPU, GPU): ``tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy``, i.e.
  CollectiveAllReduceStrategy, with a ``tf.distribute.Server`` per worker and a ``Session`` on its target.
  Variables created under the strategy are MirroredVariables whose initial values are broadcast from
  worker 0, and the v1 optimizer's ``apply_gradients`` all-reduces the gradients (ring all-reduce over gRPC).
- ``RANK_SIZE`` > 1 without TF_CONFIG on Ascend: the npu_bridge ``NPUDistributedOptimizer`` (HCCL
  all-reduce of the gradients) and an HCCL broadcast of rank 0's variables, as the Ascend TF1 recipes do.
"""
import json
import os
import sys
import threading
import time

import tensorflow as tf

from common import cli

tf1 = tf.compat.v1
SUM = tf.distribute.ReduceOp.SUM


class Cluster:
    """This process's place in the job: ``rank`` of ``world``; ``workers`` (TF_CONFIG) or ``hccl``."""

    def __init__(self, rank=0, world=1, workers=None, hccl=False):
        self.rank, self.world, self.workers, self.hccl = rank, world, workers, hccl
        self.strategy = self.server = None

    @property
    def is_chief(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world > 1


def cluster_from_env(device):
    """TF_CONFIG from the launcher, else Ascend's RANK_ID/RANK_SIZE on an NPU, else a single process."""
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            cfg = json.loads(raw)
            workers, rank = list(cfg["cluster"]["worker"]), int(cfg["task"]["index"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"TF_CONFIG: malformed ({type(exc).__name__}: {exc})") from None
        if cfg["task"].get("type", "worker") != "worker" or not 0 <= rank < len(workers):
            raise ValueError(f"TF_CONFIG: task {cfg['task']} is not one of the {len(workers)} workers")
        return Cluster(rank, len(workers), workers=workers)
    size = os.environ.get("RANK_SIZE", "1")
    if device == "npu" and size.isdigit() and int(size) > 1:
        return Cluster(int(os.environ.get("RANK_ID", "0")), int(size), hccl=True)
    return Cluster()


def start(cluster, session_config):
    """Create the strategy and this worker's server; returns (session target, session config)."""
    if not cluster.workers:
        return "", session_config
    # reads the same TF_CONFIG; must exist before any variable is created
    cluster.strategy = tf1.distribute.experimental.MultiWorkerMirroredStrategy()
    config = cluster.strategy.update_config_proto(session_config)
    # the workers of one host share its cores: each takes its part rather than all of them
    host = cluster.workers[cluster.rank].rsplit(":", 1)[0]
    local = sum(w.rsplit(":", 1)[0] == host for w in cluster.workers)
    config.intra_op_parallelism_threads = max(1, config.intra_op_parallelism_threads // local)
    cluster.server = tf.distribute.Server(tf.train.ClusterSpec({"worker": cluster.workers}), job_name="worker",
                                          task_index=cluster.rank, config=config, start=True)
    return cluster.server.target, config


def shard(x, y, cluster):
    """Every ``world``-th image from ``rank`` on, cut to the same length on every rank (equal step counts)."""
    if not cluster.distributed:
        return x, y
    n = len(x) // cluster.world
    return x[cluster.rank::cluster.world][:n], y[cluster.rank::cluster.world][:n]


def wrap_optimizer(opt, cluster):
    if cluster.hccl:
        from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer
        return NPUDistributedOptimizer(opt)
    return opt


def gradient_scale(cluster):
    """Under a strategy the v1 optimizers SUM the replicas' gradients: scaling the loss makes it their mean."""
    return 1.0 / cluster.strategy.num_replicas_in_sync if cluster.strategy else 1.0


def build_agree(cluster):
    """``(head_in, head)``: feed (seed, restored, global step) and fetch ``head`` to get rank 0's on every rank.

    Built with the strategy's cross-worker reduce (a SUM to which every rank but 0 contributes zeros), so it
    is TF's collective engine too. None, None in a single process or with HCCL.
    """
    if not cluster.strategy:
        return None, None
    strategy = cluster.strategy
    with strategy.scope():
        head_in = tf1.placeholder(tf.int64, [3])
        head = strategy.extended.reduce_to(SUM, head_in if cluster.is_chief else tf.zeros_like(head_in),
                                           destinations=strategy.extended.worker_devices[0])
    return head_in, head


def build_broadcast(cluster):
    """Ops that give every rank rank 0's variables (all ranks must build them, in the same order).

    Needed after rank 0 alone restored a checkpoint; with HCCL also for the initial values, which the
    TF strategy broadcasts itself when it initialises its mirrored variables.
    """
    variables = tf1.global_variables()
    if cluster.hccl:
        from npu_bridge.hccl import hccl_ops
        return [tf1.assign(v, hccl_ops.broadcast([v], 0)[0]) for v in variables]
    strategy = cluster.strategy
    with strategy.scope():
        reduced = strategy.extended.batch_reduce_to(
            SUM, [(tf.identity(v) if cluster.is_chief else tf.zeros_like(v), v) for v in variables])
        return [strategy.extended.update(v, lambda var, val: var.assign(val), args=(r,), group=True)
                for v, r in zip(variables, reduced)]


LOST_RANK = "the other ranks did not answer within --collective_timeout seconds; did a rank die?"
BACKSTOP_S = 10.0  # how long after the deadline the watchdog waits for TensorFlow's own DeadlineExceeded


class CollectiveRunner:
    """``run(fetches, feed)``: a session run that waits on other ranks, bounded by --collective_timeout.

    The deadline is TensorFlow's (``RunOptions.timeout_in_ms``: DeadlineExceeded, one line through cli.run).
    TensorFlow loses that deadline when it expires while the step is still being set up (seen on TF 2.21:
    a 5 s deadline on a graph whose registration takes longer than 5 s, as train.py's on a loaded 2-core
    host, never fires and the rank waits for ever), so a watchdog thread ends the process with the same line
    when a run is ``BACKSTOP_S`` past its deadline. A single process, or a timeout of 0: plain runs.
    """

    def __init__(self, sess, cluster, timeout_s):
        self.sess, self.timeout_s = sess, timeout_s if cluster.distributed else 0
        self.options = tf1.RunOptions(timeout_in_ms=int(timeout_s * 1000)) if self.timeout_s else None
        self._since = None  # monotonic start of the run in progress
        if self.timeout_s:
            threading.Thread(target=self._watch, daemon=True).start()

    def __call__(self, fetches, feed_dict=None):
        self._since = time.monotonic()
        try:
            return self.sess.run(fetches, feed_dict, options=self.options)
        finally:
            self._since = None

    def _watch(self):
        while True:
            time.sleep(0.5)
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout_s + BACKSTOP_S:
                sys.stdout.flush()  # os._exit skips Python's own flushing
                print(f"ERROR: {LOST_RANK}", file=sys.stderr, flush=True)
                os._exit(cli.EXIT_ERROR)  # from a thread: the main one is blocked in the collective


def watch_launcher():
    """Exit when the launcher that started this worker is gone (it was SIGKILLed and could not stop us)."""
    pid = os.environ.get("MZ_LAUNCHER_PID", "")
    if not pid.isdigit() or os.getppid() != int(pid):
        return

    def watch():
        while os.getppid() == int(pid):
            time.sleep(1.0)
        print("ERROR: the launcher exited; stopping this rank", file=sys.stderr, flush=True)
        os._exit(cli.EXIT_ERROR)  # from a thread: the main one may be blocked in a collective
    threading.Thread(target=watch, daemon=True).start()


def explain_error(exc):
    """The one-line message for a lost rank (``cli.run``'s ``translate``): None for any other exception."""
    if isinstance(exc, tf.errors.DeadlineExceededError):
        return LOST_RANK
    if isinstance(exc, (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError)):
        return f"lost the connection to another rank ({type(exc).__name__}); did a rank die?"
    return None
