"""The distillation's embarrassingly parallel steps on a Ray cluster (`edge-dse distill --ray`).

Two steps split into independent pieces: stage 1's bi-encoder vectors (hpd_vectors.label, one
piece a shard of texts) and the teacher's scores of candidate lists (pipeline.teacher_scores, one
piece a chunk of lists). Each step works out on the driver which pieces are missing, sends them
through a map function and commits each result itself, in order (train_common.run_pieces).
RayMap is that map function on a cluster: a pool of actors, one per cluster CPU, each holding the
step's model and computing one piece at a time. The output folders are the local run's, written
the same way (atomically, in order), so a run on Ray resumes locally and the other way round, and
a killed driver loses only the pieces in flight.

Models travel by path: each actor loads the model folder at the same absolute path the driver
names, so the folder (work/models/..., the teacher under --work) must be on a filesystem every
node shares, like `edge-dse index --ray`'s default. The pieces' texts travel with the pieces.
Workers need edge_dse and its run-time dependencies (not the train extra: the steps run ONNX).

Training-time code, imported only when --ray is given: `import edge_dse` never loads it or Ray.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator

from ..cluster import connect, failure_reason, import_ray
from ..errors import EdgeDSEError

PURPOSE = "edge-dse distill --ray"  # how errors name what needed Ray


class _Worker:
    """One actor: a step's callable, whose model loads on the first piece and stays loaded."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def run(self, piece):
        return self.fn(piece)


def _one_cpu(fn: Callable) -> Callable:
    """The callable as a one-CPU actor runs it: a step callable with a `threads` field
    (OnnxLabeller, TeacherScorer) gets one thread, as each actor holds one CPU of the cluster."""
    if dataclasses.is_dataclass(fn) and any(f.name == "threads" for f in dataclasses.fields(fn)):
        return dataclasses.replace(fn, threads=1)
    return fn


class RayMap:
    """map(fn, pieces) on a Ray cluster, results in the pieces' order (a train_common.Mapper).

    Used as a context manager around the steps: it connects on the first piece (a run whose
    steps are all cached never reaches the cluster) and disconnects only a session it started.
    Each call starts one actor per cluster CPU, gives each a copy of fn (its model loads once per
    actor), and keeps every actor busy with one piece; results are handed back in order, so the
    caller commits piece k only after pieces 0..k-1. Ray restarts a dead actor once and retries its piece; a
    piece that still fails stops the step with an EdgeDSEError (what was committed stays).

    address: "auto" (RAY_ADDRESS, else the cluster this machine joined, else a new local one), or
    any address ray.init takes ("HOST:6379", "ray://HOST:10001").
    """

    def __init__(self, address: str = "auto") -> None:
        self.address = address
        self._ray = None
        self._started = False
        self._cpus = 0

    @property
    def workers(self) -> int:
        """The actors each call starts: the cluster's CPUs (0 before the first piece of work)."""
        return self._cpus

    def __enter__(self) -> "RayMap":
        import_ray(PURPOSE)  # a missing extra fails now, not hours into a run
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False
        self._ray = None

    def __call__(self, fn: Callable, pieces: Iterable) -> Iterator:
        pieces = iter(pieces)
        try:  # nothing to do: no cluster, no actors
            first = next(pieces)
        except StopIteration:
            return
        if self._ray is None:
            self._ray, self._started, self._cpus = connect(self.address, PURPOSE)
        ray = self._ray
        size = self._cpus
        cls = ray.remote(num_cpus=1, max_restarts=1, max_task_retries=1)(_Worker)
        # fn pickles as its settings (a model's path, not the model): small enough to pass to
        # each actor as is, which also lets Ray restart an actor without an object to keep alive.
        fn = _one_cpu(fn)
        actors = [cls.remote(fn) for _ in range(size)]
        idle = list(actors)
        in_flight: dict = {}  # ObjectRef -> (piece number, actor)
        finished: dict = {}  # piece number -> result, waiting for the pieces before it
        sent = handed = 0
        queue = [first]
        try:
            while True:
                # Hand back first: what is left in `finished` then waits for a piece in flight,
                # so nothing in flight means nothing left but unsent pieces.
                while handed in finished:
                    yield finished.pop(handed)
                    handed += 1
                # Results waiting for a slow earlier piece are held in memory: stop sending
                # when that many would exceed one per actor, twice over.
                while idle and len(finished) < 2 * size:
                    if not queue:
                        try:
                            queue.append(next(pieces))
                        except StopIteration:
                            break
                    actor = idle.pop()
                    in_flight[actor.run.remote(queue.pop())] = (sent, actor)
                    sent += 1
                if not in_flight:
                    return
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    number, actor = in_flight.pop(ref)
                    try:
                        finished[number] = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        raise EdgeDSEError(f"piece {number} of a distill step {failure_reason(exc)}; the pieces before "
                                           "it are saved: run again to resume") from None
                    idle.append(actor)
        finally:
            for ref in in_flight:  # abandoned (the caller stopped reading): not worth a retry
                ray.cancel(ref)
            for actor in actors:  # done, failed or abandoned: free the CPUs
                ray.kill(actor)

