"""The in-process Ray a run starts: actors that take every core must still get their documents (a run with as
many workers as cores, in a fresh process: tests/jobs/test_console.py)."""

import pytest

from pipeline.run import local_cpus


@pytest.mark.parametrize("actors, cores, cpus", [(1, 2, 2), (2, 2, 3), (2.5, 2, 4), (0, 8, 8), (8, 8, 9)])
def test_the_local_ray_counts_a_cpu_more_than_the_actors_hold(actors, cores, cpus):
    assert local_cpus(actors, cores) == cpus
