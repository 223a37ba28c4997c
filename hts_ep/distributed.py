"""Running sweep groups on a Dask cluster.

Each group of a sweep is one task. Workers write their records into the
store themselves (a shared file system: the repository folder, or
HTS_EP_RESULTS on a cluster), checkpointing every epoch; a task lost with
its worker is retried by Dask elsewhere and resumes from that checkpoint.
Records are addressed by key and written atomically, so a retried group
leaves every record exactly once.
"""
# How often Dask may retry a group whose worker died (it resumes each time).
RETRIES = 3


class SchedulerError(RuntimeError):
    """The Dask scheduler could not be reached."""


def connect(workers=None, scheduler=None, connect_timeout=10):
    """A Client to `scheduler`, or to a new local cluster of `workers` processes."""
    from distributed import Client, LocalCluster
    if scheduler:
        try:
            return Client(scheduler, timeout=connect_timeout), None
        except (OSError, TimeoutError, ValueError) as error:     # ValueError: not an address at all
            raise SchedulerError(f"no Dask scheduler answered at {scheduler} within {connect_timeout} s "
                                 f"({type(error).__name__}: {error})") from None
    # One thread per worker process: torch's own threads do the parallel work.
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster), cluster


def run_groups(run_group, groups, profile, args, workers=None, scheduler=None, bar=None, connect_timeout=10):
    """Run every group as one task, `run_group(group, profile, **args)` (experiments.run_group:
    passed in, so that this module does not import experiments back); return the keys trained. A group that another
    sweep is training waits on a worker for its locks (see Store.lock) and then trains
    only what that sweep left missing."""
    from distributed import as_completed
    trained = []
    client, cluster = connect(workers, scheduler, connect_timeout)
    try:
        args = dict(args, threads=args.get("threads") or 1)
        futures = {client.submit(run_group, g, profile, retries=RETRIES, pure=False, **args): g
                   for g in groups}
        for future in as_completed(futures):
            trained += future.result()          # re-raises a group's error here
            if bar is not None:
                bar.update(sum(c.epochs for c in futures[future]))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return trained
